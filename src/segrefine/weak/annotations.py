"""Cheap labels: boxes read from a file or simulated from masks, checked like any input.

Boxes file (JSON), one entry per image id, each box in pixels of the image::

    {"horse018": [{"class": "horse", "x": 12, "y": 30, "w": 180, "h": 150}], ...}

``x, y`` is the top-left corner. A box of an unknown class, outside its image, of
non-positive size or with a missing field is an input error naming the file and the entry;
an image without an entry has no boxes (all background).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.io import VOID
from ..errors import InputError

MAX_BOXES = 256  # per image: each costs one GrabCut
MIN_COMPONENT = 0.001  # simulated boxes skip components under this share of the image


@dataclass(frozen=True)
class Box:
    """One box: the class id it marks and its pixel extent (top-left x, y; width, height)."""

    label: int
    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


def read_boxes(path: str | Path, class_names: tuple[str, ...],
               shapes: dict[str, tuple[int, int]]) -> dict[str, list[Box]]:  # fmt: skip
    """The boxes of ``path`` for the images ``shapes`` (id -> (H, W)), validated."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("no such boxes file", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise InputError(f"boxes file is not valid JSON ({type(err).__name__})", path) from None
    if not isinstance(raw, dict):
        raise InputError("boxes file must map image ids to lists of boxes", path)
    unknown = sorted(set(raw) - set(shapes))
    if unknown:
        raise InputError(f"boxes for an image the split does not have: {unknown[0]!r}", path)
    out = {}
    for image_id, boxes in raw.items():
        if not isinstance(boxes, list) or len(boxes) > MAX_BOXES:
            raise InputError(f"{image_id}: boxes must be a list of at most {MAX_BOXES}", path)
        out[image_id] = [_box(b, class_names, shapes[image_id], f"{image_id}[{k}]", path)
                         for k, b in enumerate(boxes)]  # fmt: skip
    return out


def _box(entry, class_names, shape, where: str, path: Path) -> Box:
    if not isinstance(entry, dict) or not {"class", "x", "y", "w", "h"} <= entry.keys():
        raise InputError(f"{where}: a box needs class, x, y, w and h", path)
    name = entry["class"]
    if name not in class_names or name == "background":
        raise InputError(f"{where}: unknown class {name!r} (classes: "
                         f"{', '.join(c for c in class_names if c != 'background')})", path)
    values = [entry[k] for k in ("x", "y", "w", "h")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):  # fmt: skip
        raise InputError(f"{where}: x, y, w and h must be numbers", path)
    x, y, w, h = (round(v) for v in values)
    height, width = shape
    if w <= 0 or h <= 0:
        raise InputError(f"{where}: box size {w}x{h} is not positive", path)
    if x < 0 or y < 0 or x + w > width or y + h > height:
        raise InputError(f"{where}: box ({x}, {y}, {w}, {h}) is outside the {width}x{height} "
                         "image", path)  # fmt: skip
    return Box(class_names.index(name), x, y, w, h)


def boxes_from_mask(mask: np.ndarray) -> list[Box]:
    """Simulated boxes: one per connected component (8-connectivity) of each class except
    background (0) and void, components under :data:`MIN_COMPONENT` of the image skipped."""
    boxes = []
    for label in np.unique(mask):
        if label in (0, VOID):
            continue
        comp, n = ndimage.label(mask == label, structure=np.ones((3, 3), bool))
        for k, (rows, cols) in enumerate(ndimage.find_objects(comp), start=1):
            if (comp[rows, cols] == k).sum() < MIN_COMPONENT * mask.size:
                continue
            boxes.append(Box(int(label), cols.start, rows.start, cols.stop - cols.start,
                             rows.stop - rows.start))  # fmt: skip
    return boxes


def boxes_to_json(boxes: dict[str, list[Box]], class_names: tuple[str, ...]) -> dict:
    """The boxes file's form of ``boxes`` (what :func:`read_boxes` reads back)."""
    return {image_id: [{"class": class_names[b.label], "x": b.x, "y": b.y, "w": b.w, "h": b.h}
                       for b in bs] for image_id, bs in boxes.items()}  # fmt: skip


def read_tags(path: str | Path, class_names: tuple[str, ...],
              ids: list[str]) -> dict[str, set[int]]:  # fmt: skip
    """Tags file: one line per image, ``<image id> <class> [<class> ...]`` (spaces or commas;
    ``#`` starts a comment). Returns image id -> class ids; an image without a line has none."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise InputError("no such tags file", path) from None
    except UnicodeDecodeError:
        raise InputError("tags file is not text", path) from None
    known, out = set(ids), {}
    for n, line in enumerate(lines, start=1):
        words = line.split("#")[0].replace(",", " ").split()
        if not words:
            continue
        image_id, names = words[0], words[1:]
        if image_id not in known:
            raise InputError(f"line {n}: no image {image_id!r} in the split", path)
        bad = [c for c in names if c not in class_names or c == "background"]
        if bad:
            raise InputError(f"line {n}: unknown class {bad[0]!r}", path)
        out[image_id] = {class_names.index(c) for c in names}
    return out


def tags_from_mask(mask: np.ndarray) -> set[int]:
    """Simulated tags: the classes (not background or void) covering at least
    :data:`MIN_COMPONENT` of the image."""
    ids, counts = np.unique(mask, return_counts=True)
    return {int(i) for i, c in zip(ids, counts, strict=True)
            if i not in (0, VOID) and c >= MIN_COMPONENT * mask.size}  # fmt: skip
