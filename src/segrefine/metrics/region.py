"""Region scores: the pixel confusion matrix, per-class IoU from it (the dataset mIoU) and the
per-image IoU of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .policy import _mean_or_one, _prepare, _present, _resolve_classes


def _confusion(
    pred: np.ndarray, target: np.ndarray, valid: np.ndarray, num_classes: int
) -> np.ndarray:
    """Confusion matrix of validated arrays (rows truth, columns prediction)."""
    index = target[valid] * num_classes + pred[valid]
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def confusion_matrix(
    pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """Pixel confusion matrix.

    Parameters
    ----------
    pred, target : array_like of int
        Predicted and true label maps of the same shape (any number of dimensions).
    num_classes : int
        Number of classes C.
    ignore_index : int or None, default 255
        Void label of ``target``; void pixels are not counted, whatever ``pred`` holds there.

    Returns
    -------
    numpy.ndarray
        C x C int64 matrix; entry ``[t, p]`` counts non-void pixels of true class ``t``
        predicted as ``p``.

    Raises
    ------
    ValueError
        If the shapes differ, the arrays are not integer, or a non-void pixel of ``pred`` or
        ``target`` holds a label outside ``0 .. C - 1``.
    """
    pred_arr, target_arr, valid = _prepare(pred, target, num_classes, ignore_index)
    return _confusion(pred_arr, target_arr, valid, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class intersection over union from a confusion matrix.

    Parameters
    ----------
    cm : numpy.ndarray
        C x C confusion matrix, rows truth and columns prediction.

    Returns
    -------
    numpy.ndarray
        Float64 vector of C IoU values in [0, 1]. A class with zero union (absent from both
        truth and prediction over the whole matrix) is NaN, so that ``np.nanmean`` leaves it
        out of the mIoU instead of counting it as 0 or 1.
    """
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    iou = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


def _image_iou(cm: np.ndarray, classes: Sequence[int]) -> float:
    iou = iou_from_confusion(cm)
    return _mean_or_one([float(iou[c]) for c in _present(cm, classes)])


def image_iou(
    pred: Any,
    target: Any,
    num_classes: int,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = 255,
) -> float:
    """Per-image IoU of the paper.

    Parameters
    ----------
    pred, target : array_like of int
        Predicted and true label maps of the same shape.
    num_classes : int
        Number of classes.
    classes : sequence of int, optional
        Classes to average over; default :func:`scored_classes` (the object only in a binary
        task).
    ignore_index : int or None, default 255
        Void label of ``target``; void pixels are removed from both maps first.

    Returns
    -------
    float
        Mean, over the scored classes present in the truth or the prediction of this image, of
        that class's IoU, in [0, 1]. Empty policy: 1.0 when no scored class is present in
        either map (a correct empty prediction); 0.0 when only the prediction has scored
        classes.
    """
    pred_arr, target_arr, valid = _prepare(pred, target, num_classes, ignore_index)
    cm = _confusion(pred_arr, target_arr, valid, num_classes)
    return _image_iou(cm, _resolve_classes(num_classes, classes))
