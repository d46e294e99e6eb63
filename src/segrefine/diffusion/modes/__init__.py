"""Refiner modes, registered by name: everything that differs between the paper's method and ours.

A mode owns its denoising network, its training loss, its sampling loop and its inference
defaults; the trainer and :class:`~segrefine.diffusion.refiner.Refiner` only ever call these.
Read ``paper.py`` and ``default.py`` side by side to see exactly how the two methods differ:

===================  =====================================  ====================================
                     paper                                  default
===================  =====================================  ====================================
diffused channels    image + labels, jointly                labels only (image, probs: condition)
trained on           (image, true mask) pairs               coarse masks: degraded truth and
                                                            out-of-fold segmenter predictions
network predicts     the noise (epsilon), MSE loss          the clean label map, cross-entropy
start at t = s*T     stochastic one-hot, *not* noised       stochastic one-hot, noised to t
sampler              DDPM ancestral (every t) or DDIM       DDIM, a few steps
===================  =====================================  ====================================
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ...errors import InputError


class RefinerMode:
    """The interface every mode implements (one stateless instance per mode)."""

    name: ClassVar[str]
    #: inference settings a new run records: steps (None = the mode's full sampler), strength,
    #: samples
    inference_defaults: ClassVar[dict[str, Any]]
    #: settings validation refines with during training (the run's inference settings otherwise)
    validation_settings: ClassVar[dict[str, Any]] = {}
    #: whether training batches carry coarse probabilities (degradations, out-of-fold
    #: predictions) and the encoder can start from the segmenter's weights
    learns_from_coarse_masks: ClassVar[bool]
    #: the architecture numbers a run records (and a loaded run config must give)
    network_keys: ClassVar[tuple[str, ...]] = ("width", "depth")

    def network_settings(self, cfg) -> dict:
        """The architecture numbers a run config records under ``network``."""
        return {key: getattr(cfg, key) for key in self.network_keys}

    def build_network(self, num_classes: int, network: dict) -> torch.nn.Module:
        raise NotImplementedError

    def loss(self, net, scheduler, cfg, x, y, probs, step: int) -> torch.Tensor:
        """One training step's loss for images ``x``, masks ``y`` and coarse ``probs``."""
        raise NotImplementedError

    def sample(self, net, image, probs, scheduler, strength: float, steps: int | None,
               generator: torch.Generator, samples: int) -> torch.Tensor:
        """``samples`` refined probability maps per image, consecutive: (B * samples, C, H, W).
        ``image`` is normalised as the segmenters see it."""
        raise NotImplementedError

    def denoiser_passes(self, scheduler, strength: float, steps: int | None) -> int:
        """Denoiser evaluations one sample costs."""
        raise NotImplementedError

    def init_from_segmenter(self, net, segmenter_run, segmenter_config: dict) -> int:
        """Start the network from a segmenter's weights where it can; returns tensors copied."""
        return 0


MODES: dict[str, RefinerMode] = {}


def register_mode(cls: type[RefinerMode]) -> type[RefinerMode]:
    """Class decorator: make a mode available by its ``name``."""
    MODES[cls.name] = cls()
    return cls


def get_mode(name: str) -> RefinerMode:
    """The registered mode called ``name``; an unknown name is an input error."""
    try:
        return MODES[name]
    except KeyError:
        raise InputError(
            f"unknown refiner mode '{name}' (use {' or '.join(sorted(MODES))})"
        ) from None


# registration happens on import
from . import default, paper  # noqa: E402, F401

__all__ = ["MODES", "RefinerMode", "get_mode", "register_mode"]
