"""How much an uncertainty map and a probability map can be trusted, pixels pooled over a split.

Three numbers, each over every non-void pixel of every image added:

* **error AUROC** -- the uncertainty as a detector of the prediction's errors: the chance that
  a wrong pixel is more uncertain than a right one, ties counting half (1 = every error is
  more uncertain than every correct pixel, 0.5 = no better than chance);
* **ECE** -- expected calibration error of the top-class probability in 15 equal-width bins
  of [0, 1]: ``sum_b n_b / N * |accuracy_b - mean confidence_b|`` (0 = a pixel given 0.9 is
  right 90% of the time);
* **errors in the top 10%** -- the share of all errors that lie among the 10% most uncertain
  pixels (ties at the cut shared out evenly).

Everything is kept as histograms (the uncertainty at 2^20 levels of its square root, finer
near 0 where most pixels are), so :class:`UncertaintyScores` streams through any number of
full-size images in constant memory; the plain functions build the same histograms for one
set of arrays. Uncertainties that fall in one level tie. Empty policy: with no errors (or no
correct pixels) the AUROC is undefined (None), with no errors so is the share in the top 10%,
and with no pixels every score is None.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

LEVELS = 2**20  # uncertainty levels (of its square root) that the histograms tell apart
ECE_BINS = 15
TOP_SHARE = 0.1


def _levels(uncertainty: np.ndarray) -> np.ndarray:
    u = np.clip(np.asarray(uncertainty, dtype=np.float64), 0.0, 1.0)
    return np.rint(np.sqrt(u) * (LEVELS - 1)).astype(np.int64)


def _valid(pred, target, ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    valid = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    return valid, (pred != target) & valid


def auroc_from_histograms(errors: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of error detection from pixel counts per uncertainty level (least uncertain
    first): P(an error's level > a correct pixel's) + 0.5 P(equal). None if either is empty."""
    n_err, n_ok = float(errors.sum()), float(correct.sum())
    if n_err == 0 or n_ok == 0:
        return None
    ok_below = np.cumsum(correct, dtype=np.float64) - correct  # correct pixels at lower levels
    wins = float(np.dot(errors.astype(np.float64), ok_below + 0.5 * correct))
    return wins / (n_err * n_ok)


def top_share_from_histograms(errors: np.ndarray, correct: np.ndarray,
                              share: float = TOP_SHARE) -> float | None:  # fmt: skip
    """The share of errors among the ``share`` most uncertain pixels, from counts per level;
    the level at the cut contributes in proportion to the part of it that is taken."""
    n_err = float(errors.sum())
    total = errors.astype(np.float64)[::-1] + correct[::-1]  # most uncertain first
    if n_err == 0 or total.sum() == 0:
        return None
    take = share * total.sum()
    before = np.cumsum(total) - total  # pixels at more uncertain levels
    part = np.clip((take - before) / np.maximum(total, 1), 0.0, 1.0)
    return float(np.dot(errors[::-1].astype(np.float64), part)) / n_err


def error_detection_auroc(uncertainty, pred, target,
                          ignore_index: int | None = 255) -> float | None:  # fmt: skip
    """How well ``uncertainty`` (H x W, in [0, 1]) ranks the errors of ``pred`` against
    ``target`` above its correct pixels (module docstring); void pixels are left out."""
    scores = UncertaintyScores(ignore_index=ignore_index)
    scores.update(uncertainty, np.ones(np.shape(uncertainty)), pred, target)
    return auroc_from_histograms(scores.errors, scores.correct)


def errors_in_most_uncertain(uncertainty, pred, target, share: float = TOP_SHARE,
                             ignore_index: int | None = 255) -> float | None:  # fmt: skip
    """The share of ``pred``'s errors among the ``share`` most uncertain non-void pixels."""
    scores = UncertaintyScores(ignore_index=ignore_index)
    scores.update(uncertainty, np.ones(np.shape(uncertainty)), pred, target)
    return top_share_from_histograms(scores.errors, scores.correct, share)


def expected_calibration_error(confidence, pred, target, bins: int = ECE_BINS,
                               ignore_index: int | None = 255) -> float | None:  # fmt: skip
    """ECE of ``confidence`` (the probability given to ``pred``'s class, H x W) in ``bins``
    equal-width bins of [0, 1]; None without non-void pixels."""
    scores = UncertaintyScores(bins=bins, ignore_index=ignore_index)
    scores.update(np.zeros(np.shape(confidence)), confidence, pred, target)
    return scores.ece()


class UncertaintyScores:
    """Accumulate error AUROC, ECE and the errors in the top 10% over images, one at a time.

    >>> s = UncertaintyScores()
    >>> s.update(uncertainty, probs.max(0), probs.argmax(0), truth)   # doctest: +SKIP
    >>> s.summary()    # {"error_auroc": ..., "ece": ..., "errors_in_top10": ...}
    """

    def __init__(self, bins: int = ECE_BINS, ignore_index: int | None = 255) -> None:
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        self.bins = bins
        self.ignore_index = ignore_index
        self.errors = np.zeros(LEVELS, np.int64)  # pixels per uncertainty level
        self.correct = np.zeros(LEVELS, np.int64)
        self.count = np.zeros(bins, np.int64)  # pixels per confidence bin
        self.confidence = np.zeros(bins, np.float64)  # their summed confidence
        self.right = np.zeros(bins, np.int64)  # and how many are right

    def update(self, uncertainty, confidence, pred, target) -> None:
        """Add one image: its uncertainty and top-class probability (H x W, in [0, 1]), its
        predicted labels and the truth (void pixels, ``ignore_index``, are left out)."""
        valid, wrong = _valid(pred, target, self.ignore_index)
        for name, a in (("uncertainty", uncertainty), ("confidence", confidence)):
            if np.shape(a) != valid.shape:
                raise ValueError(f"{name} {np.shape(a)} and target {valid.shape} differ in shape")
        levels, wrong = _levels(uncertainty)[valid], wrong[valid]
        self.errors += np.bincount(levels[wrong], minlength=LEVELS)
        self.correct += np.bincount(levels[~wrong], minlength=LEVELS)
        conf = np.clip(np.asarray(confidence, dtype=np.float64)[valid], 0.0, 1.0)
        b = np.minimum((conf * self.bins).astype(np.int64), self.bins - 1)
        self.count += np.bincount(b, minlength=self.bins)
        self.confidence += np.bincount(b, conf, minlength=self.bins)
        self.right += np.bincount(b[~wrong], minlength=self.bins)

    def ece(self) -> float | None:
        n = self.count.sum()
        return float(np.abs(self.right - self.confidence).sum() / n) if n else None

    def summary(self) -> dict[str, Any]:
        """``error_auroc``, ``ece``, ``errors_in_top10`` (fractions; None where undefined,
        see the module docstring), ``error_rate`` and ``pixels``."""
        n = int(self.count.sum())
        return {
            "error_auroc": auroc_from_histograms(self.errors, self.correct),
            "ece": self.ece(),
            "errors_in_top10": top_share_from_histograms(self.errors, self.correct),
            "error_rate": float(self.errors.sum() / n) if n else None,
            "pixels": n,
        }


def score_probabilities(probs: Iterable[np.ndarray], targets: Iterable[np.ndarray],
                        uncertainty: Iterable[np.ndarray] | None = None,
                        ignore_index: int | None = 255) -> dict[str, Any]:  # fmt: skip
    """:meth:`UncertaintyScores.summary` of probability maps (C x H x W, one per image) against
    their truths (H x W): the labels scored are the maps' argmax, the confidence their top
    probability, the uncertainty one map per image from ``uncertainty`` or, without it, the
    maps' own normalised entropy (entropy / log C)."""
    scores = UncertaintyScores(ignore_index=ignore_index)
    maps = iter(uncertainty) if uncertainty is not None else None
    for p, target in zip(probs, targets, strict=True):
        p = np.asarray(p, dtype=np.float32)
        if maps is not None:
            u = next(maps)
        else:
            u = -(p * np.log(np.clip(p, 1e-8, None))).sum(0) / np.log(max(len(p), 2))
        scores.update(u, p.max(0), p.argmax(0), target)
    return scores.summary()
