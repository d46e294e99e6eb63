"""`RefinerConfig`: everything that defines a refiner training run, checked before anything
is written, and the run spec it produces."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from ..runs import TrainingData, check_settings
from .degrade import DegradeConfig
from .modes import get_mode
from .refiner import AGNOSTIC_CLASSES, BETA_SCHEDULES, RefinerSpec

DEGRADE_FIELDS = {f.name for f in fields(DegradeConfig)}


@dataclass
class RefinerConfig(TrainingData):
    """Everything that defines a refiner training run (saved in the run's config.json)."""

    mode: str = "default"
    segmenter: str | None = None  # run folder: out-of-fold predictions as training inputs
    oof_folds: int = 2
    oof_views: int = 8
    oof_fraction: float = 0.75  # share of each batch taken from out-of-fold predictions
    oof_epochs: int | None = None  # default: the segmenter's own epoch count
    # a folder of the user's own model's predictions for the training images (any form the
    # coarse-mask reader takes, by image id): used instead of out-of-fold predictions
    coarse: str | None = None
    init_from_segmenter: bool = True  # start the encoder from the segmenter's U-Net weights
    # a U-Net segmenter run (of any classes) to start the encoder from when no ``segmenter``
    # gives the coarse inputs: a class-agnostic refiner then starts with real images' features
    init_encoder: str | None = None
    # a trained refiner run (or zoo:NAME) to start from: every tensor whose shape matches is
    # copied (after the encoder's start above), the class layers start fresh when classes differ
    init_from: str | None = None
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
    # bf16 autocast in training: on CUDA, and on CPUs with native bf16 (AVX512-BF16 / AMX;
    # emulated bf16 is slower than float32). Sampling, in validation too, follows Refiner.bf16.
    mixed_precision: bool = True
    # exponential moving average of the weights: validated, kept as the run's best and used
    # for refinement. The decay at step n is min(ema_decay, (1 + n) / (10 + n)) (diffusers'
    # warm-up), which stays below 0.999 for the first 9000 steps: a run of n steps averages
    # over roughly its last n / 9, and ema_decay only matters below ~0.998. 0 = off
    ema_decay: float = 0.999
    # the warm-up instead: 0 = diffusers' (1 + n) / (10 + n); p > 0 = 1 - (1 + n) ** -p, capped
    # at ema_decay (p = 1: a running mean of every step until n = 1 / (1 - ema_decay), then a
    # true EMA with that decay)
    ema_power: float = 0.0
    # also validate the raw (not averaged) weights at each validation, logged as ``val_raw``:
    # a paired EMA-vs-raw comparison for the cost of a second validation
    validate_raw: bool = False
    # also learn to refine at the images' own resolution (diffusion/native.py): this share of
    # each batch is cropped at finer scales, with truth_share of those given the truth itself
    # (a quarter: with half, CamVid's working pass never beat its segmenter; docs/benchmarks.md)
    native: bool = False
    native_share: float = 0.25
    truth_share: float = 0.2
    # one refiner for any classes: every class of the data becomes its own object-vs-rest
    # task (background / object), and refinement runs one-vs-rest on any label map
    class_agnostic: bool = False
    # DegradeConfig fields to override for the coarse masks made from the truth (training and
    # validation alike): e.g. a class-agnostic refiner that should only move boundaries, not
    # guess which regions an object it never saw has, is trained without region errors
    degrade: dict = field(default_factory=dict)
    seed: int = 0
    inference: dict = field(default_factory=dict)  # steps, strength, samples

    def __post_init__(self):
        method = get_mode(self.mode)
        self.inference = {**method.inference_defaults, **self.inference}
        if self.native:
            self.inference.setdefault("native", True)
        strength = self.inference.get("strength")
        check_settings({
            "degrade (DegradeConfig fields, each a number or a (low, high) pair)":
                isinstance(self.degrade, dict) and set(self.degrade) <= DEGRADE_FIELDS
                and all(_number_or_range(v) for v in self.degrade.values()),
            "size (must be in 8..4096)": 8 <= self.size <= 4096,
            "seed (must be in 0..2**32 - 1)": 0 <= self.seed < 2**32,
            "width, features, head width (must be in 1..512)":
                1 <= min(self.width, self.features, self.head_width)
                and max(self.width, self.features, self.head_width) <= 512,
            "depth (must be in 1..8)": 1 <= self.depth <= 8,
            "band (must be in 0..512)": 0 <= self.band <= 512,
            "timesteps (must be in 2..10000)": 2 <= self.timesteps <= 10_000,
            f"beta schedule (one of {', '.join(BETA_SCHEDULES)})":
                self.beta_schedule in BETA_SCHEDULES,
            "inference samples (must be in 1..64)":
                isinstance(self.inference.get("samples"), int)
                and 1 <= self.inference["samples"] <= 64,
            "max strength (must be in (0, 1])": 0 < self.max_strength <= 1,
            "start share (must be in [0, 1])": 0 <= self.start_share <= 1,
            "iterations (must be positive)": self.iterations > 0,
            "batch size (must be positive)": self.batch_size > 0,
            "crop (must be positive or none)": self.crop is None or self.crop > 0,
            "lr (must be positive and finite)": 0 < self.lr < math.inf,
            "weight decay (must be 0 or more)": self.weight_decay >= 0,
            "warmup (must be 0 or more)": self.warmup >= 0,
            "validation interval (must be positive)": self.val_every > 0,
            "EMA decay (must be in [0, 1))": 0 <= self.ema_decay < 1,
            "EMA power (must be 0 or more)": self.ema_power >= 0,
            "out-of-fold folds (must be at least 2)": self.oof_folds >= 2,
            "out-of-fold views (must be positive)": self.oof_views > 0,
            "out-of-fold fraction (must be in [0, 1])": 0 <= self.oof_fraction <= 1,
            "out-of-fold epochs (must be positive or none)":
                self.oof_epochs is None or self.oof_epochs > 0,
            "native share (must be in [0, 1])": 0 <= self.native_share <= 1,
            "truth share (must be in [0, 1])": 0 <= self.truth_share <= 1,
            "native refinement (needs default mode)":
                not self.native or method.learns_from_coarse_masks,
            "class-agnostic training (needs default mode and no segmenter: its coarse "
            "masks are degradations, for any class)":
                not self.class_agnostic or (method.learns_from_coarse_masks
                                            and not self.segmenter),
            "--coarse (needs default mode, and replaces --segmenter's out-of-fold "
            "predictions: give one of them)":
                not self.coarse or (method.learns_from_coarse_masks and not self.segmenter
                                    and not self.class_agnostic),
            "inference strength (must be in (0, 1])":
                isinstance(strength, int | float) and 0 < strength <= 1,
        }, "refiner settings")  # fmt: skip

    def spec(self, class_names) -> RefinerSpec:
        """The run spec a training run with these settings writes as its config.json."""
        agnostic = self.class_agnostic  # its classes are "background" and "any object"
        return RefinerSpec(
            class_names=AGNOSTIC_CLASSES if agnostic else tuple(class_names), size=self.size,
            classes=None if agnostic else self.classes,
            binary_per_class=self.binary_per_class and not agnostic, train=asdict(self),
            mode=self.mode, network=get_mode(self.mode).network_settings(self),
            timesteps=self.timesteps, beta_schedule=self.beta_schedule,
            inference=self.inference, class_agnostic=agnostic,
        )  # fmt: skip


def _number_or_range(v) -> bool:
    def number(x):
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    return number(v) or (isinstance(v, list | tuple) and len(v) == 2 and all(map(number, v)))


def degradations(cfg) -> DegradeConfig:
    """The degradation settings ``cfg`` trains and validates with (defaults + its overrides)."""
    return DegradeConfig(**getattr(cfg, "degrade", {}))


def learning_rate(cfg: RefinerConfig, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``iterations``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.iterations - cfg.warmup, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
