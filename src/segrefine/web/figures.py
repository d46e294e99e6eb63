"""The page's figures: overlays and heat maps at display size, the instance view, the
full-resolution close-up, and PNG / NPY encoding."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps
from PIL import Image
from scipy import ndimage

from ..benchmarking.report import colorize
from ..benchmarking.report import overlay as blend
from ..data.datasets import resize_image, resize_mask
from ..data.io import VOID
from ..errors import InputError

DISPLAY_SIDE = 512  # figures on the page are at most this many pixels on their longest side


def display_size(shape: tuple[int, int], side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """(h, w) of the on-page figure: the image's own size, shrunk to ``side`` at most."""
    h, w = shape
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def overlay(
    image: np.ndarray, labels: np.ndarray, clear: int | None = 0, alpha: float = 0.55
) -> np.ndarray:
    """:func:`segrefine.benchmarking.report.overlay` at display size (the page's figures)."""
    size = display_size(image.shape[:2])
    return blend(resize_image(image, size), resize_mask(labels.astype(np.uint8), size), clear,
                 alpha)  # fmt: skip


def layer(labels: np.ndarray, clear: int | None = 0) -> np.ndarray:
    """The label colours alone at display size, RGBA: transparent where ``clear`` or void, so
    the page can lay it over the image at any opacity."""
    small = resize_mask(labels.astype(np.uint8), display_size(labels.shape))
    alpha = small != VOID if clear is None else (small != clear) & (small != VOID)
    return np.dstack([colorize(small), np.where(alpha, 255, 0).astype(np.uint8)])


def uncertainty_image(uncertainty: np.ndarray) -> np.ndarray:
    """Uncertainty in [0, 1] (H, W) -> an RGB heat map (magma: black = certain), display size."""
    size = display_size(uncertainty.shape)
    # clipped after shrinking (bilinear keeps values in [0, 1]): no full-size copies but PIL's
    u = Image.fromarray(np.asarray(uncertainty, dtype=np.float32), mode="F")
    u = np.asarray(u.resize((size[1], size[0]), Image.BILINEAR))
    return (colormaps["magma"](np.clip(u, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def _instance_colours(n: int) -> np.ndarray:
    # golden-ratio hues: neighbouring ids get very different colours, deterministically
    hues = (np.arange(n) * 0.6180339887) % 1.0
    hsv = np.stack([hues, np.full(n, 0.75), np.full(n, 0.95)], axis=1)
    from matplotlib.colors import hsv_to_rgb

    return (hsv_to_rgb(hsv) * 255).round().astype(np.uint8)


def instances(
    image: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str],
    min_pixels: int = 1,
) -> tuple[np.ndarray, list[dict]]:
    """The instance view of a semantic label map.

    Every connected component (8-connectivity) of every class except ``background`` is one
    instance, drawn in its own colour over a dimmed image. Returns the figure (display size)
    and one row per class: ``{"class", "instances", "pixels"}``. Components smaller than
    ``min_pixels`` are not counted (and not drawn).
    """
    size = display_size(image.shape[:2])
    canvas = (resize_image(image, size).astype(np.float32) * 0.35).astype(np.uint8)
    rows = []
    next_id = 0
    colours = _instance_colours(4096)
    for c, name in enumerate(class_names):
        if name == "background":
            continue
        comp, n = ndimage.label(labels == c, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        keep = np.flatnonzero(sizes >= min_pixels) + 1
        rows.append({"class": name, "instances": int(len(keep)), "pixels": int(sizes.sum())})
        if len(keep) == 0:
            continue
        small = resize_mask(comp.astype(np.int32, copy=False), size)
        del comp
        for k in keep:
            canvas[small == k] = colours[next_id % len(colours)]
            next_id += 1
    return canvas, rows


def png_bytes(arr: np.ndarray, palette: list[int] | None = None) -> bytes:
    """An array as PNG bytes: RGB (H, W, 3), or labels (H, W) with ``palette`` (P mode)."""
    if palette is None:
        img = Image.fromarray(arr)
    else:
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as the bytes of a ``.npy`` file."""
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@dataclass
class Figures:
    """The result of :func:`segment_and_refine`: files for the page, counts, timings (s), and
    the full-resolution arrays the zoom view crops from (``image``, ``segmenter``,
    ``refined`` label maps)."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (data, mime)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return (sum(len(data) for data, _ in self.files.values())
                + sum(a.nbytes for a in self.arrays.values()))  # fmt: skip


ZOOM_SIDES = (32, 64, 128, 256)  # crop sides the zoom view offers (full-resolution pixels)
ZOOM_PANEL = 256  # each panel is shown this many pixels wide


def zoom_view(figures: Figures, x: int, y: int, side: int) -> bytes:
    """A full-resolution close-up around image pixel (x, y): the image, the segmenter's
    labels and the refined labels over it, side by side, each a ``side``-px crop magnified
    (nearest neighbour, so single pixels stay visible) to :data:`ZOOM_PANEL` px. PNG bytes."""
    image = figures.arrays["image"]
    h, w = image.shape[:2]
    if side not in ZOOM_SIDES:
        raise InputError(f"zoom side must be one of {', '.join(map(str, ZOOM_SIDES))}")
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"zoom point ({x}, {y}) is outside the {w}x{h} image")
    top = int(np.clip(y - side // 2, 0, max(h - side, 0)))
    left = int(np.clip(x - side // 2, 0, max(w - side, 0)))
    win = (slice(top, top + side), slice(left, left + side))
    crop = image[win]
    names = figures.info.get("classes", [])
    clear = names.index("background") if "background" in names else None
    panels = [crop] + [blend(crop, figures.arrays[k][win], clear, 0.45)
                       for k in ("segmenter", "refined") if k in figures.arrays]  # fmt: skip
    size = (ZOOM_PANEL, round(ZOOM_PANEL * crop.shape[0] / crop.shape[1]))
    big = [np.asarray(Image.fromarray(p).resize(size, Image.NEAREST)) for p in panels]
    gap = np.full((size[1], 6, 3), 255, np.uint8)
    strip = np.concatenate([x for p in big for x in (p, gap)][:-1], axis=1)
    return png_bytes(strip)
