"""Calibrating a refiner: one temperature, fitted on held-out images, so that its probabilities
mean what they say.

A network fits its training images, and on images it has not seen its probabilities are too
sure: the Weizmann native refiner's pixels given 0.87-0.93 (0.90 on average) were right 83% of
the time (docs/benchmarks.md). Temperature scaling (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017) divides the network's logits by one number ``T``, chosen to
minimise the negative log-likelihood (NLL) of the truth on held-out images. Here ``T`` applies
only where the refiner changes its input (elsewhere the probabilities are the input's, which
the refiner has no business recalibrating) and at every pass, and it changes no pixel's most
likely class within a pass (the labels of a native refinement can move slightly, because what
the working pass changed is carried to the finer passes with its new size).

>>> fit = calibrate_refiner("runs/refiner", "data/voc", "val", "runs/unet")  # doctest: +SKIP
>>> fit["temperature"], fit["nll_before"], fit["nll_after"]

The fit is stored in the run's ``config.json`` under ``calibration`` (with what it was fitted
on) and applied by every later :meth:`Refiner.load <segrefine.diffusion.refiner.Refiner.load>`.
Fit on images the refiner was not trained on -- a validation split -- and say so wherever
results on that same split are reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from .. import checkpoint
from ..data.datasets import load_split
from ..data.io import VOID
from ..errors import InputError
from ..segmenting.segmenter import Segmenter
from .refiner import Refiner

BOUNDS = (0.25, 4.0)  # temperatures searched: a factor of 4 either way


def refined_nll(refiner: Refiner, images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                seed: int = 0, **coarse) -> tuple[float, int]:  # fmt: skip
    """Mean NLL of the true class under the refined probabilities, and the pixels it averages
    over (every non-void pixel of ``truths``, each at its image's size). ``coarse``: the
    inputs and settings :meth:`Refiner.refine_batch` takes (``probs=`` or ``labels=``, ...)."""
    total, pixels = 0.0, 0
    for r, truth in zip(refiner.refine_batch(images, seed=seed, **coarse), truths, strict=True):
        valid = truth != VOID
        p = np.take_along_axis(r.probs, np.where(valid, truth, 0)[None].astype(np.int64), 0)[0]
        total += float(-np.log(np.clip(p[valid], 1e-8, None)).sum())
        pixels += int(valid.sum())
    if not pixels:
        raise InputError("no non-void pixel to calibrate on")
    return total / pixels, pixels


def fit_temperature(refiner: Refiner, images: Sequence[np.ndarray],
                    truths: Sequence[np.ndarray], seed: int = 0,
                    bounds: tuple[float, float] = BOUNDS, tolerance: float = 0.01,
                    **coarse) -> dict:  # fmt: skip
    """The temperature in ``bounds`` that minimises :func:`refined_nll` (bounded Brent search
    on log T, to within ``tolerance`` of it: about 15 refinements of ``images``). Returns
    ``temperature``, ``nll_before`` (at T = 1), ``nll_after``, ``pixels``, ``images``;
    ``refiner.temperature`` is left as it was."""
    kept = refiner.temperature

    def nll(log_t: float) -> float:
        refiner.temperature = math.exp(log_t)
        return refined_nll(refiner, images, truths, seed, **coarse)[0]

    try:
        refiner.temperature = 1.0
        before, pixels = refined_nll(refiner, images, truths, seed, **coarse)
        found = minimize_scalar(nll, bounds=tuple(math.log(b) for b in bounds), method="bounded",
                                options={"xatol": tolerance})  # fmt: skip
    finally:
        refiner.temperature = kept
    t, after = (math.exp(found.x), float(found.fun)) if found.fun < before else (1.0, before)
    return {"temperature": round(t, 4), "nll_before": round(before, 6),
            "nll_after": round(after, 6), "pixels": pixels, "images": len(images)}  # fmt: skip


def calibrate_refiner(refiner: str | Path, data: str | Path, split: str,
                      segmenter: str | Path, device: str = "cpu", seed: int = 0,
                      write: bool = True, **settings) -> dict:  # fmt: skip
    """Fit a refiner run's temperature on ``split`` of ``data``, refining ``segmenter``'s
    predictions at each image's own size (as ``segrefine refine`` and ``benchmark --native``
    do) with the run's inference settings (or ``settings``: steps, samples, ...). With
    ``write``, record it in the run's ``config.json`` (``calibration``); returns that record."""
    if write and str(refiner).startswith("zoo:"):
        raise InputError("a zoo model is checked against its manifest: calibrate a copy of it")
    seg = Segmenter.load(segmenter, device)
    ref = Refiner.load(refiner, device)
    val = load_split(data, split, seg.spec.classes, seg.spec.binary_per_class, size=None)
    images = [it.image for it in val.items]
    probs = seg.predict_batch(images)
    fit = fit_temperature(ref, images, [it.mask for it in val.items], seed, probs=probs,
                          input_size=seg.size, **settings)  # fmt: skip
    record = {**fit, "data": str(data), "split": split, "segmenter": str(segmenter),
              "settings": ref.settings(**settings), "seed": seed}  # fmt: skip
    if write:
        config = checkpoint.read_config(refiner, kind="refiner")
        checkpoint.write_config(refiner, {**config, "calibration": record})
    return record
