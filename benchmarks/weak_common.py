"""What the weak-supervision benchmarks share: scoring a segmenter run on val, scoring a
pseudo-mask root on train, and the figure of pseudo-masks beside the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segrefine.benchmarking.report import colorize, save_grid
from segrefine.data.datasets import load_split
from segrefine.data.io import read_mask
from segrefine.evaluate import score_split
from segrefine.segmenting.segmenter import Segmenter
from segrefine.weak import pseudo_mask_quality

KEYS = ("mean_image_iou", "miou", "boundary_iou")


def val_scores(run: Path, data: Path) -> dict:
    """A segmenter run's kept weights scored on val at the 128-px protocol (percent), the
    same way for every run whatever its trainer logged."""
    seg = Segmenter.load(run, "cpu")
    val = load_split(data, "val", seg.spec.classes, seg.spec.binary_per_class, seg.size)
    probs = seg.predict_batch([it.image for it in val.items], protocol=True)
    summary = score_split(val, [p.argmax(0) for p in probs]).summary()
    return {k: round(float(summary[k]), 2) for k in KEYS}


def root_quality(root: Path, train) -> dict:
    """A pseudo-mask root's training masks scored against the real ones, with its time."""
    report = json.loads((Path(root) / "pseudo.json").read_text())
    masks = [read_mask(Path(root) / "masks" / "train" / f"{it.id}.png") for it in train.items]
    quality = pseudo_mask_quality(masks, [it.mask for it in train.items], train.class_names)
    return {**quality, "seconds_per_image": report["seconds_per_image"]}


def pseudo_figure(path: Path, train, roots: dict[str, Path], count: int = 6) -> Path:
    """``count`` training images spread over the split, one row each: the image, the truth,
    then the pseudo-mask of every root in ``roots`` (column name -> pseudo root)."""
    picks = np.linspace(0, len(train.items) - 1, count).round().astype(int)
    rows, names = [], []
    for i in picks:
        it = train.items[int(i)]
        masks = [read_mask(Path(r) / "masks" / "train" / f"{it.id}.png") for r in roots.values()]
        rows.append([it.image, colorize(it.mask), *(colorize(m) for m in masks)])
        names.append(it.id)
    return save_grid(path, rows, ["image", "truth", *roots], names)
