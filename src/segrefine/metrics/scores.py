"""Dataset scores: :class:`SegmentationScores`, which accumulates every score image by image,
and :func:`format_table`, which renders its summary as plain text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .boundary import _boundary_f, _boundary_iou
from .mba import boundary_accuracy
from .policy import _prepare, _resolve_classes
from .region import _confusion, _image_iou, iou_from_confusion


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
        One ``{"image_iou", "boundary_iou", "boundary_f", "mba"}`` dict (fractions in [0, 1];
        ``mba`` None for a truth without a boundary) per :meth:`update` call, in call order.
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
            ``{"image_iou", "boundary_iou", "boundary_f", "mba"}`` for this image, as fractions
            in [0, 1] (see :func:`image_iou`, :func:`boundary_iou`, :func:`boundary_fscore`,
            :func:`boundary_accuracy`).
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
            "mba": boundary_accuracy(pred_arr, target_arr, self.ignore_index),
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
            per-image scores. ``mba``: mean boundary accuracy over the images whose truth has
            a boundary (NaN if none has). ``miou``: NaN-mean of the per-class IoU of the accumulated
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

        mba = [s["mba"] for s in self.per_image if s["mba"] is not None]

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
            "mba": 100.0 * float(np.mean(mba)) if mba else math.nan,
            "pixel_accuracy": (
                100.0 * float(np.trace(self.confusion)) / total if total else math.nan
            ),
            "num_images": len(self.per_image),
        }


def in_percent(scores: dict[str, float | None]) -> dict[str, float | None]:
    """One image's scores (fractions, as :meth:`SegmentationScores.update` returns them) in
    percent, the unit of every summary and of every file segrefine writes."""
    return {k: None if v is None else 100.0 * v for k, v in scores.items()}


_TABLE_ROWS = (
    ("num_images", "images"),
    ("mean_image_iou", "per-image IoU"),
    ("miou", "mIoU"),
    ("boundary_iou", "boundary IoU"),
    ("boundary_f", "boundary F"),
    ("mba", "mBA"),
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
