"""Out-of-fold segmenter predictions: realistic coarse masks for refiner training.

A segmenter scores its own training images almost perfectly, so its in-fold predictions show a
refiner none of the errors it makes on new images. Instead the training split is cut into
``folds`` parts; for each part a copy of the segmenter (same architecture and settings) is
trained on the other parts and predicts the held-out part. Each held-out image is predicted
in several augmented *views* (flip, zoom, shift, colour jitter), so the refiner sees more
varied errors than one prediction per image would give.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .. import checkpoint
from ..checkpoint import check_init_from
from ..data.datasets import LoadedSplit
from ..data.transforms import AugmentConfig, augment_batch, from_tensor, to_tensor
from ..errors import InputError
from ..runs import check_same_classes
from ..segmenting.segmenter import Segmenter, predict_probs
from ..segmenting.train import TrainConfig, train_segmenter

VIEWS_FILE = "views.safetensors"


def fold_indices(n: int, fold: int, folds: int) -> list[int]:
    """Positions of the images held out in ``fold``: every ``folds``-th image from ``fold``."""
    return [i for i in range(n) if i % folds == fold]


def _complete(run: Path, epochs: int) -> bool:
    log = run / checkpoint.LOG
    return log.exists() and len(log.read_text().splitlines()) >= epochs


def fold_config(segmenter_run: str | Path, data: str, split: str,
                epochs: int | None = None) -> TrainConfig:  # fmt: skip
    """The settings every fold segmenter shares: the segmenter run's own, on ``split`` of
    ``data`` and without validation (a shared run's saved settings are input: checked)."""
    saved = checkpoint.read_config(segmenter_run, kind="segmenter")
    try:
        base = TrainConfig(**saved["train"])
    except (KeyError, TypeError) as err:
        raise InputError(f"run config's training settings are malformed ({err})",
                         Path(segmenter_run) / checkpoint.CONFIG) from err  # fmt: skip
    return dataclasses.replace(base, data=str(data), split=split, val_split=None,
                               epochs=epochs or base.epochs)  # fmt: skip


def check_fold_training(base: TrainConfig, images: int, folds: int, processes: int,
                        segmenter_run: str | Path) -> None:  # fmt: skip
    """An input error, before a refiner's run folder is made, when a fold segmenter could not
    train: a fold leaving fewer images than one batch of the segmenter run's batch size (the
    batch they train with: the refiner's --batch-size is its own), or a run to start from
    that is gone."""
    fewest = images - -(-images // folds)  # the largest fold is held out
    batch = base.batch_size * processes
    if fewest < batch:
        raise InputError(
            f"the out-of-fold segmenters train with the segmenter run's batch size ({batch}), "
            f"but with {folds} folds of these {images} '{base.split}' images each trains on "
            f"as few as {fewest}; use more training images, fewer --oof-folds, or a segmenter "
            f"trained with a smaller --batch-size", segmenter_run,
        )  # fmt: skip
    if base.init_from:
        check_init_from(base.init_from, "segmenter")


def fold_seed(seed: int, fold: int) -> int:
    """Fold ``fold``'s segmenter seed: its own, and in the seed range whatever the run's."""
    return (seed + 1 + fold) % 2**32


def train_fold_segmenters(
    segmenter_run: str | Path,
    data: str,
    split: str,
    folds: int,
    out: Path,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Train (or finish training) one segmenter per fold under ``out/fold<k>``."""
    base = fold_config(segmenter_run, data, split, epochs)
    runs = []
    for k in range(folds):
        run = out / f"fold{k}"
        if not _complete(run, base.epochs):
            cfg = dataclasses.replace(base, exclude_fold=[k, folds], seed=fold_seed(base.seed, k))
            resume = (run / checkpoint.CONFIG).exists()
            if progress:
                print(f"out-of-fold segmenter {k + 1}/{folds}: {base.model}, {base.epochs} epochs")
            train_segmenter(
                None if resume else cfg, run, resume=resume, device=device, progress=progress
            )
        runs.append(run)
    return runs


def predict_views(
    fold_runs: list[Path], train: LoadedSplit, views: int, seed: int, device: str = "auto"
) -> dict[str, torch.Tensor]:
    """Each held-out image predicted by its fold's segmenter in ``views`` augmented views.

    Returns ``images`` uint8 (M, H, W, 3), ``masks`` uint8 (M, H, W) and ``probs`` float16
    (M, C, H, W), with M = len(train.items) * views. View 0 is the unaugmented image.
    """
    folds = len(fold_runs)
    images = np.stack([it.image for it in train.items])
    masks = torch.from_numpy(np.stack([it.mask for it in train.items]).astype(np.int64))
    out_im, out_mask, out_probs = [], [], []
    for k, run in enumerate(fold_runs):
        seg = Segmenter.load(run, device)
        check_same_classes(("the fold segmenter", seg.class_names),
                           ("the data", train.class_names), run)  # fmt: skip
        idx = fold_indices(len(images), k, folds)
        for v in range(views):
            x, y = to_tensor(images[idx]), masks[idx]
            if v > 0:
                x, y = augment_batch(x, y, np.random.default_rng([seed, k, v]), AugmentConfig())
            ims = from_tensor(x)
            out_im.append(ims)
            out_mask.append(y.numpy().astype(np.uint8))
            out_probs.append(predict_probs(seg.model, ims, seg.device).astype(np.float16))
    return {
        "images": torch.from_numpy(np.concatenate(out_im)),
        "masks": torch.from_numpy(np.concatenate(out_mask)),
        "probs": torch.from_numpy(np.concatenate(out_probs)),
    }


def out_of_fold_views(
    segmenter_run: str | Path,
    train: LoadedSplit,
    data: str,
    split: str,
    folds: int,
    views: int,
    out: Path,
    seed: int = 0,
    epochs: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Fold segmenters + their augmented held-out predictions, cached in ``out``."""
    if folds < 2:
        raise InputError(f"out-of-fold predictions need at least 2 folds, got {folds}")
    cached = out / VIEWS_FILE
    if cached.exists():
        tensors, meta = checkpoint.load_tensors(cached)
        if meta.get("folds") == folds and meta.get("views") == views:
            return tensors
    runs = train_fold_segmenters(segmenter_run, data, split, folds, out, epochs, device, progress)
    tensors = predict_views(runs, train, views, seed, device)
    checkpoint.save_tensors(cached, tensors, {"folds": folds, "views": views})
    return tensors
