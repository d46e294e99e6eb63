"""Temporal consistency of a clip's masks, as Liu et al. (ECCV 2020, "Efficient Semantic Video
Segmentation with Per-frame Inference") measure it: the IoU between the prediction at t + 1
and the prediction at t warped to t + 1 by optical flow, averaged over the clip's pairs.

A mask that follows the scene scores 100 whatever its accuracy; the truth itself scores below
100 wherever the flow is wrong, so the truth's own score is the ceiling a method can reach.
Here the flow is :func:`~segrefine.video.flow.flow_to_previous`'s and, as the flow-based
scores of video work do, only pixels where it is reliable are compared (occluded and
disoccluded pixels have no match in the previous frame). The IoU of a pair is the project's
per-image IoU (:func:`~segrefine.metrics.image_iou`: the object class in a binary task, every
class present in either mask otherwise; 1.0 where neither holds a scored class), the warped
mask playing the truth.
"""

from __future__ import annotations

import numpy as np

from ..data.io import VOID
from ..metrics import image_iou
from .flow import Motion, warp


def pair_consistency(previous: np.ndarray, current: np.ndarray, motion: Motion,
                     num_classes: int) -> float:  # fmt: skip
    """IoU in [0, 1] between label map ``current`` (H, W) and ``previous`` warped to it along
    ``motion`` (:func:`~segrefine.video.flow.flow_to_previous` from the previous frame to the
    current one), over the pixels where the flow is reliable and neither mask is void (so a
    truth with void pixels, e.g. CamVid's, can be scored: the ceiling)."""
    carried = warp(previous.astype(np.uint8), motion.flow, nearest=True)
    keep = motion.reliable & (current != VOID)
    carried = np.where(keep, carried, VOID).astype(np.uint8)
    return float(image_iou(current, carried, num_classes))


class TemporalConsistency:
    """The clip's score, accumulated one frame at a time (nothing but the last frame's labels
    is kept): ``update(labels, motion)`` with each frame's labels and the motion from the
    previous frame to it (None for the first frame); :attr:`score` is the mean over pairs in
    [0, 1] (None before the second frame), :attr:`pairs` each pair's."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.pairs: list[float] = []
        self._last: np.ndarray | None = None

    def update(self, labels: np.ndarray, motion: Motion | None) -> float | None:
        score = None
        if self._last is not None and motion is not None:
            score = pair_consistency(self._last, labels, motion, self.num_classes)
            self.pairs.append(score)
        self._last = labels
        return score

    @property
    def score(self) -> float | None:
        return float(np.mean(self.pairs)) if self.pairs else None
