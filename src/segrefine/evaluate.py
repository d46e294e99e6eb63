"""Scoring predictions against the truth: label maps in memory (:func:`score_split`) or a folder
of predictions from any tool (:func:`evaluate_folder`).

Predictions are read as ``refine`` reads coarse masks (:mod:`segrefine.data.coarse`: class ids,
colour, two-valued, soft and RGBA masks, ``.npy`` maps; soft ones at 0.5, i.e. their most
likely class) and matched to the truth by id (``<id>.png``, ``<id>_mask.png``, ...;
``<class>/<id>.png`` for per-class binary tasks). The truth is a dataset split, or a folder of
truth masks by id in the same forms. A prediction may be at the truth's own size, smaller with
the same aspect ratio (upsampled as ``refine`` upsamples a coarse input), or a square of any
size, in which case the truth goes through the protocol (square crop, nearest resize) first:
what ``segrefine predict`` writes and what another tool writes are scored without extra flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .data.coarse import Coarse
from .data.datasets import LoadedSplit, load_split, preprocess_mask, read_class_table
from .data.io import IMAGE_EXTENSIONS, VOID
from .data.mask_folder import SUFFIXES, MaskFolder
from .errors import InputError
from .metrics import SegmentationScores, in_percent
from .runs import check_same_classes


def predicted_labels(pred: Coarse, shape: tuple[int, int], num_classes: int
                     ) -> tuple[np.ndarray, bool]:  # fmt: skip
    """A prediction's class ids for truth of ``shape`` (H, W), and whether the truth must go
    through the square protocol first (a square prediction for a non-square truth)."""
    # imported here: the refiner's training scores its validation with this module
    from .diffusion.onehot import check_size, prior_for_image

    if pred.shape == tuple(shape):
        return pred.top_labels(), False
    h, w = pred.shape
    if h == w and shape[0] != shape[1]:
        return pred.top_labels(), True
    check_size(pred.shape, shape, "prediction", pred.path)
    prior = prior_for_image(shape, num_classes, pred.probs, pred.labels, pred.path)
    return prior.argmax(0).astype(np.uint8), False


def evaluate_folder(
    pred_dir: str | Path,
    data: str | Path | None = None,
    split: str = "val",
    classes: Sequence[str] | None = None,
    binary_per_class: bool = False,
    truth: str | Path | None = None,
    mask_pattern: str | None = None,
) -> dict:
    """Score predictions against ``split`` of the dataset at ``data``, or against the truth
    masks in the folder ``truth``; returns the metrics summary (percent) with ``per_image``
    scores and, for several tasks, a ``per_task`` breakdown (the paper's per-class table).
    ``mask_pattern`` names the prediction files (e.g. ``'{id}_mask.png'``)."""
    if (data is None) == (truth is None):
        raise InputError("give the truth as a dataset root (--data) or a folder of masks "
                         "(--truth), one of them")  # fmt: skip
    if truth is not None:
        items, names = _truth_folder(Path(truth), Path(pred_dir))
        tasks = None
    else:
        split_data = load_split(data, split, classes, binary_per_class, size=None)
        items = [(item.id, item.mask, item.task) for item in split_data.items]
        names, tasks = split_data.class_names, split_data.tasks
    n = len(names)
    preds = MaskFolder(pred_dir, n, mask_pattern, labels_first=True)
    folders = {"": preds}  # per-class tasks' predictions are in <class>/ subfolders
    if preds.names is not None and (tasks is None or len(tasks) == 1):
        hint = "" if classes or len(preds.names) >= n else (
            f"; to score {', '.join(preds.names[1:])} against the rest, pass --classes "
            f"{','.join(preds.names[1:])}")  # fmt: skip
        try:
            check_same_classes(("the predictions' classes.txt", preds.names),
                               ("the truth", names), preds.folder / "classes.txt")  # fmt: skip
        except InputError as err:
            raise InputError(err.message + hint, err.path) from None
    overall = SegmentationScores(n, names)
    per_task = {t.name: SegmentationScores(n, t.class_names) for t in tasks or ()}
    ids = []
    for item_id, mask, task in items:
        pred = _read_prediction(folders, item_id, split if truth is None else None, n)
        labels, protocol = predicted_labels(pred, mask.shape, n)
        if protocol:
            mask = preprocess_mask(mask, labels.shape[0])
        overall.update(labels, mask)
        if task is not None and task in per_task:
            per_task[task].update(labels, mask)
        ids.append(item_id)
    summary = overall.summary()
    summary["per_image"] = [{"id": i, **in_percent(s)}
                            for i, s in zip(ids, overall.per_image, strict=True)]  # fmt: skip
    if len(per_task) > 1:
        summary["per_task"] = {name: s.summary() for name, s in per_task.items()}
    return summary


def _read_prediction(folders: dict[str, MaskFolder], item_id: str, split: str | None,
                     n: int) -> Coarse:  # fmt: skip
    task = item_id.rpartition("/")[0]  # a per-class task's prediction: <class>/<id>.png
    if task not in folders:
        folders[task] = MaskFolder(folders[""].folder / task, n, folders[""].pattern,
                                   labels_first=True)
    folder = folders[task]
    try:
        pred = folder.read(Path(item_id).name)
    except InputError as err:
        if err.message.startswith("no mask for image"):
            where = f" of split '{split}'" if split else ""
            raise InputError(f"no prediction for '{item_id}'{where}", err.path) from None
        raise
    values = set(np.unique(pred.top_labels()).tolist())
    if n > 2 and pred.hard and 255 in values and values <= {0, 255}:
        raise InputError(f"prediction is a 0/255 object mask but the truth has {n} classes: "
                         "pass --classes NAME to score that class against the rest",
                         pred.path)  # fmt: skip
    return pred


def _truth_folder(folder: Path, pred_dir: Path) -> tuple[list, tuple[str, ...]]:
    """(id, mask, None) for every truth mask in ``folder``, and the class names: from a
    ``classes.txt`` there or beside the predictions, else background / object for two-valued
    truth and ``class k`` otherwise."""
    if not folder.is_dir():
        raise InputError("no such truth folder", folder)
    names = None
    for table in (folder / "classes.txt", pred_dir / "classes.txt"):
        if table.is_file():
            names = read_class_table(table)[0]
            break
    reader = MaskFolder(folder, len(names) if names else None)
    exts = (".npy", *IMAGE_EXTENSIONS)
    ids = sorted({_strip(p.name, exts) for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in exts})  # fmt: skip
    if not ids:
        raise InputError("no truth masks found (png, npy, jpg, tif, ...)", folder)
    items = []
    for item_id in ids:
        mask = reader.read(item_id).top_labels()
        items.append((item_id, mask, None))
    if names is None:
        top = max(int(m[m != VOID].max(initial=0)) for _, m, _ in items)
        names = ("background", "object") if top <= 1 else tuple(
            f"class {k}" for k in range(top + 1))
    return items, tuple(names)


def _strip(name: str, exts: tuple[str, ...]) -> str:
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in exts else name
    for suffix in SUFFIXES[1:]:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def score_split(data: LoadedSplit, labels: Iterable[np.ndarray]) -> SegmentationScores:
    """Score predicted label maps, one per item of a loaded split and in its order (each at
    the split's size). The one place a split is scored: the trainers' validation, the
    refiner's and the benchmark's."""
    scores = SegmentationScores(data.num_classes, data.class_names)
    for pred, item in zip(labels, data.items, strict=True):
        scores.update(pred, item.mask)
    return scores
