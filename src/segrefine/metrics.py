"""Segmentation metrics on integer label maps.

Every function takes ``pred`` and ``target`` label arrays of the same shape (H x W for the
per-image scores) whose values are class ids ``0 .. num_classes - 1``. Pixels where ``target``
equals ``ignore_index`` (255 by default, ``None`` for no void label) are *void*: they count
neither as truth nor as prediction, whatever ``pred`` holds there. Any other label outside
``0 .. num_classes - 1``, in ``pred`` or in ``target``, raises :class:`ValueError`.

Two families of scores are provided:

* dataset scores from a confusion matrix accumulated over all pixels of all images
  (:func:`confusion_matrix`, :func:`iou_from_confusion`: per-class IoU, mIoU, pixel accuracy);
* per-image scores averaged over the *scored classes* present in the image
  (:func:`image_iou`, :func:`boundary_iou`, :func:`boundary_fscore`), which
  :class:`SegmentationScores` averages over images.

Per-image policies, shared by the three per-image scores:

* **scored classes** -- by default :func:`scored_classes`: only the object class ``1`` in a binary
  task, every class otherwise;
* **class averaging** -- a scored class takes part in an image's mean only if it is present in the
  truth or in the prediction of that image (after void pixels are removed);
* **empty policy** -- if no scored class is present in either, the segmenter correctly predicted
  nothing and the image scores 1.0; if the truth has none but the prediction has some, every
  present class scores 0 and so does the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "SegmentationScores",
    "boundary_fscore",
    "boundary_iou",
    "confusion_matrix",
    "format_table",
    "image_iou",
    "iou_from_confusion",
    "scored_classes",
]

# 4-connectivity cross: a contour pixel is a mask pixel with a 4-neighbour outside the mask.
_CROSS = ndimage.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------- helpers


def scored_classes(num_classes: int) -> list[int]:
    """Classes that per-image scores average over by default.

    Parameters
    ----------
    num_classes : int
        Number of classes of the task, background included.

    Returns
    -------
    list of int
        ``[1]`` for a binary task (``num_classes == 2``): class 0 is background and only the
        object is scored, as in the paper. ``list(range(num_classes))`` otherwise.

    Raises
    ------
    ValueError
        If ``num_classes < 1``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes == 2:
        return [1]
    return list(range(num_classes))


def _resolve_classes(num_classes: int, classes: Sequence[int] | None) -> list[int]:
    """Default to :func:`scored_classes`, and check explicit class ids are in range."""
    if classes is None:
        return scored_classes(num_classes)
    resolved = [int(c) for c in classes]
    if not resolved:
        raise ValueError("classes must name at least one class")
    bad = [c for c in resolved if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} out of range for num_classes={num_classes}")
    return resolved


def _prepare(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None,
    *,
    image: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a (pred, target) pair and return int64 copies plus the non-void mask.

    ``image=True`` additionally requires 2-D arrays (the boundary scores need a pixel grid).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred_arr = np.asarray(pred)
    target_arr = np.asarray(target)
    if pred_arr.shape != target_arr.shape:
        raise ValueError(
            f"pred shape {pred_arr.shape} does not match target shape {target_arr.shape}"
        )
    if image and pred_arr.ndim != 2:
        raise ValueError(f"expected H x W label maps, got shape {pred_arr.shape}")
    for name, arr in (("pred", pred_arr), ("target", target_arr)):
        # Float labels usually mean logits or probabilities were passed by mistake.
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    pred_arr = pred_arr.astype(np.int64, copy=False)
    target_arr = target_arr.astype(np.int64, copy=False)

    if ignore_index is None:
        valid = np.ones(target_arr.shape, dtype=bool)
    else:
        valid = target_arr != ignore_index
    for name, arr in (("target", target_arr), ("pred", pred_arr)):
        # Only non-void pixels are checked: whatever the prediction holds in void is ignored.
        bad = valid & ((arr < 0) | (arr >= num_classes))
        if bad.any():
            values = np.unique(arr[bad])[:5].tolist()
            raise ValueError(
                f"{name} holds labels {values} outside 0..{num_classes - 1} in non-void pixels"
            )
    return pred_arr, target_arr, valid


def _confusion(
    pred: np.ndarray, target: np.ndarray, valid: np.ndarray, num_classes: int
) -> np.ndarray:
    """Confusion matrix of validated arrays (rows truth, columns prediction)."""
    index = target[valid] * num_classes + pred[valid]
    counts = np.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _present(cm: np.ndarray, classes: Sequence[int]) -> list[int]:
    """Scored classes present in the truth or the prediction of the pixels behind ``cm``."""
    support = cm.sum(axis=0) + cm.sum(axis=1)
    return [c for c in classes if support[c] > 0]


def _mean_or_one(values: list[float]) -> float:
    """Image value from per-class values; no present scored class means a correct 'nothing'."""
    return float(np.mean(values)) if values else 1.0


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


# ----------------------------------------------------------------------------- dataset scores


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


# ----------------------------------------------------------------------------- per-image scores


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


# ----------------------------------------------------------------------------- accumulator


class SegmentationScores:
    """Accumulate segmentation scores over a dataset, one image at a time.

    Parameters
    ----------
    num_classes : int
        Number of classes, background included.
    class_names : sequence of str, optional
        One name per class for :meth:`summary`; default ``class_0, class_1, ...``.
    classes : sequence of int, optional
        Classes the per-image scores average over; default :func:`scored_classes`.
    ignore_index : int or None, default 255
        Void label of the targets.
    dilation_ratio : float, default 0.02
        Passed to :func:`boundary_iou`.
    tolerance_ratio : float, default 0.0075
        Passed to :func:`boundary_fscore`.

    Attributes
    ----------
    per_image : list of dict
        One ``{"image_iou", "boundary_iou", "boundary_f"}`` dict (fractions in [0, 1]) per
        :meth:`update` call, in call order.
    confusion : numpy.ndarray
        The C x C confusion matrix accumulated over all images.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        classes: Sequence[int] | None = None,
        ignore_index: int | None = 255,
        *,
        dilation_ratio: float = 0.02,
        tolerance_ratio: float = 0.0075,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is None:
            class_names = [f"class_{i}" for i in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")
        self.num_classes = num_classes
        self.class_names = [str(n) for n in class_names]
        self.classes = _resolve_classes(num_classes, classes)
        self.ignore_index = ignore_index
        self.dilation_ratio = dilation_ratio
        self.tolerance_ratio = tolerance_ratio
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.per_image: list[dict[str, float]] = []

    def update(self, pred: Any, target: Any) -> dict[str, float]:
        """Add one image and return its scores.

        Parameters
        ----------
        pred, target : array_like of int
            Predicted and true H x W label maps.

        Returns
        -------
        dict
            ``{"image_iou", "boundary_iou", "boundary_f"}`` for this image, as fractions in
            [0, 1] (see :func:`image_iou`, :func:`boundary_iou`, :func:`boundary_fscore`).
        """
        pred_arr, target_arr, valid = _prepare(
            pred, target, self.num_classes, self.ignore_index, image=True
        )
        # One validation serves all three scores; one confusion matrix the IoU and running total.
        cm = _confusion(pred_arr, target_arr, valid, self.num_classes)
        scores = {
            "image_iou": _image_iou(cm, self.classes),
            "boundary_iou": _boundary_iou(
                pred_arr, target_arr, valid, self.classes, self.dilation_ratio
            ),
            "boundary_f": _boundary_f(
                pred_arr, target_arr, valid, self.classes, self.tolerance_ratio
            ),
        }
        self.confusion += cm
        self.per_image.append(scores)
        return dict(scores)

    def summary(self) -> dict[str, Any]:
        """Dataset scores, in percent (0-100), unrounded.

        Returns
        -------
        dict
            ``mean_image_iou``, ``boundary_iou``, ``boundary_f``: means over images of the
            per-image scores. ``miou``: NaN-mean of the per-class IoU of the accumulated
            confusion matrix, over *all* classes (background included) that occur anywhere.
            ``per_class_iou``: class name -> IoU, or None for a class absent from every truth
            and prediction. ``pixel_accuracy``: correct / non-void pixels. ``num_images``: int.
            ``miou`` and ``pixel_accuracy`` are NaN if every pixel seen was void.

        Raises
        ------
        ValueError
            If no image has been added.
        """
        if not self.per_image:
            raise ValueError("no images were added: call update() before summary()")
        iou = iou_from_confusion(self.confusion)
        known = iou[~np.isnan(iou)]
        total = int(self.confusion.sum())

        def mean_of(key: str) -> float:
            return 100.0 * float(np.mean([s[key] for s in self.per_image]))

        return {
            "mean_image_iou": mean_of("image_iou"),
            # Guarded rather than np.nanmean so an all-void dataset gives NaN without a warning.
            "miou": 100.0 * float(known.mean()) if known.size else math.nan,
            "per_class_iou": {
                name: None if np.isnan(v) else 100.0 * float(v)
                for name, v in zip(self.class_names, iou, strict=True)
            },
            "boundary_iou": mean_of("boundary_iou"),
            "boundary_f": mean_of("boundary_f"),
            "pixel_accuracy": (
                100.0 * float(np.trace(self.confusion)) / total if total else math.nan
            ),
            "num_images": len(self.per_image),
        }


_TABLE_ROWS = (
    ("num_images", "images"),
    ("mean_image_iou", "mean image IoU"),
    ("miou", "mIoU"),
    ("boundary_iou", "boundary IoU"),
    ("boundary_f", "boundary F"),
    ("pixel_accuracy", "pixel accuracy"),
)


def _format_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return f"{float(value):.2f}"


def format_table(summary: dict[str, Any]) -> str:
    """Render a :meth:`SegmentationScores.summary` dict as a plain-text table.

    Parameters
    ----------
    summary : dict
        Output of :meth:`SegmentationScores.summary`. Missing keys are skipped.

    Returns
    -------
    str
        Two columns, ``metric`` and ``value`` (percentages with 2 decimals, ``n/a`` for
        undefined values), the dataset metrics first, then one ``IoU <class>`` row per class.
        No trailing newline.
    """
    rows = [(label, _format_value(summary[key])) for key, label in _TABLE_ROWS if key in summary]
    class_rows = [
        (f"IoU {name}", _format_value(value))
        for name, value in summary.get("per_class_iou", {}).items()
    ]
    everything = [("metric", "value"), *rows, *class_rows]
    w_name = max(len(name) for name, _ in everything)
    w_value = max(len(value) for _, value in everything)
    rule = f"{'-' * w_name}-+-{'-' * w_value}"

    def line(name: str, value: str) -> str:
        return f"{name:<{w_name}} | {value:>{w_value}}"

    out = [line("metric", "value"), rule, *(line(n, v) for n, v in rows)]
    if class_rows:
        out += [rule, *(line(n, v) for n, v in class_rows)]
    return "\n".join(out)
