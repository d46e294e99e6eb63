"""`Refiner`: a trained diffusion refiner, loaded from a run folder.

>>> ref = Refiner.load("runs/refiner")                          # doctest: +SKIP
>>> out = ref.refine(image, probs, steps=1, strength=0.3, samples=2)
>>> out.labels, out.probs, out.uncertainty          # (H, W), (C, H, W), (H, W) in [0, 1]

``probs`` may come from any model (C x H x W, summing to 1 over C, aligned with the image); a
hard label mask alone can be passed as ``labels=`` and is softened by
:func:`~segrefine.diffusion.onehot.probs_from_labels`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.coarse import Coarse, interpret_array, read_coarse
from ..data.datasets import resize_image
from ..data.transforms import pad_to_multiple, resize_probs, to_tensor, working_size
from ..errors import InputError
from ..runs import LoadableRun, RunSpec, check_network, fast_bf16
from ..segmenting.segmenter import resolve_device
from .agnostic import both_ways, class_priors, merge_ways, one_vs_rest, recombine
from .modes import MODES, RefinerMode, get_mode
from .native import effective_size, input_detail, labels_of, refine_native
from .onehot import prior_for_image
from .sampling import make_scheduler
from .uncertainty import kept_pixels, temper, uncertainty_map


@dataclass
class Refinement:
    """One refined image: labels (H, W), mean probabilities (C, H, W), uncertainty (H, W).

    ``uncertainty`` is, where the refiner changed the input, the normalised entropy of its
    samples' mean (0: every sample sure and agreeing, 1: the classes equally likely); where it
    kept the input, the input's own: its probabilities' normalised entropy, 0 for a hard mask
    (:mod:`segrefine.diffusion.uncertainty`). ``probs`` are calibrated by the run's
    temperature where the refiner changed them (:mod:`segrefine.diffusion.calibrate`).
    """

    labels: np.ndarray
    probs: np.ndarray
    uncertainty: np.ndarray
    nfe: int


MAX_SAMPLES, MAX_STEPS, MAX_TIMESTEPS = 64, 1000, 10_000  # bounds on what a request may ask
AGNOSTIC_CLASSES = ("background", "object")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # diffusers' DDPM ones


@dataclass(frozen=True)
class RefinerSpec(RunSpec):
    """What a refiner run is: its mode, the mode's network numbers, the noise schedule and
    the inference settings it was trained for (steps, strength, samples, optionally flip)."""

    kind = "refiner"
    mode: str = "default"
    network: dict = field(default_factory=dict)
    timesteps: int = 1000
    beta_schedule: str = "linear"
    inference: dict = field(default_factory=dict)
    class_agnostic: bool = False  # refines any label map, one class against the rest at a time
    # {"temperature": T, ...how it was fitted}: written by segrefine.diffusion.calibrate, {} = none
    calibration: dict = field(default_factory=dict)

    def check(self) -> None:
        super().check()
        if self.class_agnostic and tuple(self.class_names) != AGNOSTIC_CLASSES:
            raise ValueError(f"a class-agnostic refiner's classes are {AGNOSTIC_CLASSES}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        check_network(self.network, MODES[self.mode].network_keys)
        if not isinstance(self.timesteps, int) or not 2 <= self.timesteps <= MAX_TIMESTEPS:
            raise ValueError(f"timesteps must be an integer in [2, {MAX_TIMESTEPS}]")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {', '.join(BETA_SCHEDULES)}")
        if not isinstance(self.inference, dict) or not isinstance(self.calibration, dict):
            raise ValueError("inference and calibration must be mappings")
        samples = self.inference.get("samples")
        if not isinstance(samples, int) or not 1 <= samples <= MAX_SAMPLES:
            raise ValueError(f"inference samples must be an integer in [1, {MAX_SAMPLES}]")
        if not isinstance(self.calibration, dict):
            raise ValueError("calibration must be a mapping")
        t = self.calibration.get("temperature", 1.0)
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0.05 <= t <= 20:
            raise ValueError("calibration temperature must be a number in [0.05, 20]")


class Refiner(LoadableRun):
    """A diffusion refiner and the settings it was trained with."""

    spec_type = RefinerSpec

    def __init__(self, net: torch.nn.Module, spec: RefinerSpec, device: torch.device):
        self.net = net.to(device).eval()
        self.spec = spec
        self.device = device
        self.scheduler = make_scheduler(spec.timesteps, spec.beta_schedule)
        # divides the network's logits where it refines (1 = as trained); the run's fitted one
        self.temperature = float(spec.calibration.get("temperature", 1.0))
        # bf16 autocast for sampling: None = where it is fast (CUDA, CPUs with native bf16;
        # docs/benchmarks.md measures time and scores); False = float32 everywhere, e.g. to
        # compare machines exactly
        self.bf16: bool | None = None

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def method(self) -> RefinerMode:
        """The mode's implementation: network, loss, sampler (``diffusion/modes``)."""
        return get_mode(self.spec.mode)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def defaults(self) -> dict:
        """Inference settings saved with the run: steps, strength, samples (and flip)."""
        return dict(self.spec.inference)

    @property
    def stride(self) -> int:
        """The network's total downsampling: inputs are padded to a multiple of it."""
        return 2 ** int(self.spec.network["depth"])

    def module(self) -> torch.nn.Module:
        return self.net

    @classmethod
    def from_spec(cls, spec: RefinerSpec, device: str | torch.device = "cpu") -> Refiner:
        """An untrained refiner with the architecture ``spec`` describes."""
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        return cls(get_mode(spec.mode).build_network(spec.num_classes, spec.network), spec, dev)

    def nfe(
        self, steps: int | None = None, samples: int | None = None, strength: float | None = None
    ) -> int:
        """Denoiser evaluations per image for these settings (mirrored samples included)."""
        s = self.settings(steps, strength, samples)
        return self.method.denoiser_passes(self.scheduler, s["strength"], s["steps"]) * s["samples"]

    def settings(
        self,
        steps: int | None = None,
        strength: float | None = None,
        samples: int | None = None,
        flip: bool | None = None,
        native: bool | None = None,
    ) -> dict:
        """The inference settings these arguments resolve to (None = the run's default);
        raises :class:`InputError` for invalid ones, before any work is done."""
        s = {"flip": False, "native": False, **self.defaults}
        for key, value in (("steps", steps), ("strength", strength), ("samples", samples),
                           ("flip", flip), ("native", native)):  # fmt: skip
            if value is not None:
                s[key] = value
        if not 1 <= s["samples"] <= MAX_SAMPLES:
            raise InputError(f"samples must be in 1..{MAX_SAMPLES}, got {s['samples']}")
        if s["flip"] and s["samples"] < 2:
            raise InputError(
                f"flip draws half of the samples on the mirrored image: it needs samples >= 2, "
                f"got {s['samples']}"
            )
        if not 0 < s["strength"] <= 1:
            raise InputError(f"strength must be in (0, 1], got {s['strength']}")
        if s["steps"] is not None and not 1 <= s["steps"] <= MAX_STEPS:
            raise InputError(f"steps must be in 1..{MAX_STEPS}, got {s['steps']}")
        if native and not self.defaults.get("native"):
            raise InputError("--native: this refiner was trained without --native, so it "
                             "cannot refine at finer scales (it refines at its working size, "
                             "resized back)")  # fmt: skip
        return s

    def _sample(self, image, probs, k: int, s: dict, gen: torch.Generator) -> torch.Tensor:
        """``k`` refinements per image, (B, k, C, H, W)."""
        bf16 = fast_bf16(self.device) if self.bf16 is None else self.bf16
        with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
            out = self.method.sample(self.inference_module, image, probs, self.scheduler,
                                     s["strength"], s["steps"], gen, k)  # fmt: skip
        return out.float().view(-1, k, *out.shape[1:])

    @torch.no_grad()
    def refine_tensors(
        self,
        image: torch.Tensor,
        probs: torch.Tensor,
        steps: int | None = None,
        strength: float | None = None,
        samples: int | None = None,
        seed: int = 0,
        flip: bool | None = None,
        hard: Sequence[bool] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch refinement at the network's resolution.

        ``image``: normalised (B, 3, H, W); ``probs``: (B, C, H, W). Returns the mean refined
        probabilities over ``samples`` (calibrated by :attr:`temperature` where refined) and
        the uncertainty (B, H, W): the normalised entropy of that mean, except where no sample
        changed an input that ``hard`` marks as a mask (its own uncertainty: 0).
        With ``flip``, half of the samples (the later ones) refine the left-right mirrored
        image and probabilities and are mirrored back: test-time augmentation at the same
        number of denoiser evaluations, for the cost of a second pass of the condition
        encoder (docs/benchmarks.md measures what it buys).
        """
        s = self.settings(steps, strength, samples, flip)
        if probs.shape[1] != self.num_classes:
            raise InputError(
                f"probabilities have {probs.shape[1]} classes but the refiner was "
                f"trained for {self.num_classes} ({', '.join(self.class_names)})"
            )
        k = s["samples"]
        gen = torch.Generator(self.device).manual_seed(seed)
        last = torch.channels_last  # the layout convolutions run fastest in
        image = image.to(self.device, memory_format=last)
        probs = probs.to(self.device, memory_format=last)
        if s["flip"]:
            plain = self._sample(image, probs, k - k // 2, s, gen)
            mirrored = self._sample(image.flip(-1), probs.flip(-1), k // 2, s, gen).flip(-1)
            out = torch.cat([plain, mirrored], 1)
        else:
            out = self._sample(image, probs, k, s, gen)
        kept = kept_pixels(out, probs)
        out = temper(out, kept, self.temperature)
        return out.mean(1).cpu(), uncertainty_map(out, kept, hard).cpu()

    def refine(
        self,
        image: np.ndarray,
        probs: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        steps: int | None = None,
        strength: float | None = None,
        samples: int | None = None,
        seed: int = 0,
        flip: bool | None = None,
        native: bool | None = None,
        input_size: int | None = None,
    ) -> Refinement:
        """Refine one RGB uint8 image (H, W, 3) given ``probs`` (C, H, W), a coarse input as
        :meth:`read_coarse` reads it, or hard ``labels``. Arrays are read as files are
        (:mod:`segrefine.data.coarse`): for a refiner with one object class a 0/255 mask is
        background/object and an antialiased one the object's probability, never void.

        ``steps``, ``strength``, ``samples`` and ``flip`` default to the run's settings
        (:attr:`defaults`); see :meth:`refine_tensors`; ``native`` and ``input_size``: see
        :meth:`refine_batch`.
        """
        return self.refine_batch(
            [image],
            None if probs is None else [probs],
            None if labels is None else [labels],
            steps,
            strength,
            samples,
            seed,
            flip=flip,
            native=native,
            input_size=input_size,
        )[0]

    def refine_batch(
        self,
        images: Sequence[np.ndarray],
        probs: Sequence[np.ndarray] | None = None,
        labels: Sequence[np.ndarray] | None = None,
        steps: int | None = None,
        strength: float | None = None,
        samples: int | None = None,
        seed: int = 0,
        batch_size: int = 16,
        flip: bool | None = None,
        native: bool | None = None,
        input_size: int | None = None,
    ) -> list[Refinement]:
        """:meth:`refine` for several images of any sizes. Coarse inputs smaller than their
        image are upsampled to it (:func:`~segrefine.diffusion.onehot.prior_for_image`). Each
        image is refined whole at the refiner's working size (aspect ratio kept, short side at
        the training size, padded to the network's stride) and the result resized back to the
        image; images of one working size are refined together, batch ``k`` of a size with
        ``seed`` + the index of its first image. With ``native`` (the default for runs trained
        with it) the result is refined again at doubling scales up to the image's own size
        (:mod:`segrefine.diffusion.native`), above the resolution the input was predicted at:
        ``input_size`` when given (the short side the segmenter worked at), else the input's
        own size when it is smaller than its image, else the size its maps carry detail at
        (:func:`~segrefine.diffusion.native.effective_size`; a hard mask at the image's size
        counts as drawn there, unless it is made of f x f blocks)."""
        if (probs is None) == (labels is None):
            raise InputError("give either probability maps or label masks, not both or neither")
        if input_size is not None and input_size < 1:
            raise InputError(f"input size must be a positive number of pixels, got {input_size}")
        given = self._coarse_items(probs if probs is not None else labels)
        if len(given) != len(images):
            raise InputError(f"{len(images)} images but {len(given)} coarse inputs")
        details = [input_detail(im.shape[:2], c.shape, input_size)
                   for im, c in zip(images, given, strict=True)]  # fmt: skip
        if self.spec.class_agnostic:
            return self._one_vs_rest(images, given, steps, strength, samples, seed,
                                     batch_size, flip, native, details)  # fmt: skip
        priors = [prior_for_image(im.shape[:2], self.num_classes, c.probs, c.labels)
                  for im, c in zip(images, given, strict=True)]  # fmt: skip
        return self._refine_priors(images, priors, steps, strength, samples, seed, batch_size,
                                   flip, native, details,
                                   [c.labels is not None for c in given])  # fmt: skip

    def read_coarse(self, path: str | Path, colours: np.ndarray | None = None) -> Coarse:
        """A coarse mask or map file read for this refiner, as ``segrefine refine`` reads it
        (:func:`~segrefine.data.coarse.read_coarse`; ``colours``: a ``classes.txt``'s)."""
        return read_coarse(path, None if self.spec.class_agnostic else self.num_classes, colours)

    def refine_video(self, frames, **options):
        """A clip's frames refined in order, streaming, with the temporal prior: yields each
        frame's :class:`~segrefine.video.VideoFrame` (:func:`segrefine.video.refine_video`)."""
        from ..video import refine_video

        return refine_video(self, frames, **options)

    def _coarse_items(self, given: Sequence) -> list[Coarse]:
        """Each coarse input as :mod:`segrefine.data.coarse` reads arrays; a user is told
        once (a warning) when an array is read as anything but class ids or probabilities."""
        classes = None if self.spec.class_agnostic else self.num_classes
        items = []
        for g in given:
            c = g if isinstance(g, Coarse) else interpret_array(g, classes)
            if c.note and not isinstance(g, Coarse):
                warnings.warn(f"segrefine: coarse input read as {c.note}", stacklevel=4)
            items.append(c)
        return items

    def _one_vs_rest(self, images, given, steps, strength, samples, seed, batch_size,
                     flip, native, details) -> list[Refinement]:  # fmt: skip
        """A class-agnostic refiner on C-class inputs (:mod:`.agnostic`)."""
        priors = class_priors(images, given)
        owners, binary = one_vs_rest(priors)
        if self.settings(native=native)["native"]:  # one estimate per image, for each class
            details = [d or effective_size(p) for d, p in zip(details, priors, strict=True)]
        refined = self._refine_priors([images[i] for i, _ in owners] * 2, both_ways(binary),
                                      steps, strength, samples, seed, batch_size, flip, native,
                                      [details[i] for i, _ in owners] * 2,
                                      [given[i].labels is not None for i, _ in owners] * 2,
                                      )  # fmt: skip
        hard = [c.labels is not None for c in given]
        return [Refinement(*r) for r in recombine(priors, owners, merge_ways(refined), hard)]

    def _refine_priors(self, images, priors, steps, strength, samples, seed, batch_size, flip,
                       native, details, hard) -> list[Refinement]:  # fmt: skip
        s = self.settings(steps, strength, samples, flip, native)  # fails before any work
        passes = {k: s[k] for k in ("steps", "strength", "samples", "flip")}
        if not s["flip"]:
            # finer passes only place boundaries the working pass decided: one sample there
            # scores the same (Weizmann val, docs/benchmarks.md) and is a little faster
            passes["samples"] = 1
        nfe = self.nfe(steps, samples, strength)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(working_size(im.shape, self.size), []).append(i)
        results: list[Refinement | None] = [None] * len(images)
        for (h, w), idx in groups.items():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                x = to_tensor(np.stack([resize_image(images[i], (h, w)) for i in chunk]))
                p = torch.stack([resize_probs(torch.from_numpy(priors[i]), (h, w))
                                 for i in chunk])  # fmt: skip
                mean, unc = self.refine_tensors(pad_to_multiple(x, self.stride),
                                                pad_to_multiple(p, self.stride), steps, strength,
                                                samples, seed + chunk[0], flip,
                                                [hard[i] for i in chunk])  # fmt: skip
                for i, m, u in zip(chunk, mean[..., :h, :w], unc[..., :h, :w], strict=True):
                    shape = images[i].shape[:2]
                    if s["native"]:  # refine again at finer scales, up to the image's own
                        prior = torch.from_numpy(priors[i])
                        m, u = refine_native(self, images[i], prior, p[chunk.index(i)], m, u,
                                             passes, seed + i,
                                             details[i] or effective_size(prior))  # fmt: skip
                    m = resize_probs(m, shape)
                    u = F.interpolate(u[None, None], size=shape, mode="bilinear",
                                      align_corners=False)[0, 0]  # fmt: skip
                    results[i] = Refinement(labels_of(m).numpy().astype(np.uint8), m.numpy(),
                                            u.numpy(), nfe)  # fmt: skip
        return results

