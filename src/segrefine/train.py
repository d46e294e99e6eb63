"""Training a segmenter: one readable loop, resumable, the same code on a CPU, a GPU or several.

Determinism: the model is initialised from ``seed``; the order of images in epoch ``e`` and each
batch's augmentation come from generators seeded with (seed, e, batch), never from global RNG
state. Checkpointing at every epoch end therefore makes ``resume`` land exactly where an
uninterrupted run would.

Several GPUs: run the same command under ``accelerate launch`` or ``torchrun``; Accelerate wraps
the model for data-parallel training, each process takes every ``world``-th image of the epoch's
order, and only the main process validates and writes files. Mixed precision (bf16) is used on
CUDA unless turned off.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import checkpoint
from .data.datasets import LoadedSplit, load_split
from .data.io import VOID
from .data.transforms import AugmentConfig, augment_batch, to_tensor
from .errors import InputError
from .metrics import SegmentationScores
from .segmenter import Segmenter, predict_probs, resolve_device


@dataclass
class TrainConfig:
    """Everything that defines a segmenter training run (saved in the run's config.json)."""

    data: str
    split: str = "train"
    val_split: str | None = "val"
    classes: list[str] | None = None
    binary_per_class: bool = False
    size: int = 128
    model: str = "unet"
    width: int = 16
    depth: int = 4
    epochs: int = 30
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    augment: bool = True
    mixed_precision: bool = True  # bf16 autocast, on CUDA only
    seed: int = 0
    # [k, n]: leave out every n-th training image starting at k (out-of-fold segmenters)
    exclude_fold: list[int] | None = None
    augment_config: dict = field(default_factory=lambda: asdict(AugmentConfig()))


EpochCallback = Callable[[dict], None]


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """Linear warm-up then cosine decay; ``progress`` counts epochs (fractional)."""
    if progress < cfg.warmup_epochs:
        return cfg.lr * (progress + 1e-3) / cfg.warmup_epochs
    t = (progress - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int):
    """This process's batches of image indices for one epoch (same count on every process)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    per_step = batch_size * world
    steps = max(1, n // per_step)  # drop the ragged tail: BatchNorm dislikes tiny batches
    order = order[: steps * per_step].reshape(steps, world, batch_size)
    return [order[s, rank] for s in range(steps)]


def evaluate_model(model: torch.nn.Module, data: LoadedSplit, device, batch_size: int = 16):
    """Score a model on a loaded split; returns the metrics summary (percent)."""
    images = np.stack([it.image for it in data.items])
    probs = predict_probs(model, images, device, batch_size)
    scores = SegmentationScores(data.num_classes, data.class_names)
    for p, item in zip(probs, data.items, strict=True):
        scores.update(p.argmax(0), item.mask)
    return scores.summary()


def _run_config(cfg: TrainConfig, class_names) -> dict:
    return {
        "kind": "segmenter",
        "model": {"name": cfg.model, "width": cfg.width, "depth": cfg.depth},
        "class_names": list(class_names),
        "size": cfg.size,
        "classes": cfg.classes,
        "binary_per_class": cfg.binary_per_class,
        "train": asdict(cfg),
    }


def train_segmenter(
    cfg: TrainConfig | None,
    out: str | Path,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    on_epoch_end: EpochCallback | None = None,
) -> dict:
    """Train (or, with ``resume``, continue) a segmenter into the run folder ``out``.

    With ``resume`` the run's saved settings are used and ``cfg`` may be ``None``. Returns the
    best epoch's record. ``on_epoch_end`` is called with each epoch's record after it is saved.
    """
    from accelerate import Accelerator  # heavy import: only when training

    out = Path(out)
    if resume:
        saved = checkpoint.read_config(out, kind="segmenter")
        cfg = TrainConfig(**saved["train"])
    else:
        if cfg is None:
            raise ValueError("a TrainConfig is needed unless resuming")
        if (out / checkpoint.CONFIG).exists():
            raise InputError("already holds a run; pass --resume to continue it or pick another"
                             " --out", out)
    dev = resolve_device(device)
    accelerator = Accelerator(
        cpu=dev.type == "cpu",
        mixed_precision="bf16" if dev.type == "cuda" and cfg.mixed_precision else "no",
    )
    main = accelerator.is_main_process

    train = load_split(cfg.data, cfg.split, cfg.classes, cfg.binary_per_class, cfg.size)
    val = (load_split(cfg.data, cfg.val_split, cfg.classes, cfg.binary_per_class, cfg.size)
           if cfg.val_split else None)
    if cfg.exclude_fold:
        k, n = cfg.exclude_fold
        train.items = [it for i, it in enumerate(train.items) if i % n != k]
    if len(train.items) < cfg.batch_size * accelerator.num_processes:
        raise InputError(f"split '{cfg.split}' has {len(train.items)} images, fewer than one"
                         f" batch ({cfg.batch_size})", cfg.data)
    run_config = _run_config(cfg, train.class_names)

    torch.manual_seed(cfg.seed)
    model = Segmenter.from_config(run_config, "cpu").model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start_epoch, best, history = 0, None, []
    if resume and (out / checkpoint.LAST).exists():
        meta = checkpoint.load_training_state(out, model, optimizer)
        start_epoch, best, history = meta["epoch"] + 1, meta["best"], meta["history"]
    if main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_config(out, run_config)
        # the log is rebuilt from the checkpoint so that a crash between the two never
        # leaves an epoch logged that the resumed run will train again
        (out / checkpoint.LOG).unlink(missing_ok=True)
        for record in history:
            checkpoint.append_log(out, record)

    # channels-last convolutions are ~20% faster on CPU and the preferred layout on GPU
    model = model.to(memory_format=torch.channels_last)
    model, optimizer = accelerator.prepare(model, optimizer)
    images = torch.from_numpy(np.stack([it.image for it in train.items]))
    masks = torch.from_numpy(np.stack([it.mask for it in train.items]).astype(np.int64))
    aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in cfg.augment_config.items()})

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        batches = _epoch_batches(len(images), cfg.batch_size, cfg.seed, epoch,
                                 accelerator.process_index, accelerator.num_processes)
        model.train()
        losses = []
        # the per-batch bar only on a terminal; logs get the one line per epoch below
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (progress and main and sys.stderr.isatty()), dynamic_ncols=True)
        for step, idx in enumerate(bar):
            lr = learning_rate(cfg, epoch + step / len(batches))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = to_tensor(images[idx].numpy())
            y = masks[idx]
            if cfg.augment:
                rng = np.random.default_rng([cfg.seed, epoch, step, accelerator.process_index])
                x, y = augment_batch(x, y, rng, aug)
            x = x.to(accelerator.device).contiguous(memory_format=torch.channels_last)
            y = y.to(accelerator.device)
            with accelerator.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, ignore_index=VOID)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "train_loss": float(np.mean(losses)),
            "lr": lr,
            "seconds": round(seconds, 3),
            "train_images_per_s": round(len(batches) * cfg.batch_size
                                        * accelerator.num_processes / seconds, 2),
        }
        accelerator.wait_for_everyone()
        if main:
            net = accelerator.unwrap_model(model)
            if val is not None:
                record["val"] = evaluate_model(net, val, accelerator.device)
                score = record["val"]["mean_image_iou"]
            else:
                score = -record["train_loss"]
            is_best = best is None or score > best["score"]
            if is_best:
                best = {"score": score, "epoch": epoch + 1}
                checkpoint.save_tensors(out / checkpoint.WEIGHTS, net.state_dict(),
                                        {"epoch": epoch + 1})
            record["best"] = is_best
            history.append(record)
            checkpoint.save_training_state(
                out, net, optimizer, {"epoch": epoch, "best": best, "history": history}
            )
            checkpoint.append_log(out, record)
            if progress:
                _print_epoch(record)
        accelerator.wait_for_everyone()
        if on_epoch_end is not None:
            on_epoch_end(record)
    return next(r for r in history if r["epoch"] == best["epoch"]) if best else {}


def _print_epoch(record: dict) -> None:
    line = (f"epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
            f"{record['train_images_per_s']:.1f} img/s")
    if "val" in record:
        v = record["val"]
        line += (f"  val IoU/img {v['mean_image_iou']:.2f}  mIoU {v['miou']:.2f}  "
                 f"BIoU {v['boundary_iou']:.2f}")
    tqdm.write(line + ("  *best" if record.get("best") else ""))
