"""Segment, then refine: the one path every face takes (``segrefine refine``, the web app, the
benchmark and the demo).

>>> results = segment_and_refine([image], segmenter, refiner)     # doctest: +SKIP
>>> results[0].probs, results[0].refined.labels, results[0].refined.uncertainty

The coarse input is a segmenter's prediction, or probability maps / label masks from any other
model (``probs=`` / ``labels=``). Each image keeps its own size: the segmenter's probabilities
and the refinement are returned at the image's resolution.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.coarse import Coarse
from .diffusion.refiner import Refinement, Refiner
from .errors import InputError
from .runs import check_same_classes
from .segmenting.segmenter import Segmenter


@dataclass
class Segmentation:
    """One image through the pipeline: the coarse probabilities (C, H, W) or, for a hard
    mask given as input, None; the coarse labels (H, W); the refinement when refined."""

    probs: np.ndarray | None
    labels: np.ndarray
    refined: Refinement | None = None


def _coarse(given) -> Segmentation:
    """A coarse input (an array, or a :class:`~segrefine.data.coarse.Coarse` as read from a
    file) as the pipeline's first stage."""
    if isinstance(given, Coarse):
        return Segmentation(given.probs, given.top_labels())
    given = np.asarray(given)
    if given.ndim == 3:
        return Segmentation(given, given.argmax(0).astype(np.uint8))
    return Segmentation(None, given)


def check_pair(segmenter: Segmenter, refiner: Refiner, where: str | Path | None = None) -> None:
    """A refiner reads a segmenter's probabilities channel by channel: refuse a pair whose
    classes differ (in name or order) before any work is done. A class-agnostic refiner
    takes any classes (one against the rest)."""
    if getattr(getattr(refiner, "spec", None), "class_agnostic", False):
        return
    check_same_classes(("the segmenter", segmenter.class_names),
                       ("the refiner", refiner.class_names), where)  # fmt: skip


def segment_and_refine(
    images: Sequence[np.ndarray],
    segmenter: Segmenter | None = None,
    refiner: Refiner | None = None,
    *,
    probs: Sequence[np.ndarray] | None = None,
    labels: Sequence[np.ndarray] | None = None,
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    flip: bool | None = None,
    native: bool | None = None,
    input_size: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    timings: dict[str, float] | None = None,
) -> list[Segmentation]:
    """Coarse masks for RGB uint8 ``images`` (H, W, 3), refined when a ``refiner`` is given.

    The coarse input is exactly one of: ``segmenter`` (its probabilities at each image's
    size), ``probs`` (C, H, W maps from any model, or coarse inputs as
    :func:`~segrefine.data.coarse.read_coarse` reads files) or ``labels`` (hard masks, read as
    :mod:`segrefine.data.coarse` reads arrays and softened by
    :func:`~segrefine.diffusion.onehot.probs_from_labels`). Refinement settings default to
    the refiner run's; ``seed`` makes the result reproducible (batch ``k`` uses
    ``seed + k * batch_size``). ``input_size`` is the short side the coarse input was
    predicted at (a segmenter's own is known; see :meth:`Refiner.refine_batch`). Seconds
    spent per stage are added to ``timings`` (``segment_s``, ``refine_s``) when a dict is
    given.
    """
    if sum(x is not None for x in (segmenter, probs, labels)) != 1:
        raise InputError("give exactly one coarse input: a segmenter, probability maps or "
                         "label masks")  # fmt: skip
    given = probs if probs is not None else labels
    if given is not None and len(given) != len(images):
        raise InputError(f"{len(images)} images but {len(given)} coarse masks")
    if refiner is not None:
        if segmenter is not None:
            check_pair(segmenter, refiner)
        refiner.settings(steps, strength, samples, flip, native)  # bad ones fail now
    clock = timings if timings is not None else {}
    if segmenter is not None:
        t0 = time.perf_counter()
        probs = segmenter.predict_batch(images, batch_size=batch_size)
        input_size = segmenter.size
        clock["segment_s"] = clock.get("segment_s", 0.0) + time.perf_counter() - t0
    out = [_coarse(x) for x in (probs if probs is not None else labels)]
    if refiner is not None:
        t0 = time.perf_counter()
        refined = refiner.refine_batch(images, probs, labels, steps, strength, samples, seed,
                                       batch_size=batch_size, flip=flip, native=native,
                                       input_size=input_size)  # fmt: skip
        clock["refine_s"] = clock.get("refine_s", 0.0) + time.perf_counter() - t0
        for result, r in zip(out, refined, strict=True):
            result.refined = r
    return out
