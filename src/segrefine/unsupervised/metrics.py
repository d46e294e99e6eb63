"""Region metrics for segmentations without class names (BSDS500 style).

Every metric compares a predicted label map with one or more human segmentations of the same
image. Label values are arbitrary segment ids: only which pixels share a label matters. All
functions are pure: arrays in, floats out.

* :func:`covering` - Segmentation Covering of the ground truth by the prediction
  (Arbelaez et al., TPAMI 2011): each ground-truth region is scored by its best IoU with a
  predicted region, weighted by its size. 1 is perfect.
* :func:`probabilistic_rand_index` - the fraction of pixel pairs on which the prediction and
  an annotator agree (same segment / different segments), averaged over annotators. 1 is perfect.
* :func:`variation_of_information` - ``H(P) + H(G) - 2 I(P; G)`` in nats, averaged over
  annotators. 0 is perfect.
* :func:`best_match_miou` - predicted segments are matched one-to-one to an annotator's segments
  by the Hungarian method (maximum total IoU); each ground-truth segment scores its matched IoU
  (0 when left unmatched, e.g. when the prediction has fewer segments); the mean over
  ground-truth segments is averaged over annotators. 1 is perfect.

With several annotators each metric is the plain mean over annotators, as the BSDS500
benchmark code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "best_match_miou",
    "contingency",
    "covering",
    "probabilistic_rand_index",
    "region_scores",
    "variation_of_information",
]


def contingency(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pixel counts ``n[i, j]`` of predicted segment i overlapping ground-truth segment j.

    Segments are numbered in the order of their sorted label values; labels absent from a map
    get no row or column.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {truth.shape} differ in size")
    _, p = np.unique(pred.ravel(), return_inverse=True)
    _, t = np.unique(truth.ravel(), return_inverse=True)
    n_p, n_t = int(p.max(initial=-1)) + 1, int(t.max(initial=-1)) + 1
    counts = np.bincount(p.astype(np.int64) * n_t + t, minlength=n_p * n_t)
    return counts.reshape(n_p, n_t).astype(np.float64)


def _iou_matrix(n: np.ndarray) -> np.ndarray:
    union = n.sum(axis=1, keepdims=True) + n.sum(axis=0, keepdims=True) - n
    return n / np.maximum(union, 1.0)


def _as_list(truths: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(truths, np.ndarray) and truths.ndim == 2:
        return [truths]
    out = list(truths)
    if not out:
        raise ValueError("need at least one ground-truth segmentation")
    return out


def _covering(n: np.ndarray) -> float:
    best = _iou_matrix(n).max(axis=0)
    return float((n.sum(axis=0) * best).sum() / n.sum())


def _rand_index(n: np.ndarray) -> float:
    total = n.sum()
    pairs = total * (total - 1) / 2
    if pairs == 0:
        return 1.0
    same_p = (n.sum(axis=1) ** 2).sum() / 2
    same_t = (n.sum(axis=0) ** 2).sum() / 2
    both = (n**2).sum()
    # Pairs split by exactly one of the two segmentations (the BSDS500 formula).
    return float(1.0 - (same_p + same_t - both) / pairs)


def _voi(n: np.ndarray) -> float:
    p = n / n.sum()
    a, b = p.sum(axis=1), p.sum(axis=0)
    h_a = -(a[a > 0] * np.log(a[a > 0])).sum()
    h_b = -(b[b > 0] * np.log(b[b > 0])).sum()
    nz = p > 0
    mutual = (p[nz] * np.log(p[nz] / np.outer(a, b)[nz])).sum()
    return float(max(h_a + h_b - 2 * mutual, 0.0))


def _best_match(n: np.ndarray) -> float:
    iou = _iou_matrix(n)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return float(iou[rows, cols].sum() / iou.shape[1])


_PER_TABLE = {"covering": _covering, "pri": _rand_index, "voi": _voi, "miou": _best_match}


def _mean_over(metric: str, pred: np.ndarray, truths) -> float:
    return float(np.mean([_PER_TABLE[metric](contingency(pred, t)) for t in _as_list(truths)]))


def covering(pred: np.ndarray, truths: np.ndarray | Sequence[np.ndarray]) -> float:
    """Covering of each ground truth by ``pred``: ``sum_R |R| max_R' IoU(R, R') / N``, averaged.

    Example: ``covering(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 0, 1]]))`` is
    ``(3 * 2/3 + 1 * 1/2) / 4 = 0.625``.
    """
    return _mean_over("covering", pred, truths)


def probabilistic_rand_index(pred: np.ndarray, truths: np.ndarray | Sequence[np.ndarray]) -> float:
    """Rand index of ``pred`` against each ground truth, averaged over annotators."""
    return _mean_over("pri", pred, truths)


def variation_of_information(pred: np.ndarray, truths: np.ndarray | Sequence[np.ndarray]) -> float:
    """Variation of information (nats) between ``pred`` and each ground truth, averaged."""
    return _mean_over("voi", pred, truths)


def best_match_miou(pred: np.ndarray, truths: np.ndarray | Sequence[np.ndarray]) -> float:
    """Mean IoU of ground-truth segments after one-to-one Hungarian matching, averaged.

    Unmatched ground-truth segments score 0, so predicting too few segments is penalised;
    surplus predicted segments cost nothing directly but take pixels from the matched ones.
    """
    return _mean_over("miou", pred, truths)


def region_scores(pred: np.ndarray, truths: np.ndarray | Sequence[np.ndarray]) -> dict[str, float]:
    """All four metrics at once (one contingency table per annotator): ``covering``, ``pri``,
    ``voi``, ``miou``."""
    tables = [contingency(pred, t) for t in _as_list(truths)]
    return {name: float(np.mean([fn(n) for n in tables])) for name, fn in _PER_TABLE.items()}
