"""Training a refiner: one loop for both modes, resumable, accelerate-ready.

``default`` mode learns to map (image, coarse probabilities, noisy sample of them) to the true
mask with cross-entropy. Its coarse probabilities come from out-of-fold segmenter predictions
(when a segmenter run is given) and from :func:`~segrefine.diffusion.degrade.degrade`. The noisy
label state at timestep t is built from a stochastic one-hot draw of a blend
``lam * truth + (1 - lam) * coarse``: ``lam = 0`` for half the batch (exactly what inference
starts from) and random, smaller at larger t, for the rest (what later sampling steps see).

``paper`` mode is a plain DDPM on (image, true one-hot) pairs with the epsilon loss: it never
sees a coarse mask in training, as in the paper.

Determinism: every step draws its batch, augmentation, timesteps and noise from generators
seeded with (seed, step), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import checkpoint
from ..data.datasets import load_split
from ..data.io import VOID
from ..data.transforms import augment_batch, to_tensor
from ..errors import InputError
from ..metrics import SegmentationScores
from ..segmenter import Segmenter, resolve_device
from .degrade import degrade
from .onehot import labels_to_signed, stochastic_onehot
from .oof import out_of_fold_views
from .refiner import MODES, Refiner, build_network, paper_image
from .sampling import start_timestep


@dataclass
class RefinerConfig:
    """Everything that defines a refiner training run (saved in the run's config.json)."""

    data: str
    split: str = "train"
    val_split: str | None = "val"
    classes: list[str] | None = None
    binary_per_class: bool = False
    size: int = 128
    mode: str = "default"
    segmenter: str | None = None  # run folder: out-of-fold predictions as training inputs
    oof_folds: int = 2
    oof_views: int = 8
    oof_fraction: float = 0.75  # share of each batch taken from out-of-fold predictions
    oof_epochs: int | None = None  # default: the segmenter's own epoch count
    init_from_segmenter: bool = True  # start the encoder from the segmenter's U-Net weights
    width: int = 16
    depth: int = 4
    features: int = 16
    head_width: int = 16
    band: int = 6  # pixels around the prior's boundaries the refiner may change; 0 = anywhere
    timesteps: int = 1000
    beta_schedule: str = "linear"
    max_strength: float = 0.6  # default mode trains on t in [1, max_strength * T]
    # share of each batch drawn exactly as the default sampler's first step sees it (no truth
    # blended in, t = the inference strength's start); the rest spreads over [1, max_strength*T]
    start_share: float = 0.0
    iterations: int = 5500
    batch_size: int = 16
    crop: int | None = 64  # train on random crops of this side (inference stays full size)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    val_every: int = 250
    # bf16 autocast in training: on CUDA, and on CPUs with native bf16 (AVX512-BF16 / AMX; 1.4x
    # faster steps on this 2-core EPYC). Inference and validation stay float32.
    mixed_precision: bool = True
    # exponential moving average of the weights: validated, kept as the run's best and used
    # for refinement. The decay at step n is min(ema_decay, (1 + n) / (10 + n)) (diffusers'
    # warm-up), which stays below 0.999 for the first 9000 steps: a 5500-step run averages over
    # roughly its last n / 9 steps, and ema_decay only matters below ~0.998. 0 = off
    ema_decay: float = 0.999
    # the warm-up instead: 0 = diffusers' (1 + n) / (10 + n); p > 0 = 1 - (1 + n) ** -p, capped
    # at ema_decay (p = 1: a running mean of every step until n = 1 / (1 - ema_decay), then a
    # true EMA with that decay; docs/benchmarks.md: mixed results, so not the default)
    ema_power: float = 0.0
    # also validate the raw (not averaged) weights at each validation, logged as ``val_raw``:
    # a paired EMA-vs-raw comparison for the cost of a second validation (1.6 min per CamVid run)
    validate_raw: bool = False
    seed: int = 0
    inference: dict = field(default_factory=dict)  # steps, strength, samples

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown refiner mode '{self.mode}' (use {' or '.join(MODES)})")
        base = (
            {"steps": None, "strength": 0.5, "samples": 1}
            if self.mode == "paper"
            else {"steps": 1, "strength": 0.3, "samples": 2}
        )
        self.inference = {**base, **self.inference}


def _run_config(cfg: RefinerConfig, class_names) -> dict:
    network = {"width": cfg.width, "depth": cfg.depth}
    if cfg.mode == "default":
        network.update(features=cfg.features, head_width=cfg.head_width, band=cfg.band)
    return {
        "kind": "refiner", "mode": cfg.mode, "class_names": list(class_names), "size": cfg.size,
        "classes": cfg.classes, "binary_per_class": cfg.binary_per_class, "network": network,
        "timesteps": cfg.timesteps, "beta_schedule": cfg.beta_schedule,
        "inference": cfg.inference, "train": asdict(cfg),
    }  # fmt: skip


def init_encoder_from_segmenter(net, segmenter_run, seg_cfg: dict) -> int:
    """Start the refiner's condition encoder from the segmenter's own weights.

    The encoder is a U-Net like the segmenter, reading the image plus the C probability
    channels. When the segmenter is a U-Net of the same width and depth, every tensor of the
    same name and shape is copied; the first convolution takes the segmenter's filters for the
    image channels and zeros for the probability channels (so the encoder starts as the
    segmenter's feature extractor), and the output layer (C vs ``features`` channels) keeps its
    random start. The refiner then starts knowing what the segmenter learned about the images
    instead of learning it again from the same training set. Returns the tensors copied (0
    when the architectures differ).
    """
    model = seg_cfg.get("model", {})
    encoder = net.encoder
    if model.get("name") != "unet":
        return 0
    tensors, _ = checkpoint.load_tensors(Path(segmenter_run) / checkpoint.WEIGHTS)
    own = encoder.state_dict()
    update = {}
    for name, value in tensors.items():
        mine = own.get(name)
        if mine is None:
            continue
        if mine.shape == value.shape:
            update[name] = value
        elif (mine.ndim == 4 and mine.shape[0] == value.shape[0]
              and mine.shape[1] == value.shape[1] + len(seg_cfg["class_names"])
              and mine.shape[2:] == value.shape[2:]):  # the first conv: image + prob channels
            w = torch.zeros_like(mine)
            w[:, : value.shape[1]] = value
            update[name] = w
    if len(update) < len(own) // 2:  # another width or depth: nothing sensible to copy
        return 0
    encoder.load_state_dict(update, strict=False)
    return len(update)


def _native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (emulated bf16 on older CPUs is slower)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


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


def _ema_load(ema, tensors: dict[str, torch.Tensor], scalars: dict, device) -> None:
    shadows = [tensors[f"ema.{i}"].to(device) for i in range(len(ema.shadow_params))]
    ema.load_state_dict({**scalars, "shadow_params": shadows})


def learning_rate(cfg: RefinerConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.iterations - cfg.warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


class BatchSource:
    """Draws training batches (image, mask, coarse probs) for one step from its seed."""

    def __init__(self, cfg: RefinerConfig, images, masks, num_classes, views=None):
        self.cfg, self.images, self.masks, self.c, self.views = (
            cfg,
            images,
            masks,
            num_classes,
            views,
        )

    def draw(self, step: int):
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, step])
        b = cfg.batch_size
        n_oof = 0
        if self.views is not None and cfg.mode == "default":
            n_oof = int(rng.binomial(b, cfg.oof_fraction))
        size = self.images.shape[1]
        rows = cols = slice(None)
        if cfg.crop and cfg.crop < size:
            # one random window for the whole batch: the band-limited correction is local, so
            # small crops teach it as well as whole images at a fraction of the cost. It is
            # cut before the degradations, which then cost a quarter (64 of 128 px)
            top, left = rng.integers(0, size - cfg.crop + 1, size=2)
            rows, cols = slice(top, top + cfg.crop), slice(left, left + cfg.crop)
        window = (..., rows, cols)
        idx = rng.integers(len(self.images), size=max(b - n_oof, 0))
        x = y = probs = None
        if len(idx):
            x, y = augment_batch(to_tensor(self.images[idx].numpy()), self.masks[idx], rng)
            x, y = x[window], y[window]
            if cfg.mode == "default":
                probs = torch.from_numpy(np.stack([degrade(m.numpy(), self.c, rng) for m in y]))
        if n_oof:
            j = rng.integers(len(self.views["images"]), size=n_oof)
            vx = to_tensor(self.views["images"][j].numpy()[:, rows, cols])
            vy = self.views["masks"][j][window].long()
            vp = self.views["probs"][j][window].float()
            flip = torch.from_numpy(rng.random(n_oof) < 0.5)
            vx[flip], vy[flip], vp[flip] = vx[flip].flip(-1), vy[flip].flip(-1), vp[flip].flip(-1)
            if x is None:
                x, y, probs = vx, vy, vp
            else:
                x, y, probs = torch.cat([x, vx]), torch.cat([y, vy]), torch.cat([probs, vp])
        return x, y, probs


def refiner_loss(net, scheduler, cfg: RefinerConfig, x, y, probs, step: int) -> torch.Tensor:
    """One step's loss (see the module docstring for what each mode learns)."""
    gen = torch.Generator(x.device).manual_seed(cfg.seed * 1_000_003 + step)
    b, c = x.shape[0], scheduler.config.num_train_timesteps
    if cfg.mode == "paper":
        x0 = torch.cat([paper_image(x), labels_to_signed(y, net.config.out_channels - 3)], 1)
        t = torch.randint(0, c, (b,), generator=gen, device=x.device)
        noise = torch.randn(x0.shape, generator=gen, device=x.device)
        eps = net(scheduler.add_noise(x0, noise, t), t).sample.float()
        weight = torch.ones_like(x0)
        weight[:, 3:] = (y != VOID).unsqueeze(1).float()
        return (weight * (eps - noise) ** 2).sum() / weight.sum()
    t_max = start_timestep(scheduler, cfg.max_strength)
    t = torch.randint(1, t_max + 1, (b,), generator=gen, device=x.device)
    lam = torch.rand(b, generator=gen, device=x.device) * (1 - t.float() / t_max)
    lam = torch.where(torch.rand(b, generator=gen, device=x.device) < 0.5, 0.0, lam)
    if cfg.start_share > 0:
        at_start = torch.rand(b, generator=gen, device=x.device) < cfg.start_share
        t = torch.where(at_start, start_timestep(scheduler, cfg.inference["strength"]), t)
        lam = torch.where(at_start, 0.0, lam)
    truth = (labels_to_signed(y, probs.shape[1]) + 1) / 2
    void = (y == VOID).unsqueeze(1)
    truth = torch.where(void, probs, truth)
    q = lam.view(b, 1, 1, 1) * truth + (1 - lam.view(b, 1, 1, 1)) * probs
    noise = torch.randn(probs.shape, generator=gen, device=x.device)
    x_t = scheduler.add_noise(stochastic_onehot(q, gen), noise, t)
    logits = net(x_t, t, x, probs)
    return F.cross_entropy(logits.float(), y, ignore_index=VOID)


def validation_priors(cfg: RefinerConfig, val, device) -> np.ndarray:
    """The coarse inputs validation refines: the segmenter's predictions when one is given,
    else fixed degradations of the ground truth."""
    if cfg.segmenter:
        seg = Segmenter.load(cfg.segmenter, device)
        return np.stack(seg.predict_batch([it.image for it in val.items]))
    return np.stack(
        [
            degrade(it.mask, val.num_classes, np.random.default_rng([cfg.seed, 7, i]))
            for i, it in enumerate(val.items)
        ]
    )


def evaluate_refiner(refiner: Refiner, val, priors: np.ndarray, **settings) -> dict:
    """Score refinements of ``priors`` on a loaded split; returns the metrics summary."""
    scores = SegmentationScores(val.num_classes, val.class_names)
    x = to_tensor(np.stack([it.image for it in val.items]))
    p = torch.from_numpy(priors).float()
    for s in range(0, len(x), 16):
        mean, _ = refiner.refine_tensors(x[s : s + 16], p[s : s + 16], seed=s, **settings)
        for m, item in zip(mean, val.items[s : s + 16], strict=True):
            scores.update(m.argmax(0).numpy(), item.mask)
    return scores.summary()


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
    from accelerate import Accelerator

    out = Path(out)
    if resume:
        cfg = RefinerConfig(**checkpoint.read_config(out, kind="refiner")["train"])
    elif cfg is None:
        raise ValueError("a RefinerConfig is needed unless resuming")
    elif (out / checkpoint.CONFIG).exists():
        raise InputError(
            "already holds a run; pass --resume to continue it or pick another --out", out
        )
    dev = resolve_device(device)
    accelerator = Accelerator(
        cpu=dev.type == "cpu",
        mixed_precision="bf16" if dev.type == "cuda" and cfg.mixed_precision else "no",
    )
    main = accelerator.is_main_process
    cpu_bf16 = dev.type == "cpu" and cfg.mixed_precision and _native_bf16()
    if cfg.segmenter:
        seg_cfg = checkpoint.read_config(cfg.segmenter, kind="segmenter")
        cfg = dataclasses.replace(
            cfg,
            classes=seg_cfg["classes"],
            size=seg_cfg["size"],
            binary_per_class=seg_cfg["binary_per_class"],
        )
    train = load_split(cfg.data, cfg.split, cfg.classes, cfg.binary_per_class, cfg.size)
    val = (
        load_split(cfg.data, cfg.val_split, cfg.classes, cfg.binary_per_class, cfg.size)
        if cfg.val_split
        else None
    )
    if cfg.segmenter and tuple(seg_cfg["class_names"]) != train.class_names:
        raise InputError(
            f"the segmenter predicts {seg_cfg['class_names']} but the data has "
            f"{list(train.class_names)}",
            cfg.segmenter,
        )
    run_config = _run_config(cfg, train.class_names)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_config(out, run_config)

    t0 = time.perf_counter()
    views = None
    if cfg.segmenter and cfg.mode == "default":
        views = out_of_fold_views(
            cfg.segmenter,
            train,
            cfg.data,
            cfg.split,
            cfg.oof_folds,
            cfg.oof_views,
            out / "oof",
            cfg.seed,
            cfg.oof_epochs,
            device,
            progress,
        )
    oof_seconds = time.perf_counter() - t0

    torch.manual_seed(cfg.seed)
    net = build_network(run_config).train()
    if cfg.segmenter and cfg.mode == "default" and cfg.init_from_segmenter and not resume:
        copied = init_encoder_from_segmenter(net, cfg.segmenter, seg_cfg)
        if main and progress:
            print(f"encoder initialised from the segmenter: {copied} tensors copied")
    optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start, best, history, restored = 0, None, [], None
    if resume and (out / checkpoint.LAST).exists():
        restored = checkpoint.load_training_state(out, net, optimizer)
        start, best, history = restored["step"], restored["best"], restored["history"]
    if main:
        (out / checkpoint.LOG).unlink(missing_ok=True)
        for record in history:
            checkpoint.append_log(out, record)
    net, optimizer = accelerator.prepare(net, optimizer)
    ema = None
    if cfg.ema_decay > 0:
        ema = make_ema(accelerator.unwrap_model(net).parameters(), cfg)
        if restored is not None:
            _ema_load(ema, restored["extra"], restored["ema"], accelerator.device)
    # the refiner used for validation shares the network being trained
    refiner = Refiner(accelerator.unwrap_model(net), run_config, accelerator.device)
    net.train()
    source = BatchSource(
        cfg,
        torch.from_numpy(np.stack([it.image for it in train.items])),
        torch.from_numpy(np.stack([it.mask for it in train.items]).astype(np.int64)),
        train.num_classes,
        views,
    )
    priors = validation_priors(cfg, val, accelerator.device) if val is not None and main else None
    val_settings = {"steps": 10, "samples": 1} if cfg.mode == "paper" else {}

    bar = tqdm(
        range(start, cfg.iterations),
        initial=start,
        total=cfg.iterations,
        desc="refiner",
        disable=not (progress and main and sys.stderr.isatty()),
        dynamic_ncols=True,
    )
    losses, t_chunk = [], time.perf_counter()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        x, y, probs = source.draw(step)
        x, y = x.to(accelerator.device), y.to(accelerator.device)
        probs = probs.to(accelerator.device) if probs is not None else None
        # bf16 on a CPU via torch.autocast: Accelerate's process-wide state is already fixed
        # (to "no") when out-of-fold segmenters were trained in this process
        with accelerator.autocast(), torch.autocast("cpu", torch.bfloat16, enabled=cpu_bf16):
            loss = refiner_loss(net, refiner.scheduler, cfg, x, y, probs, step)
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
                  "lr": learning_rate(cfg, step),
                  "seconds": round(seconds, 2),
                  "train_images_per_s": round(len(losses) * cfg.batch_size / seconds, 2),
                  "oof_seconds": round(oof_seconds, 1)}  # fmt: skip
        accelerator.wait_for_everyone()
        if main:
            plain = accelerator.unwrap_model(net)
            if ema is not None:  # validate (and keep) the average; the raw weights beside it
                ema.store(plain.parameters())
                ema.copy_to(plain.parameters())
            if val is not None:
                record["val"] = _validate(refiner, plain, val, priors, val_settings)
                score = (record["val"]["mean_image_iou"] + record["val"]["boundary_iou"]) / 2
            else:
                score = -record["train_loss"]
            is_best = best is None or score > best["score"]
            if is_best:
                best = {"score": score, "step": step + 1}
                checkpoint.save_tensors(
                    out / checkpoint.WEIGHTS, plain.state_dict(), {"step": step + 1}
                )
            record["best"] = is_best
            history.append(record)
            state, extra = {"step": step + 1, "best": best, "history": history}, None
            if ema is not None:
                ema.restore(plain.parameters())
                if val is not None and cfg.validate_raw:
                    record["val_raw"] = _validate(refiner, plain, val, priors, val_settings)
                extra, state["ema"] = _ema_tensors(ema)
            checkpoint.save_training_state(out, plain, optimizer, state, extra)
            checkpoint.append_log(out, record)
            if progress:
                _print_record(record)
        losses, t_chunk = [], time.perf_counter()
        accelerator.wait_for_everyone()
    return next(r for r in history if r["step"] == best["step"]) if best else {}


def _validate(refiner: Refiner, plain, val, priors, settings: dict) -> dict:
    refiner.net = plain.eval()
    summary = evaluate_refiner(refiner, val, priors, **settings)
    plain.train()
    return summary


def _print_record(record: dict) -> None:
    line = (
        f"step {record['step']:6d}  loss {record['train_loss']:.4f}  "
        f"{record['train_images_per_s']:.1f} img/s"
    )
    if "val" in record:
        v = record["val"]
        line += (
            f"  val IoU/img {v['mean_image_iou']:.2f}  mIoU {v['miou']:.2f}  "
            f"BIoU {v['boundary_iou']:.2f}"
        )
    if "val_raw" in record:
        line += f"  (raw weights {record['val_raw']['mean_image_iou']:.2f})"
    tqdm.write(line + ("  *best" if record.get("best") else ""))
