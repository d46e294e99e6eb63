"""Simple-to-complex rounds (STC, Wei et al. 2016): segmenters trained on the pseudo-masks
re-make them.

A segmenter trained on many noisy pseudo-masks learns what they agree on, so its predictions
on images it did not train on are often better than the pseudo-masks themselves. Each round
trains ``folds`` segmenters, each without one fold of the training images, predicts that fold,
and turns the predictions into the next pseudo-masks under the cheap labels' constraints:
classes an image is not tagged with (or, for boxes, pixels outside every box of the class)
become background, and pixels the segmenter is unsure of (top probability under ``sure``)
become ``void``.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from ..data.datasets import open_dataset
from ..data.io import VOID
from ..segmenting.segmenter import Segmenter
from .annotations import Box


def allowed_classes(shape: tuple[int, int], num_classes: int, tags: set[int] | None = None,
                    boxes: list[Box] | None = None) -> np.ndarray:  # fmt: skip
    """(C, H, W) bool: where each class may appear given the cheap labels (background
    everywhere; a tagged class everywhere; a boxed class inside its boxes)."""
    allowed = np.zeros((num_classes, *shape), bool)
    allowed[0] = True
    for c in tags or ():
        allowed[c] = True
    for b in boxes or ():
        allowed[b.label, b.y : b.y + b.h, b.x : b.x + b.w] = True
    return allowed


def constrained_labels(probs: np.ndarray, allowed: np.ndarray, sure: float) -> np.ndarray:
    """A segmenter's probabilities (C, H, W) -> the next pseudo-mask: the most likely allowed
    class, ``void`` where it holds less than ``sure`` of the allowed probability."""
    p = np.where(allowed, probs, 0.0)
    total = p.sum(0)
    labels = p.argmax(0).astype(np.uint8)
    share = p.max(0) / np.clip(total, 1e-8, None)
    labels[(share < sure) | (total <= 0)] = VOID
    return labels


def one_round(root: Path, split: str, items, allowed: dict[str, np.ndarray], train_cfg,
              folds: int = 2, sure: float = 0.7,
              device: str = "cpu") -> list[np.ndarray]:  # fmt: skip
    """Train ``folds`` segmenters on the pseudo root ``root`` (each without one fold of
    ``items``, in the split's order), predict each held-out fold and return the constrained
    next pseudo-masks, in ``items``' order."""
    from ..segmenting.train import train_segmenter

    out: list[np.ndarray | None] = [None] * len(items)
    # the trainer's folds follow the root's own order of the split (its file names)
    position = {s.id: n for n, s in enumerate(open_dataset(root, split).samples)}
    with tempfile.TemporaryDirectory(prefix="segrefine-rounds-") as tmp:
        for k in range(folds):
            cfg = dataclasses.replace(train_cfg, data=str(root), split=split, val_split=None,
                                      exclude_fold=[k, folds], seed=train_cfg.seed + k)  # fmt: skip
            run = Path(tmp) / f"fold{k}"
            train_segmenter(cfg, run, device=device, progress=False)
            seg = Segmenter.load(run, device)
            held = [i for i, it in enumerate(items) if position[it.id] % folds == k]
            probs = seg.predict_batch([items[i].image for i in held])
            for i, p in zip(held, probs, strict=True):
                out[i] = constrained_labels(p, allowed[items[i].id], sure)
    return out
