"""Boundary scores of one image: Boundary IoU (Cheng et al., CVPR 2021) and the boundary
F-measure (DAVIS / BSDS style), both computed per class on a window around the class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .policy import _mean_or_one, _prepare, _resolve_classes

# 4-connectivity cross: a contour pixel is a mask pixel with a 4-neighbour outside the mask.
_CROSS = ndimage.generate_binary_structure(2, 1)


def _diagonal(shape: tuple[int, ...]) -> float:
    return math.hypot(shape[0], shape[1])


def _class_windows(
    pred: np.ndarray, target: np.ndarray, valid: np.ndarray, classes: Sequence[int]
) -> dict[int, tuple[slice, ...]]:
    """Per present class, the bounding box of its prediction and truth pixels grown by 1 pixel.

    The boundary scores run their filters and distance transforms on this window only (a large
    speed-up for small objects). Results are unchanged: outside the box both masks are empty,
    the erosion treats the outside as empty too (``cval=0``), the 1-pixel margin keeps the
    contour test from mistaking the window edge for the image frame, and every contour pixel
    the distance transform needs lies inside the window.
    """
    # One labelling pass per map instead of one per class; void is label 0, i.e. no class.
    n = max(classes) + 1
    boxes_p = ndimage.find_objects(np.where(valid, pred + 1, 0), max_label=n)
    boxes_t = ndimage.find_objects(np.where(valid, target + 1, 0), max_label=n)
    windows = {}
    for c in classes:
        boxes = [b for b in (boxes_p[c], boxes_t[c]) if b is not None]
        if boxes:
            windows[c] = tuple(
                slice(
                    max(0, min(b[axis].start for b in boxes) - 1),
                    min(size, max(b[axis].stop for b in boxes) + 1),
                )
                for axis, size in enumerate(target.shape)
            )
    return windows


def _boundary_region(mask: np.ndarray, d: int) -> np.ndarray:
    """Mask minus its erosion by ``d`` steps of a 3x3 square, zeros outside the image.

    ``d`` erosions by a 3x3 square equal one erosion by a (2d+1) square, which a separable
    minimum filter computes in one pass; ``cval=0`` makes the image frame boundary, like the
    zero padding before ``cv2.erode`` in the reference implementation.
    """
    eroded = ndimage.minimum_filter(mask.view(np.uint8), size=2 * d + 1, mode="constant", cval=0)
    return mask & ~eroded.astype(bool)


def _boundary_iou(
    pred: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    classes: Sequence[int],
    dilation_ratio: float,
) -> float:
    d = max(1, int(round(dilation_ratio * _diagonal(target.shape))))
    values = []
    for c, win in _class_windows(pred, target, valid, classes).items():
        # Void is cut out of both masks *before* extraction, so a void region shapes the two
        # boundaries alike and no boundary pixel lies in void.
        bp = _boundary_region((pred[win] == c) & valid[win], d)
        bg = _boundary_region((target[win] == c) & valid[win], d)
        union = np.count_nonzero(bp | bg)
        # A present class always has a boundary under zero padding; 1.0 is only a safe default.
        values.append(np.count_nonzero(bp & bg) / union if union else 1.0)
    return _mean_or_one(values)


def boundary_iou(
    pred: Any,
    target: Any,
    num_classes: int,
    classes: Sequence[int] | None = None,
    dilation_ratio: float = 0.02,
    ignore_index: int | None = 255,
) -> float:
    """Per-image Boundary IoU (Cheng et al., CVPR 2021).

    For a binary mask M the boundary region is M minus its erosion by d pixels, with
    ``d = max(1, round(dilation_ratio * image diagonal))``, the erosion being a 3x3 square
    applied d times with zeros outside the image (so the image frame counts as boundary, as in
    the reference implementation). A class scores ``|Bp & Bg| / |Bp | Bg|`` where Bp and Bg are
    the boundary regions of its predicted and true masks.

    Parameters
    ----------
    pred, target : array_like of int
        Predicted and true H x W label maps.
    num_classes : int
        Number of classes.
    classes : sequence of int, optional
        Classes to average over; default :func:`scored_classes`.
    dilation_ratio : float, default 0.02
        Boundary width as a fraction of the image diagonal.
    ignore_index : int or None, default 255
        Void label of ``target``. Void pixels are removed from both class masks before the
        boundaries are extracted, so the boundaries never contain void pixels and a void region
        affects prediction and truth alike.

    Returns
    -------
    float
        Mean over the scored classes present in the truth or the prediction, in [0, 1]; same
        empty policy as :func:`image_iou` (1.0 if no scored class is present in either map,
        0.0 if only the prediction has some). A present class whose two boundary regions are
        both empty scores 1.0.
    """
    pred_arr, target_arr, valid = _prepare(pred, target, num_classes, ignore_index, image=True)
    classes = _resolve_classes(num_classes, classes)
    return _boundary_iou(pred_arr, target_arr, valid, classes, dilation_ratio)


def _contour(mask: np.ndarray) -> np.ndarray:
    """1-pixel contour: mask pixels with a 4-neighbour outside the mask.

    ``border_value=1`` treats the outside of the image as mask, so the image frame is not
    contour (a class that fills the image has no contour).
    """
    return mask & ~ndimage.binary_erosion(mask, structure=_CROSS, border_value=1)


def _boundary_f(
    pred: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    classes: Sequence[int],
    tolerance_ratio: float,
) -> float:
    t = max(1, int(round(tolerance_ratio * _diagonal(target.shape))))
    values = []
    for c, win in _class_windows(pred, target, valid, classes).items():
        cp = _contour((pred[win] == c) & valid[win])
        cg = _contour((target[win] == c) & valid[win])
        n_p, n_g = np.count_nonzero(cp), np.count_nonzero(cg)
        if n_p == 0 or n_g == 0:
            # Nothing to match on one side: perfect if both are empty, a total miss otherwise.
            values.append(1.0 if n_p == n_g else 0.0)
            continue
        # The EDT of the complement gives each pixel's distance to the nearest contour pixel.
        precision = np.count_nonzero(ndimage.distance_transform_edt(~cg)[cp] <= t) / n_p
        recall = np.count_nonzero(ndimage.distance_transform_edt(~cp)[cg] <= t) / n_g
        total = precision + recall
        values.append(2 * precision * recall / total if total > 0 else 0.0)
    return _mean_or_one(values)


def boundary_fscore(
    pred: Any,
    target: Any,
    num_classes: int,
    classes: Sequence[int] | None = None,
    tolerance_ratio: float = 0.0075,
    ignore_index: int | None = 255,
) -> float:
    """Per-image boundary F-measure (DAVIS / BSDS style).

    Each class mask is reduced to its 1-pixel contour (mask pixels with a 4-neighbour outside
    the mask; the image frame is *not* contour). With a tolerance of
    ``t = max(1, round(tolerance_ratio * image diagonal))`` pixels, precision is the fraction of
    predicted contour pixels within Euclidean distance t of a true contour pixel, recall the
    fraction of true contour pixels within t of a predicted one, and
    ``F = 2PR / (P + R)`` (0 when P + R == 0).

    Parameters
    ----------
    pred, target : array_like of int
        Predicted and true H x W label maps.
    num_classes : int
        Number of classes.
    classes : sequence of int, optional
        Classes to average over; default :func:`scored_classes`.
    tolerance_ratio : float, default 0.0075
        Matching tolerance as a fraction of the image diagonal.
    ignore_index : int or None, default 255
        Void label of ``target``; void pixels are removed from both class masks before the
        contours are extracted (as in :func:`boundary_iou`).

    Returns
    -------
    float
        Mean over the scored classes present in the truth or the prediction, in [0, 1]; same
        empty policy as :func:`image_iou`. A present class with neither contour (e.g. it fills
        the image in both maps) scores 1.0; with exactly one of the two contours empty, 0.0.
    """
    pred_arr, target_arr, valid = _prepare(pred, target, num_classes, ignore_index, image=True)
    classes = _resolve_classes(num_classes, classes)
    return _boundary_f(pred_arr, target_arr, valid, classes, tolerance_ratio)
