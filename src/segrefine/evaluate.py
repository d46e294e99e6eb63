"""Scoring predictions against a dataset split: label maps in memory (:func:`score_split`) or a
folder of predicted label PNGs (:func:`evaluate_folder`).

Predictions are matched to ground truth by id (``<pred>/<id>.png``; ``<class>/<id>.png`` for
per-class binary tasks). A prediction may be at the mask's own resolution, or a square of any
size, in which case the mask goes through the protocol (square crop, nearest resize) first:
both what ``segrefine predict`` writes and what another tool writes at full size are scored
without extra flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .data.datasets import LoadedSplit, load_split, preprocess_mask, read_class_table
from .data.io import read_mask
from .errors import InputError
from .metrics import SegmentationScores, in_percent
from .runs import check_same_classes


def _aligned_mask(mask, pred_shape, pred_path: Path):
    if pred_shape == mask.shape:
        return mask
    if pred_shape[0] == pred_shape[1]:
        return preprocess_mask(mask, pred_shape[0])
    raise InputError(
        f"prediction is {pred_shape[1]}x{pred_shape[0]}; expected the mask's size "
        f"{mask.shape[1]}x{mask.shape[0]} or a square protocol size", pred_path,
    )


def evaluate_folder(
    pred_dir: str | Path,
    data: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    binary_per_class: bool = False,
) -> dict:
    """Score predictions; returns the metrics summary (percent) with ``per_image`` scores and,
    for several tasks, a ``per_task`` breakdown (the paper's per-class table)."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError("no such prediction folder", pred_dir)
    truth = load_split(data, split, classes, binary_per_class, size=None)
    n = truth.num_classes
    table = pred_dir / "classes.txt"  # written by predict and refine beside their outputs
    if table.is_file() and len(truth.tasks) == 1:
        check_same_classes(("the predictions' classes.txt", read_class_table(table)[0]),
                           ("the truth", truth.class_names), table)  # fmt: skip
    overall = SegmentationScores(n, truth.class_names)
    per_task = {t.name: SegmentationScores(n, t.class_names) for t in truth.tasks}
    ids = []
    for item in truth.items:
        path = pred_dir / f"{item.id}.png"
        if not path.is_file():
            raise InputError(f"no prediction for '{item.id}' of split '{split}'", path)
        pred = read_mask(path)
        if pred.max(initial=0) >= n:
            raise InputError(f"prediction has class id {int(pred.max())} but the task has {n}"
                             " classes", path)
        mask = _aligned_mask(item.mask, pred.shape, path)
        overall.update(pred, mask)
        per_task[item.task].update(pred, mask)
        ids.append(item.id)
    summary = overall.summary()
    summary["per_image"] = [{"id": i, **in_percent(s)}
                            for i, s in zip(ids, overall.per_image, strict=True)]  # fmt: skip
    if len(per_task) > 1:
        summary["per_task"] = {name: s.summary() for name, s in per_task.items()}
    return summary


def score_split(data: LoadedSplit, labels: Iterable[np.ndarray]) -> SegmentationScores:
    """Score predicted label maps, one per item of a loaded split and in its order (each at
    the split's size). The one place a split is scored: the trainers' validation, the
    refiner's and the benchmark's."""
    scores = SegmentationScores(data.num_classes, data.class_names)
    for pred, item in zip(labels, data.items, strict=True):
        scores.update(pred, item.mask)
    return scores
