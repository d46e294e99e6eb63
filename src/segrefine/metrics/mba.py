"""Mean boundary accuracy (mBA), the refinement literature's boundary score (CascadePSP, Cheng
et al. CVPR 2020; used by CRM and SegRefiner on BIG).

For an H x W image, five radii grow from 1 px to ``(H + W) / 300`` px:
``r_i = 1 + int((R - 1) / 5 * i)`` for ``i = 0..4`` with ``R = (H + W) / 300`` (on images
under 600 px a side every radius is 1). For each radius the band is every pixel within ``r_i``
of a boundary of the *true* label map, on both sides, and the score is the pixel accuracy of
the prediction inside that band. mBA averages the five accuracies: it rewards boundaries placed
exactly, and it is measured at the image's own resolution.

CascadePSP draws the band with OpenCV's morphological gradient of a binary mask and an
elliptical kernel; here the band is the pixels whose Euclidean distance to a pixel of another
class is at most ``r`` (one distance transform per class, fast at any size), which is the same
band up to how the disk is discretised, and extends it to n classes: a pixel is in the band
when another class lies within ``r`` of it.

Void (``ignore_index``) pixels of the truth neither form boundaries nor are scored; a
prediction of void counts as wrong. An image whose truth has no boundary (one class only)
has no band and no mBA (``None``); the dataset mean leaves such images out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

NUM_RADII = 5


def mba_radii(height: int, width: int) -> list[int]:
    """The five band radii (pixels) for an image of this size, as CascadePSP computes them."""
    top = (height + width) / 300
    return [1 + int((top - 1) / NUM_RADII * i) for i in range(NUM_RADII)]


def distance_to_other_class(target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per pixel, the Euclidean distance (px) to the nearest valid pixel of another class;
    ``inf`` where there is none (void pixels included)."""
    out = np.full(target.shape, np.inf)
    present = np.unique(target[valid])
    if len(present) < 2:
        return out
    for c in present:
        mine = valid & (target == c)
        other = valid & (target != c)
        # distance_transform_edt measures the distance to the nearest zero: zeros = other class
        out[mine] = ndimage.distance_transform_edt(~other)[mine]
    return out


def boundary_accuracy(
    pred: Any, target: Any, ignore_index: int | None = 255, radii: list[int] | None = None
) -> float | None:
    """One image's mean boundary accuracy, a fraction in [0, 1] (None without a boundary).

    Parameters
    ----------
    pred, target : array_like of int
        Predicted and true H x W label maps.
    ignore_index : int or None, default 255
        Void label of ``target``.
    radii : list of int, optional
        Band radii; default :func:`mba_radii` of the image's size.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape or target.ndim != 2:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must be equal H x W maps")
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    distance = distance_to_other_class(target, valid)
    correct = pred == target
    accuracies = []
    for r in radii or mba_radii(*target.shape):
        band = distance <= r
        n = np.count_nonzero(band)
        if n == 0:
            return None
        accuracies.append(np.count_nonzero(correct & band) / n)
    return float(np.mean(accuracies))
