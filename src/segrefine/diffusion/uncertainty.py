"""What a refinement's probabilities and uncertainty map say, from its samples.

A banded refiner may change only some pixels (near the coarse labels' boundaries, or where the
input is unsure); every other pixel of every sample *is* the input's probabilities, bit for
bit. So each pixel is one of two kinds, and the map says what it knows about each:

* **kept** (no sample changed it): the input's own uncertainty -- the normalised entropy of
  its probabilities, or 0 for a hard mask (its softening by
  :func:`~segrefine.diffusion.onehot.probs_from_labels` is the refiner's, not the user's doubt);
* **refined**: the normalised entropy of the samples' mean -- high where the samples disagree
  or each is unsure.

The refined samples' probabilities are first calibrated by the run's temperature ``T``
(:mod:`segrefine.diffusion.calibrate` fits it on held-out images): ``p ** (1 / T)``,
renormalised, which for the default mode's softmax output is exactly dividing the network's
logits by ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def normalised_entropy(probs: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Entropy over ``dim`` divided by log C: 0 = certain, 1 = every class equally likely."""
    ent = -(probs * probs.clamp_min(1e-8).log()).sum(dim) / math.log(probs.shape[dim])
    return ent.clamp(0, 1)


def kept_pixels(samples: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) bool: where sample k of ``samples`` (B, K, C, H, W) is exactly the input
    ``probs`` (B, C, H, W), i.e. the refiner did not touch that pixel."""
    return (samples == probs.unsqueeze(1).to(samples.dtype)).all(2)


def temper(samples: torch.Tensor, kept: torch.Tensor, temperature: float) -> torch.Tensor:
    """``samples`` with every refined pixel's probabilities calibrated by ``temperature``
    (``p ** (1 / T)`` renormalised; > 1 softens, < 1 sharpens, the argmax is unchanged); kept
    pixels stay the input's."""
    if temperature == 1.0:
        return samples
    calibrated = torch.softmax(samples.clamp_min(1e-12).log() / temperature, dim=2)
    return torch.where(kept.unsqueeze(2), samples, calibrated)


def uncertainty_map(samples: torch.Tensor, kept: torch.Tensor,
                    hard: Sequence[bool] | None = None) -> torch.Tensor:  # fmt: skip
    """(B, H, W): the normalised entropy of the samples' mean; 0 where every sample kept the
    input of a ``hard`` (mask) input, whose own uncertainty is none (module docstring)."""
    u = normalised_entropy(samples.mean(1))
    if hard is not None and any(hard):
        certain = kept.all(1) & torch.tensor(list(hard), device=u.device).view(-1, 1, 1)
        u = u.masked_fill(certain, 0.0)
    return u
