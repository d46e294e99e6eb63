"""Pseudo-masks from boxes: GrabCut inside each box, background outside every box.

GrabCut (OpenCV) fits colour models of the box's inside and its surroundings and cuts the box
along image edges. Boxes are painted largest first, so a smaller box inside a larger one (a
person in front of a car) keeps its class. Where GrabCut keeps less than ``min_fill`` of a box
it has likely lost the object, and the ellipse inscribed in the box stands in. A ring of
``void`` along every pseudo-mask boundary tells the segmenter those pixels are unsure.
The trivial baselines (the box itself, the inscribed ellipse) are here too, for the benchmark.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..data.io import VOID
from .annotations import Box

METHODS = ("grabcut", "box", "ellipse")


def _ellipse(box: Box) -> np.ndarray:
    yy, xx = np.mgrid[: box.h, : box.w]
    return (((yy + 0.5) / box.h - 0.5) ** 2 + ((xx + 0.5) / box.w - 0.5) ** 2) <= 0.25


def _grabcut(image: np.ndarray, box: Box, iterations: int, margin: float) -> np.ndarray:
    """GrabCut's foreground inside ``box`` (h, w), on a crop around it (a fraction ``margin``
    of the box on each side gives the background model its pixels)."""
    import cv2

    H, W = image.shape[:2]
    my, mx = max(int(box.h * margin), 8), max(int(box.w * margin), 8)
    top, left = max(box.y - my, 0), max(box.x - mx, 0)
    bottom, right = min(box.y + box.h + my, H), min(box.x + box.w + mx, W)
    crop = np.ascontiguousarray(image[top:bottom, left:right, ::-1])  # OpenCV wants BGR
    mask = np.zeros(crop.shape[:2], np.uint8)
    rect = (box.x - left, box.y - top, box.w, box.h)
    if box.w < 3 or box.h < 3 or (crop.shape[0] <= box.h and crop.shape[1] <= box.w):
        return _ellipse(box)  # no room for a background model
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means start: the same pseudo-mask on every run
    cv2.grabCut(crop, mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return fg[rect[1] : rect[1] + box.h, rect[0] : rect[0] + box.w]


def pseudo_mask_from_boxes(image: np.ndarray, boxes: list[Box], method: str = "grabcut",
                           iterations: int = 5, min_fill: float = 0.15, void_ring: int = 2,
                           margin: float = 0.25) -> np.ndarray:  # fmt: skip
    """A label map (H, W) from ``boxes`` over ``image``: background (0) outside every box,
    each box's class where ``method`` (``grabcut``, ``box`` or ``ellipse``) puts the object,
    ``void`` in a ring of ``void_ring`` px along the boundaries (0 = none)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    out = np.zeros(image.shape[:2], np.uint8)
    for box in sorted(boxes, key=lambda b: -b.area):
        if method == "box":
            fg = np.ones((box.h, box.w), bool)
        elif method == "ellipse":
            fg = _ellipse(box)
        else:
            fg = _grabcut(image, box, iterations, margin)
            if fg.mean() < min_fill:
                fg = _ellipse(box)
        region = out[box.y : box.y + box.h, box.x : box.x + box.w]
        region[fg] = box.label
    if void_ring > 0:
        edges = np.zeros_like(out, dtype=bool)
        for axis in (0, 1):
            d = np.diff(out, axis=axis) != 0
            lo = [slice(None)] * 2
            lo[axis] = slice(1, None)
            edges[tuple(lo)] |= d
            hi = [slice(None)] * 2
            hi[axis] = slice(None, -1)
            edges[tuple(hi)] |= d
        ring = ndimage.binary_dilation(edges, iterations=max(void_ring - 1, 0)) \
            if void_ring > 1 else edges  # fmt: skip
        out[ring] = VOID
    return out
