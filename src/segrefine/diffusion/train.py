"""Training a refiner: one loop for every mode, resumable, accelerate-ready.

What a step learns is the mode's (``modes/default.py``, ``modes/paper.py``); this loop draws
the batches, steps the optimiser, keeps an exponential moving average of the weights,
validates and keeps the best weights in the run folder (:class:`~segrefine.runs.RunFolder`).

Determinism: every step draws its batch, augmentation, timesteps and noise from generators
seeded with (seed, step), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import checkpoint
from ..checkpoint import check_init_from, init_from
from ..data.datasets import load_split, open_dataset
from ..data.transforms import to_tensor
from ..errors import InputError
from ..evaluate import score_split
from ..runs import (
    RunFolder,
    check_same_classes,
    example_sources,
    make_accelerator,
    native_bf16,
)
from ..segmenting.segmenter import resolve_device
from .batches import BatchSource, validation_priors
from .coarse_views import coarse_priors, coarse_quality, coarse_views, in_fold_note
from .config import RefinerConfig, learning_rate
from .modes import get_mode
from .oof import check_fold_training, fold_config, out_of_fold_views
from .refiner import Refiner


def make_ema(parameters, cfg: RefinerConfig):
    """diffusers' EMAModel over ``parameters`` with the config's decay and warm-up."""
    from diffusers.training_utils import EMAModel

    warmup = {"use_ema_warmup": True, "inv_gamma": 1.0, "power": cfg.ema_power}
    return EMAModel(parameters, decay=cfg.ema_decay, foreach=True,
                    **(warmup if cfg.ema_power > 0 else {}))  # fmt: skip


def _ema_tensors(ema) -> tuple[dict[str, torch.Tensor], dict]:
    """An EMAModel's state as tensors + JSON-able scalars (for last.safetensors)."""
    state = ema.state_dict()
    shadows = state.pop("shadow_params")
    return {f"ema.{i}": p for i, p in enumerate(shadows)}, state


def _ema_load(ema, tensors: dict[str, torch.Tensor], scalars, where: Path, device) -> None:
    try:
        shadows = [tensors[f"ema.{i}"].to(device) for i in range(len(ema.shadow_params))]
        ema.load_state_dict({**scalars, "shadow_params": shadows})
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"training state's moving average does not fit this run "
                         f"({type(err).__name__})", where / checkpoint.LAST) from err


def evaluate_refiner(refiner: Refiner, val, priors: np.ndarray, batch_size: int = 16,
                     **settings) -> dict:
    """Score refinements of ``priors`` (protocol-sized, as the split) on a loaded split;
    returns the metrics summary."""
    x = to_tensor(np.stack([it.image for it in val.items]))
    p = torch.from_numpy(priors).float()
    labels = []
    for s in range(0, len(x), batch_size):
        mean, _ = refiner.refine_tensors(x[s : s + batch_size], p[s : s + batch_size], seed=s,
                                         **settings)  # fmt: skip
        labels.extend(m.argmax(0).numpy() for m in mean)
    return score_split(val, labels).summary()


def train_refiner(
    cfg: RefinerConfig | None,
    out: str | Path,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Train (or, with ``resume``, continue) a refiner into the run folder ``out``.

    Returns the best validation record (or the last record without a validation split).
    """
    dev = resolve_device(device)
    folder = RunFolder(out, "refiner")
    if resume:
        cfg = RefinerConfig(**folder.saved_train_settings())
    elif cfg is None:
        raise ValueError("a RefinerConfig is needed unless resuming")
    else:
        folder.refuse_existing()
    method = get_mode(cfg.mode)
    coarse = method.learns_from_coarse_masks
    seg_cfg = None
    if cfg.segmenter:
        seg_cfg = checkpoint.read_config(cfg.segmenter, kind="segmenter")
        cfg = dataclasses.replace(cfg, classes=seg_cfg["classes"], size=seg_cfg["size"],
                                  binary_per_class=seg_cfg["binary_per_class"])  # fmt: skip
    # checked before the run folder is created, like the segmenter
    init_cfg = (checkpoint.read_config(cfg.init_encoder, kind="segmenter")
                if cfg.init_encoder and not resume else None)  # fmt: skip
    if cfg.init_from and not resume:
        check_init_from(cfg.init_from, "refiner")
    if cfg.class_agnostic:  # every class against the rest, one binary task per class
        names = open_dataset(cfg.data, cfg.split).class_names
        cfg = dataclasses.replace(cfg, classes=[c for c in names if c != "background"],
                                  binary_per_class=True)  # fmt: skip
    train = load_split(cfg.data, cfg.split, cfg.classes, cfg.binary_per_class, cfg.size)
    val = (load_split(cfg.data, cfg.val_split, cfg.classes, cfg.binary_per_class, cfg.size)
           if cfg.val_split else None)  # fmt: skip
    if seg_cfg:
        check_same_classes(("the segmenter", seg_cfg["class_names"]),
                           ("the data", train.class_names), cfg.segmenter)  # fmt: skip
    accelerator = make_accelerator(dev, cfg.mixed_precision)
    main = folder.main = accelerator.is_main_process
    cpu_bf16 = dev.type == "cpu" and cfg.mixed_precision and native_bf16()
    spec = cfg.spec(train.class_names)
    # the user's predictions are read and checked before the run folder is made
    user_views = _user_views(cfg, train, val) if cfg.coarse and coarse else None
    if cfg.segmenter and coarse:  # so are the out-of-fold segmenters' settings and data
        check_fold_training(fold_config(cfg.segmenter, cfg.data, cfg.split, cfg.oof_epochs),
                            len(train.items), cfg.oof_folds, accelerator.num_processes,
                            cfg.segmenter)  # fmt: skip
    # and everything the network starts from, and the validation inputs: a run folder is
    # made only for a run that can train
    torch.manual_seed(cfg.seed)
    net = method.build_network(spec.num_classes, spec.network).train()
    init, init_conf = ((cfg.segmenter, seg_cfg) if cfg.segmenter and cfg.init_from_segmenter
                       else (cfg.init_encoder, init_cfg))  # fmt: skip
    if init and not resume:
        copied = method.init_from_segmenter(net, init, init_conf)
        if main and progress and coarse:
            print(f"encoder initialised from {init}: {copied} tensors copied")
    if cfg.init_from and not resume:
        started = init_from(net, cfg.init_from, "refiner")
        if main and progress:
            print(f"started from {started['run']}: {started['copied']} tensors copied, "
                  f"{started['fresh']} fresh")  # fmt: skip
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    native = None
    if cfg.native:  # the same images at their original sizes, for the finer scales
        full = load_split(cfg.data, cfg.split, cfg.classes, cfg.binary_per_class, None)
        native = ([it.image for it in full.items], [it.mask for it in full.items])
    priors = (validation_priors(cfg, val, accelerator.device)
              if val is not None and main else None)  # fmt: skip
    # what the inputs score unrefined: each validation is read against it (a refiner that
    # stays below its segmenter's own masks makes them worse)
    baseline = (_headline(score_split(val, [p.argmax(0) for p in priors]).summary())
                if priors is not None else None)  # fmt: skip
    # every process has checked the folder before the main one creates the run in it
    accelerator.wait_for_everyone()
    folder.create(spec, example_sources(cfg.data, cfg.val_split) if not resume else ())
    try:  # the training lock taken by create is given back however training ends
        t0 = time.perf_counter()
        views = None
        if cfg.segmenter and coarse:
            views = out_of_fold_views(cfg.segmenter, train, cfg.data, cfg.split, cfg.oof_folds,
                                      cfg.oof_views, Path(out) / "oof", cfg.seed, cfg.oof_epochs,
                                      device, progress)  # fmt: skip
        elif user_views is not None:
            views = user_views
        oof_seconds = time.perf_counter() - t0

        restored = folder.restore(net, optimizer, resume, counter="step")
        start = restored["step"] if restored else 0
        net, optimizer = accelerator.prepare(net, optimizer)
        ema = None
        if cfg.ema_decay > 0:
            ema = make_ema(accelerator.unwrap_model(net).parameters(), cfg)
            if restored is not None:
                _ema_load(ema, restored["extra"], restored.get("ema"), Path(out),
                          accelerator.device)  # fmt: skip
        # the refiner used for validation shares the network being trained
        refiner = Refiner(accelerator.unwrap_model(net), spec, accelerator.device)
        net.train()
        source = BatchSource(
            cfg,
            torch.from_numpy(np.stack([it.image for it in train.items])),
            torch.from_numpy(np.stack([it.mask for it in train.items]).astype(np.int64)),
            train.num_classes,
            views,
            coarse,
            native,
        )

        bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations,
                   desc="refiner", disable=not (progress and main and sys.stderr.isatty()),
                   dynamic_ncols=True)  # fmt: skip
        losses, t_chunk = [], time.perf_counter()
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(cfg, step)
            # each process draws its own batch: one process draws exactly the steps' own batches
            draw = step * accelerator.num_processes + accelerator.process_index
            x, y, probs = source.draw(draw)
            x, y = x.to(accelerator.device), y.to(accelerator.device)
            probs = probs.to(accelerator.device) if probs is not None else None
            # bf16 on a CPU via torch.autocast: Accelerate's process-wide state is already fixed
            # (to "no") when out-of-fold segmenters were trained in this process
            with accelerator.autocast(), torch.autocast("cpu", torch.bfloat16, enabled=cpu_bf16):
                loss = method.loss(net, refiner.scheduler, cfg, x, y, probs, draw)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            if ema is not None:
                ema.step(accelerator.unwrap_model(net).parameters())
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if (step + 1) % cfg.val_every and step + 1 != cfg.iterations:
                continue
            seconds = time.perf_counter() - t_chunk
            record = {"step": step + 1, "train_loss": float(np.mean(losses)),
                      "lr": learning_rate(cfg, step), "seconds": round(seconds, 2),
                      "train_images_per_s": round(len(losses) * cfg.batch_size
                                                  * accelerator.num_processes / seconds, 2),
                      "oof_seconds": round(oof_seconds, 1)}  # fmt: skip
            accelerator.wait_for_everyone()
            if main:
                if baseline is not None:
                    record["val_input"] = baseline
                _validate_and_keep(folder, record, cfg, refiner, accelerator.unwrap_model(net),
                                   optimizer, ema, val, priors, progress)  # fmt: skip
            losses, t_chunk = [], time.perf_counter()
            accelerator.wait_for_everyone()
        return folder.best_record("step")
    finally:
        folder.release()


def _user_views(cfg: RefinerConfig, train, val) -> dict[str, torch.Tensor]:
    """The ``--coarse`` folder's predictions as training views, with one line on how good
    they are (and a warning when they look like an in-fold model's)."""
    priors = coarse_priors(cfg.coarse, train, cfg.data, cfg.split, cfg.size)
    train_iou = coarse_quality(priors, train)
    val_priors = (coarse_priors(cfg.coarse, val, cfg.data, cfg.val_split, cfg.size, True)
                  if val is not None else None)  # fmt: skip
    val_iou = coarse_quality(val_priors, val) if val_priors is not None else None
    print(f"segrefine: --coarse masks: per-image IoU {train_iou:.1f} on '{cfg.split}'"
          + (f", {val_iou:.1f} on '{cfg.val_split}'" if val_iou is not None else ""),
          file=sys.stderr)  # fmt: skip
    note = in_fold_note(train_iou, val_iou)
    if note:
        print(f"segrefine: warning: {note}", file=sys.stderr)
    return coarse_views(priors, train)


def _validate_and_keep(folder, record, cfg, refiner, plain, optimizer, ema, val, priors,
                       progress) -> None:  # fmt: skip
    """Validate the averaged weights (the raw ones too with ``validate_raw``), keep them when
    best, save the training state (the EMA as extra tensors) and log the record."""
    settings = get_mode(cfg.mode).validation_settings
    if ema is not None:  # validate (and keep) the average; the raw weights beside it
        ema.store(plain.parameters())
        ema.copy_to(plain.parameters())
    if val is not None:
        record["val"] = _validate(refiner, plain, val, priors, settings)
        score = (record["val"]["mean_image_iou"] + record["val"]["boundary_iou"]) / 2
    else:
        score = -record["train_loss"]
    # the best weights are the average's: kept before the raw ones come back
    folder.keep_if_best(record, score, plain, key="step")
    state, extra = {"step": record["step"]}, None
    if ema is not None:
        ema.restore(plain.parameters())
        if val is not None and cfg.validate_raw:
            record["val_raw"] = _validate(refiner, plain, val, priors, settings)
        extra, state["ema"] = _ema_tensors(ema)
    folder.save_state(record, plain, optimizer, state, extra)
    if progress:
        _print_record(record)


def _validate(refiner: Refiner, plain, val, priors, settings: dict) -> dict:
    refiner.net = plain.eval()
    summary = evaluate_refiner(refiner, val, priors, **settings)
    plain.train()
    return summary


HEADLINE = ("mean_image_iou", "miou", "boundary_iou")


def _headline(summary: dict) -> dict:
    return {k: round(float(summary[k]), 2) for k in HEADLINE}


def _print_record(record: dict) -> None:
    line = (f"step {record['step']:6d}  loss {record['train_loss']:.4f}  "
            f"{record['train_images_per_s']:.1f} img/s")  # fmt: skip
    if "val" in record:
        v = record["val"]
        line += (f"  val IoU/img {v['mean_image_iou']:.2f}  mIoU {v['miou']:.2f}  "
                 f"BIoU {v['boundary_iou']:.2f}")  # fmt: skip
        if "val_input" in record:  # the gain over the unrefined inputs
            line += f"  (mIoU {v['miou'] - record['val_input']['miou']:+.2f} over its inputs)"
    if "val_raw" in record:
        line += f"  (raw weights {record['val_raw']['mean_image_iou']:.2f})"
    tqdm.write(line + ("  *best" if record.get("best") else ""))
