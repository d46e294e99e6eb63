"""Scribbles drawn in the browser, bounded and rasterised into a label map for
:func:`segrefine.unsupervised.cluster`."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import disk, line

from ..errors import InputError

# bounds on what one request may ask the worker to draw: a stroke of width w over n points
# costs about n * w^2 pixel writes
MAX_STROKES, MAX_POINTS, MAX_STROKE_WIDTH, MAX_LENGTH_FACTOR = 256, 4096, 64.0, 64


def check_scribbles(strokes, shape: tuple[int, int]) -> list[tuple[int, float, np.ndarray]]:
    """The page's scribbles for an image of ``shape`` (H, W) -> ``(label, width, points)``
    per stroke, or :class:`InputError` naming the first bad stroke. Cheap (no drawing), so the
    request checks them and a bad stroke is a 400, never a job that fails later."""
    h, w = shape
    if not isinstance(strokes, list):
        raise InputError("scribbles must be a list of strokes")
    if len(strokes) > MAX_STROKES:
        raise InputError(f"{len(strokes)} scribble strokes; at most {MAX_STROKES}")
    checked = []
    for i, stroke in enumerate(strokes):
        try:
            label = int(stroke["label"])
            width = float(stroke.get("width", 3))
            pts = np.asarray(stroke["points"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise InputError(f"scribble stroke {i} is malformed ({type(err).__name__})") from None
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:  # never regrouped, never empty
            raise InputError(f"scribble stroke {i} needs points as a list of [x, y] pairs")
        if not 0 <= label < 255:
            raise InputError(f"scribble stroke {i} has label {label}; labels are 0..254")
        if not (np.isfinite(width) and 0 < width <= MAX_STROKE_WIDTH):
            raise InputError(f"scribble stroke {i} has width {width:g}; widths are "
                             f"(0, {MAX_STROKE_WIDTH}] px")  # fmt: skip
        if len(pts) > MAX_POINTS or not np.isfinite(pts).all() or \
                (np.abs(pts) > 2 * max(h, w)).any():  # fmt: skip
            raise InputError(f"scribble stroke {i} has over {MAX_POINTS} points or points far "
                             "outside the image")  # fmt: skip
        if np.abs(np.diff(pts, axis=0)).sum() > MAX_LENGTH_FACTOR * (h + w):
            raise InputError(f"scribble stroke {i} is longer than {MAX_LENGTH_FACTOR} times "
                             "the image's width + height")  # fmt: skip
        checked.append((label, width, pts))
    return checked


def rasterize_scribbles(strokes: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Scribbles drawn in the browser -> a label map for :func:`~segrefine.unsupervised.cluster`.

    ``strokes`` is a list of ``{"label": k, "width": w, "points": [[x, y], ...]}`` in image
    pixel coordinates (the page converts from screen coordinates), checked by
    :func:`check_scribbles`; each stroke is drawn as round-capped segments of ``width``
    pixels. Returns ``uint8`` (H, W), 255 where unmarked (the convention of ``segrefine
    cluster --scribbles``). Later strokes paint over earlier ones.
    """
    h, w = shape
    out = np.full((h, w), 255, dtype=np.uint8)
    for label, width, pts in check_scribbles(strokes, shape):
        radius = max(0.5, width / 2)
        pts = np.round(pts).astype(int)
        rows, cols = [], []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] if len(pts) > 1 else pts, strict=False):
            rr, cc = line(y0, x0, y1, x1)
            rows.append(rr)
            cols.append(cc)
        rr, cc = np.concatenate(rows), np.concatenate(cols)
        # draw and thicken inside the stroke's own box (plus its radius), not the whole image
        r = int(np.ceil(radius))
        top, left = max(rr.min() - r, 0), max(cc.min() - r, 0)
        bottom, right = min(rr.max() + r + 1, h), min(cc.max() + r + 1, w)
        if top >= bottom or left >= right:
            continue  # entirely outside the image
        box = np.zeros((bottom - top + 2 * r, right - left + 2 * r), dtype=bool)
        ok = (rr >= top - r) & (rr < bottom + r) & (cc >= left - r) & (cc < right + r)
        box[rr[ok] - top + r, cc[ok] - left + r] = True
        if radius > 1:
            box = ndimage.binary_dilation(box, _disk(radius))
        region = out[top:bottom, left:right]
        region[box[r : r + bottom - top, r : r + right - left]] = label
    return out


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    k = np.zeros((2 * r + 1, 2 * r + 1), dtype=bool)
    k[disk((r, r), radius + 0.01, shape=k.shape)] = True
    return k
