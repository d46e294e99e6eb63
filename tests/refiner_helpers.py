"""Tiny refiner settings shared by the refiner tests."""

from __future__ import annotations

import torch

from segrefine.diffusion import Refiner, RefinerConfig

TINY = {"size": 32, "width": 8, "depth": 2, "features": 8, "head_width": 8, "batch_size": 4}


def tiny_refiner(mode: str = "default", classes=("a", "b", "c"), band: int = 0) -> Refiner:
    """An untrained refiner of the tiny size, seeded."""
    torch.manual_seed(0)
    cfg = RefinerConfig(data="unused", mode=mode, band=band, **TINY)
    return Refiner.from_spec(cfg.spec(classes), "cpu")


def tiny_config(root, **kw) -> RefinerConfig:
    """Training settings for a tiny refiner on the data at ``root``."""
    base = {**TINY, "batch_size": 8, "lr": 3e-3, "warmup": 20}
    return RefinerConfig(data=str(root), **{**base, **kw})
