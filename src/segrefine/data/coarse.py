"""Coarse masks as other tools write them: one reader for every face.

``refine``, :meth:`Refiner.refine` (API), the web app, ``evaluate`` and ``benchmark`` all read a
coarse input here, so one file gives the same probabilities everywhere. What is accepted:

=====================  ====================================================================
form                   read as
=====================  ====================================================================
class-id PNG           class ids (mode L or P; 255 = void)
colour mask (RGB)      class ids through a ``classes.txt`` of ``name R G B`` lines, or the
                       VOC palette
two-valued mask        background (the lower / darker value) and object: 0/255, 0/1, any two
                       grey levels or colours, for a refiner with one object class or a
                       class-agnostic one
soft mask              8- or 16-bit grey with intermediate values (antialiased masks, matting
                       and saliency outputs, JPEG masks): the object's probability, value / max
RGBA cutout            its alpha channel, as the object's probability
H x W float map        ``.npy`` or float TIFF in [0, 1]: the object's probability
C x H x W float map    ``.npy``: class probabilities, summing to 1 over C
=====================  ====================================================================

A reading is a :class:`Coarse`: hard class ids or soft probabilities, and a note saying how
the file was read when that is not plain class ids (the faces show each kind once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .io import VOC_PALETTE, VOID, _open, read_npy

MAX_AGNOSTIC_CLASSES = 32  # a class-agnostic refiner refines one class at a time: bounded
GREY_TOLERANCE = 16  # channel spread below which a JPEG's colour mask is grey (compression)


@dataclass
class Coarse:
    """A coarse input as read: exactly one of ``labels`` (H, W) ``uint8`` class ids (255 =
    void) or ``probs`` (C, H, W) ``float32``; ``kind`` names the form it was read as and
    ``note`` says how, for the forms a user should be told about (None for plain ids)."""

    labels: np.ndarray | None = None
    probs: np.ndarray | None = None
    kind: str = "class ids"
    note: str | None = None
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        given = self.labels if self.labels is not None else self.probs
        return tuple(given.shape[-2:])

    @property
    def hard(self) -> bool:
        return self.labels is not None

    def top_labels(self) -> np.ndarray:
        """Class ids at the input's own size (soft inputs: the most likely class)."""
        if self.labels is not None:
            return self.labels
        return self.probs.argmax(0).astype(np.uint8)

    def is_empty(self) -> bool:
        """Whether the input holds one class only (nothing to refine)."""
        top = self.top_labels()
        return np.unique(top[top != VOID]).size <= 1


def read_coarse(path: str | Path, classes: int | None, colours: np.ndarray | None = None
                ) -> Coarse:  # fmt: skip
    """Read a coarse input file for a refiner with ``classes`` classes (None: a class-agnostic
    refiner, which takes any). ``colours`` (K, 3): the colour of each class in RGB masks (a
    ``classes.txt``'s colours); default the VOC palette. Raises :class:`InputError` naming
    the file, and what to do, for anything it cannot read."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return _located(interpret_array(read_npy(path), classes, soft_ok=True, path=path), path)
    return _located(interpret_image(_open(path), classes, colours, path), path)


def interpret_image(img: Image.Image, classes: int | None, colours: np.ndarray | None = None,
                    path: str | Path | None = None) -> Coarse:  # fmt: skip
    """An opened mask image read as :func:`read_coarse` reads files."""
    alpha = _alpha(img)
    if alpha is not None:  # a cutout: the alpha channel is the mask
        _need_one_object(classes, "an RGBA cutout's alpha channel", path)
        return _soft(
            alpha.astype(np.float32) / 255,
            "alpha",
            "an RGBA cutout: its alpha channel read as the object's probability",
        )
    if img.mode == "F":
        return interpret_array(np.asarray(img, np.float32), classes, soft_ok=True, path=path)
    if img.mode == "1":
        return _from_levels(np.asarray(img, np.uint8), 1, classes, path)
    if img.mode == "P":  # a palette mask's indices are its class ids (PASCAL VOC)
        return _ids(np.asarray(img, np.uint8), classes, path)
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(img).astype(np.int64)
        if arr.min(initial=0) < 0:
            raise InputError("mask has negative values", path)
        top = 65535 if arr.max(initial=0) > 255 else 255
        return _from_levels(arr, top, classes, path)
    if img.mode in ("L", "LA"):
        return _from_levels(np.asarray(img.convert("L")), 255, classes, path)
    rgb = np.asarray(img.convert("RGB")).astype(np.int16)
    spread = rgb.max(-1) - rgb.min(-1)
    lossy = getattr(img, "format", None) == "JPEG"
    if spread.max(initial=0) == 0 or (lossy and spread.max(initial=0) <= GREY_TOLERANCE):
        return _from_levels(rgb.mean(-1).round().astype(np.uint8), 255, classes, path)
    return _from_colours(rgb.astype(np.uint8), classes, colours, path, lossy)


def interpret_array(arr: np.ndarray, classes: int | None, soft_ok: bool = True,
                    path: str | Path | None = None) -> Coarse:  # fmt: skip
    """An array given in memory (or loaded from ``.npy``): (C, H, W) probabilities, an (H, W)
    float map of the object's probability, or (H, W) integer labels read as masks are (class
    ids, two-valued, soft)."""
    arr = np.asarray(arr)
    if arr.size == 0:  # (2, 0, 0) and the like: no size check or reduction can take them
        raise InputError(f"a coarse input of shape {arr.shape} has no pixels", path)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.dtype.kind == "f":
        # a class-agnostic refiner refines each class present in turn: bounded as label
        # masks are; one channel is no choice between classes at all
        top = MAX_AGNOSTIC_CLASSES if classes is None else None
        if len(arr) < 2 or (top is not None and len(arr) > top):
            raise InputError(f"a C x H x W map needs 2 to {top or classes} classes, got "
                             f"{len(arr)} (one object's probability is an H x W map)",
                             path)  # fmt: skip
        return Coarse(probs=arr.astype(np.float32), kind="probability map")
    if arr.ndim != 2:
        raise InputError(f"a coarse input must be an H x W mask or map, or C x H x W "
                         f"probabilities; got shape {arr.shape}", path)  # fmt: skip
    if arr.dtype.kind == "f":
        if not soft_ok:
            raise InputError("a label mask must hold integer class ids, got floats", path)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise InputError("an H x W float map must hold the object's probability in "
                             "[0, 1]", path)  # fmt: skip
        _need_one_object(classes, "an H x W probability map", path)
        return _soft(
            arr.astype(np.float32),
            "probability of the object",
            "an H x W map read as the object's probability",
        )
    if arr.dtype.kind not in "iu":
        raise InputError(f"a coarse input must be numbers, got dtype {arr.dtype}", path)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InputError("mask values must be in 0..65535", path)
    arr = arr.astype(np.int64)
    return _from_levels(arr, 65535 if arr.max(initial=0) > 255 else 255, classes, path)


def _located(coarse: Coarse, path: Path) -> Coarse:
    coarse.path = path
    return coarse


def _alpha(img: Image.Image) -> np.ndarray | None:
    """The alpha channel when the image has one that is used (not fully opaque)."""
    if img.mode in ("RGBA", "LA", "PA"):
        a = np.asarray(img.getchannel("A"))
        if a.min(initial=255) < 255:
            return a
    return None


def _need_one_object(classes: int | None, what: str, path) -> None:
    if classes is not None and classes != 2:
        raise InputError(f"{what} gives one object's probability, but the refiner knows "
                         f"{classes} classes: give class ids (one value per class) or a "
                         "C x H x W map", path)  # fmt: skip


def _soft(p: np.ndarray, kind: str, note: str) -> Coarse:
    return Coarse(probs=np.stack([1 - p, p]).astype(np.float32), kind=kind, note=note)


def _from_levels(arr: np.ndarray, top: int, classes: int | None, path) -> Coarse:
    """A one-channel mask: class ids, a two-valued mask or a soft mask."""
    values = np.unique(arr)
    object_task = classes in (2, None)
    if object_task and len(values) == 2 and values.tolist() != [0, 1]:
        lo, hi = values.tolist()  # any two levels: the lower is the background
        return Coarse(labels=(arr == hi).astype(np.uint8), kind="two-valued",
                      note=f"a two-valued mask: {lo} = background, {hi} = object")  # fmt: skip
    valid = values[values != VOID] if top == 255 else values
    if classes is not None and valid.max(initial=0) < classes:
        return Coarse(labels=arr.astype(np.uint8))
    if classes is None and len(valid) <= MAX_AGNOSTIC_CLASSES and \
            valid.max(initial=0) < MAX_AGNOSTIC_CLASSES:  # fmt: skip
        return Coarse(labels=arr.astype(np.uint8))
    if object_task:
        return _soft(arr.astype(np.float32) / top, "soft",
                     f"a soft mask ({len(values)} grey levels): value / {top} read as the "
                     "object's probability")  # fmt: skip
    raise InputError(f"mask has values up to {int(valid.max())} ({len(values)} distinct) but "
                     f"the refiner knows {classes} classes: a class-id mask holds ids "
                     f"0..{classes - 1} (255 = void); for colour masks add a classes.txt of "
                     "'name R G B' lines beside the masks", path)  # fmt: skip


def _ids(ids: np.ndarray, classes: int | None, path) -> Coarse:
    valid = ids[ids != VOID]
    limit = MAX_AGNOSTIC_CLASSES if classes is None else classes
    if valid.max(initial=0) >= limit:
        raise InputError(f"mask has class id {int(valid.max())} but the refiner knows "
                         f"{limit} classes{_CLASSES_HINT}", path)  # fmt: skip
    return Coarse(labels=ids.astype(np.uint8))


_CLASSES_HINT = (
    "; train or pick a refiner for these classes, or write the masks with ids "
    "0..C-1 (for colour masks, a classes.txt of 'name R G B' lines)"
)


def _from_colours(rgb: np.ndarray, classes: int | None, colours, path, lossy: bool) -> Coarse:
    """An RGB colour mask: a colour table, or two colours as background (the darker) and
    object, or the VOC palette."""
    if lossy:
        raise InputError("a colour mask saved as JPEG cannot be read exactly (compression "
                         "changes the colours): save it as PNG", path)  # fmt: skip
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    found, inverse = np.unique(codes, return_inverse=True)
    if colours is None and classes in (2, None) and len(found) == 2:
        cols = [tuple(int(c) >> s & 255 for s in (16, 8, 0)) for c in found.tolist()]
        dark = int(np.argmin([sum(c) for c in cols]))
        return Coarse(labels=(inverse.reshape(codes.shape) != dark).astype(np.uint8),
                      kind="two colours",
                      note=f"a two-colour mask: {cols[dark]} = background, "
                           f"{cols[1 - dark]} = object")  # fmt: skip
    table = np.asarray(VOC_PALETTE, np.int64).reshape(256, 3) if colours is None \
        else np.asarray(colours, np.int64)  # fmt: skip
    table_codes = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    first: dict[int, int] = {}
    for k, code in enumerate(table_codes.tolist()):  # the first class of a colour wins
        first.setdefault(code, k)
    ids = np.array([first.get(code, -1) for code in found.tolist()])
    if (ids < 0).any():
        r, g, b = (int(found[ids < 0][0]) >> s & 255 for s in (16, 8, 0))
        where, fix = (
            (
                "the VOC palette",
                "add a classes.txt of 'name R G B' lines beside the "
                "masks, one per class in the refiner's order",
            )
            if colours is None
            else ("the classes.txt colours", "add its colour to the classes.txt")
        )
        raise InputError(f"colour mask has colour ({r}, {g}, {b}), which is not in {where}: "
                         f"{fix}", path)  # fmt: skip
    return _ids(ids[inverse].reshape(codes.shape).astype(np.uint8), classes, path)
