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

from ..checkpoint import check_init_from, init_from
from ..data.datasets import LoadedSplit, load_split
from ..data.io import VOID
from ..data.transforms import AugmentConfig, augment_batch, to_tensor
from ..errors import InputError
from ..evaluate import score_split
from ..models import available_segmenters
from ..runs import (
    RunFolder,
    TrainingData,
    check_settings,
    example_sources,
    make_accelerator,
)
from .segmenter import Segmenter, SegmenterSpec, predict_probs, resolve_device


@dataclass
class TrainConfig(TrainingData):
    """Everything that defines a segmenter training run (saved in the run's config.json)."""

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
    # a trained segmenter run (or zoo:NAME) to start from: tensors of matching shape copied
    init_from: str | None = None
    augment_config: dict = field(default_factory=lambda: asdict(AugmentConfig()))

    def __post_init__(self):
        if self.model not in available_segmenters():
            raise InputError(f"unknown model '{self.model}'; choose from "
                             f"{', '.join(available_segmenters())}")  # fmt: skip
        fold = self.exclude_fold
        check_settings({
            "size (must be in 8..4096)": 8 <= self.size <= 4096,
            "seed (must be in 0..2**32 - 1)": 0 <= self.seed < 2**32,
            "width (must be in 1..512)": 1 <= self.width <= 512,
            "depth (must be in 1..8)": 1 <= self.depth <= 8,
            "epochs (must be positive)": self.epochs > 0,
            "batch size (must be positive)": self.batch_size > 0,
            "lr (must be positive and finite)": 0 < self.lr < math.inf,
            "weight decay (must be 0 or more)": self.weight_decay >= 0,
            "warm-up epochs (must be 0 or more)": self.warmup_epochs >= 0,
            "excluded fold (must be [k, n] with 0 <= k < n)":
                fold is None or (len(fold) == 2 and 0 <= fold[0] < fold[1]),
        }, "segmenter settings")  # fmt: skip

    def spec(self, class_names) -> SegmenterSpec:
        """The run spec a training run with these settings writes as its config.json."""
        return SegmenterSpec(
            class_names=tuple(class_names), size=self.size, classes=self.classes,
            binary_per_class=self.binary_per_class, train=asdict(self),
            model={"name": self.model, "width": self.width, "depth": self.depth},
        )  # fmt: skip


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
    return score_split(data, (p.argmax(0) for p in probs)).summary()


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
    dev = resolve_device(device)
    folder = RunFolder(out, "segmenter")
    if resume:
        cfg = TrainConfig(**folder.saved_train_settings())
    elif cfg is None:
        raise ValueError("a TrainConfig is needed unless resuming")
    else:
        folder.refuse_existing()
    accelerator = make_accelerator(dev, cfg.mixed_precision)
    main = folder.main = accelerator.is_main_process

    train = load_split(cfg.data, cfg.split, cfg.classes, cfg.binary_per_class, cfg.size)
    val = (load_split(cfg.data, cfg.val_split, cfg.classes, cfg.binary_per_class, cfg.size)
           if cfg.val_split else None)  # fmt: skip
    if cfg.exclude_fold:
        k, n = cfg.exclude_fold
        train.items = [it for i, it in enumerate(train.items) if i % n != k]
    if len(train.items) < cfg.batch_size * accelerator.num_processes:
        raise InputError(f"split '{cfg.split}' has {len(train.items)} images, fewer than one"
                         f" batch ({cfg.batch_size})", cfg.data)  # fmt: skip
    spec = cfg.spec(train.class_names)
    if cfg.init_from and not resume:
        check_init_from(cfg.init_from, "segmenter")  # before the run folder is made

    torch.manual_seed(cfg.seed)
    model = Segmenter.from_spec(spec, "cpu").model.train()
    started = init_from(model, cfg.init_from, "segmenter") if cfg.init_from and not resume \
        else None  # fmt: skip
    if started and main and progress:
        print(f"started from {started['run']}: {started['copied']} tensors copied, "
              f"{started['fresh']} fresh")  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # every process has checked the folder before the main one creates the run in it
    accelerator.wait_for_everyone()
    folder.create(spec, example_sources(cfg.data, cfg.val_split) if not resume else ())
    try:  # the training lock taken by create is given back however training ends
        meta = folder.restore(model, optimizer, resume)
        start_epoch = meta["epoch"] + 1 if meta else 0

        # channels-last convolutions are faster on a CPU and the preferred layout on a GPU,
        # except in the narrowest dilated backbones: PyTorch 2.13's CPU backward crashes
        # (segfault) on DeepLabv3+ and PSPNet of width < 8 in that layout (tests/test_train.py)
        layout = torch.channels_last if _channels_last_safe(cfg) else torch.contiguous_format
        model = model.to(memory_format=layout)
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
                x = x.to(accelerator.device).contiguous(memory_format=layout)
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
                folder.keep_if_best(record, score, net, key="epoch")
                folder.save_state(record, net, optimizer, {"epoch": epoch})
                if progress:
                    _print_epoch(record)
            accelerator.wait_for_everyone()
            if on_epoch_end is not None:
                on_epoch_end(record)
        return folder.best_record("epoch")
    finally:
        folder.release()


def _print_epoch(record: dict) -> None:
    line = (f"epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
            f"{record['train_images_per_s']:.1f} img/s")
    if "val" in record:
        v = record["val"]
        line += (f"  val IoU/img {v['mean_image_iou']:.2f}  mIoU {v['miou']:.2f}  "
                 f"BIoU {v['boundary_iou']:.2f}")
    tqdm.write(line + ("  *best" if record.get("best") else ""))


def _channels_last_safe(cfg: TrainConfig) -> bool:
    """Whether training may use the channels-last layout (see where it is chosen)."""
    return cfg.model not in ("deeplabv3plus", "pspnet") or cfg.width >= 8
