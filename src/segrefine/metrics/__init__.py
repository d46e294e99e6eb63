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

The package is split by idea: :mod:`.policy` (input checks and the per-image policies above),
:mod:`.region` (confusion matrix and IoU), :mod:`.boundary` (Boundary IoU and boundary F),
:mod:`.mba` (mean boundary accuracy, with its own void and empty rules), :mod:`.scores`
(the per-dataset accumulator and its text table) and :mod:`.calibration` (how far probabilities
and an uncertainty map can be trusted: error AUROC, ECE, errors among the most uncertain).
Import from :mod:`segrefine.metrics` itself; the submodules are an implementation detail.
"""

from .boundary import boundary_fscore, boundary_iou
from .calibration import (
    UncertaintyScores,
    error_detection_auroc,
    errors_in_most_uncertain,
    expected_calibration_error,
    score_probabilities,
)
from .mba import boundary_accuracy, mba_radii
from .policy import scored_classes
from .region import confusion_matrix, image_iou, iou_from_confusion
from .scores import SegmentationScores, format_table, in_percent

__all__ = [
    "SegmentationScores",
    "UncertaintyScores",
    "boundary_accuracy",
    "boundary_fscore",
    "boundary_iou",
    "error_detection_auroc",
    "errors_in_most_uncertain",
    "expected_calibration_error",
    "confusion_matrix",
    "format_table",
    "image_iou",
    "in_percent",
    "iou_from_confusion",
    "mba_radii",
    "score_probabilities",
    "scored_classes",
]
