"""The weak-supervision benchmarks' figure: training images, their real masks and each
method's pseudo-masks side by side (VOC colours; void in cream)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segrefine.data.io import read_mask
from segrefine.report import colorize, save_grid


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
