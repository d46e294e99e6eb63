"""The loaded diffusion model and one-pass segmentation from its attention (StableSeg).

One U-Net evaluation per image: the image's latent, lightly noised at a small timestep, is
denoised once under a prompt naming the classes; the recorded cross-attention gives one map
per class and the recorded self-attention sharpens them (:mod:`.maps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from . import maps as M
from .capture import AttentionStore, install
from .prompt import build_prompt, check_classes, token_groups

if TYPE_CHECKING:  # layers builds on this module, so only its type is needed here
    from .layers import LayerWeights

BACKGROUND = "background"


@dataclass
class CapturedAttention:
    """What one U-Net pass recorded, batch item 0, float32 on the CPU."""

    prompt: str
    token_groups: list[list[int]]  # per class, its token positions in the prompt
    latent_hw: tuple[int, int]
    cross: list[np.ndarray]  # per cross-attention layer: (HW, tokens)
    cross_names: list[str]
    self_attn: list[np.ndarray]  # per self-attention layer with HW <= the bound: (HW, HW)
    self_names: list[str]


@dataclass
class AttentionSegmentation:
    """``labels`` (H, W) uint8 index ``class_names``; ``probs`` (K, H, W) float32 sum to 1
    over K = len(class_names); ``cross`` (C, h, w) the aggregated cross-attention maps of the
    given classes (before self-attention refinement, each scaled to a maximum of 1)."""

    labels: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    cross: np.ndarray


# Twice Stable Diffusion 1.x's 512 (2.x's 768 fits): at 100000 px the first resize alone asks
# for 30 GB, and the U-Net's largest self-attention grows with the side's fourth power
MAX_RESOLUTION = 1024


def check_resolution_bound(resolution: int) -> None:
    """An :class:`InputError` for a resolution outside 1..:data:`MAX_RESOLUTION`, checked
    before a model is loaded."""
    if not 1 <= resolution <= MAX_RESOLUTION:
        raise InputError(f"resolution must be in 1..{MAX_RESOLUTION} pixels, got {resolution}")


class AttentionModel:
    """A Stable Diffusion model (U-Net, VAE, text encoder, tokenizer, noise schedule) used for
    training-free segmentation. Build it with :func:`~segrefine.attention.load_attention_model`.
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, device: torch.device,
                 dtype: torch.dtype, resolution: int = 512, max_self_tokens: int = 32 * 32,
                 path: Path | None = None):  # fmt: skip
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer, self.scheduler = tokenizer, scheduler
        self.device, self.dtype, self.path = device, dtype, path
        self.resolution = resolution
        self.store = AttentionStore(max_self_tokens=max_self_tokens)
        install(unet, self.store)
        # the image must survive the VAE's and then the U-Net's halvings without rounding
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        unet_factor = 2 ** (len(unet.config.block_out_channels) - 1)
        self.vae_factor, self.size_multiple = vae_factor, vae_factor * unet_factor
        self.max_length = min(int(tokenizer.model_max_length),
                              int(text_encoder.config.max_position_embeddings))  # fmt: skip

    # -- the one U-Net pass -------------------------------------------------------------------

    def _check(self, image: np.ndarray, timestep: int, resolution: int) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 \
                or image.shape[2] != 3 or min(image.shape[:2]) < 1:  # fmt: skip
            shape = getattr(image, "shape", None)
            raise InputError(f"expected an RGB image array (H, W, 3) of uint8, got {shape} "
                             f"{getattr(image, 'dtype', type(image).__name__)}")  # fmt: skip
        steps = int(self.scheduler.config.num_train_timesteps)
        if not 0 <= int(timestep) < steps:
            raise InputError(f"timestep {timestep} is outside 0..{steps - 1}")
        self.check_resolution(resolution)

    def check_resolution(self, resolution: int) -> None:
        """The side images are resized to must survive the model's halvings and stay within
        :data:`MAX_RESOLUTION` (the U-Net's self-attention grows with its fourth power)."""
        if resolution < self.size_multiple or resolution % self.size_multiple:
            raise InputError(f"resolution {resolution} must be a positive multiple of "
                             f"{self.size_multiple} for this model")  # fmt: skip
        check_resolution_bound(resolution)

    @torch.inference_mode()
    def _latents(self, image: np.ndarray, resolution: int) -> torch.Tensor:
        resized = Image.fromarray(image).resize((resolution, resolution), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 127.5 - 1.0)
        x = x.permute(2, 0, 1)[None].to(self.device, self.vae.dtype)
        latents = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        return latents.to(self.dtype)

    @torch.inference_mode()
    def _text(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.max_length,
                             truncation=True, return_tensors="pt").input_ids  # fmt: skip
        return self.text_encoder(ids.to(self.device))[0].to(self.dtype)

    @property
    def cross_layer_names(self) -> list[str]:
        """The names of the U-Net's cross-attention layers (as :class:`CapturedAttention`
        names them), known without a U-Net pass; in module order, which need not be the order
        a pass calls them in."""
        return [name for name, module in self.unet.named_modules()
                if hasattr(module, "set_processor")
                and getattr(module, "is_cross_attention", False)]  # fmt: skip

    def check_prompt(self, classes: list[str]) -> tuple[tuple[str, ...], str, list[list[int]]]:
        """The checked class names, their prompt and each class's token positions, or an
        :class:`InputError` (bad names, a prompt too long for the text encoder), with no
        U-Net pass: callers check a whole job's classes before its first image."""
        names = check_classes(classes)
        prompt = build_prompt(names)
        return names, prompt, token_groups(self.tokenizer, prompt, names, self.max_length)

    @torch.inference_mode()
    def capture(self, image: np.ndarray, classes: list[str], timestep: int = 1, seed: int = 0,
                resolution: int | None = None) -> CapturedAttention:  # fmt: skip
        """Run the U-Net once on ``image`` under the prompt naming ``classes`` and return the
        attention it recorded. The noise comes from a CPU generator seeded with ``seed``, so
        the result is the same on every device."""
        resolution = int(resolution or self.resolution)
        self._check(image, timestep, resolution)
        _, prompt, groups = self.check_prompt(classes)
        latents = self._latents(image, resolution)
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
        t = torch.tensor([int(timestep)], dtype=torch.long)
        noisy = self.scheduler.add_noise(latents.float().cpu(), noise, t)
        text = self._text(prompt)
        self.store.clear()
        self.store.active = True
        try:
            self.unet(noisy.to(self.device, self.dtype), t.to(self.device),
                      encoder_hidden_states=text, return_dict=False)  # fmt: skip
            cross = [(n, a[0].numpy()) for n, a in self.store.cross]
            selfs = [(n, a[0].numpy()) for n, a in self.store.self_attn]
        finally:
            self.store.active = False
            self.store.clear()
        return CapturedAttention(
            prompt=prompt, token_groups=groups, latent_hw=tuple(latents.shape[-2:]),
            cross=[a for _, a in cross], cross_names=[n for n, _ in cross],
            self_attn=[a for _, a in selfs], self_names=[n for n, _ in selfs],
        )  # fmt: skip

    # -- segmentation -------------------------------------------------------------------------

    def segment(self, image: np.ndarray, classes: list[str], threshold: float = 0.3,
                sar: bool = True, timestep: int = 1, seed: int = 0,
                resolution: int | None = None,
                layer_weights: LayerWeights | None = None) -> AttentionSegmentation:  # fmt: skip
        """Segment ``image`` (H, W, 3) uint8 into ``classes`` with no training.

        Without a class named ``background`` one is added first (label 0) for pixels whose
        best class score is below ``threshold``; the given classes are labels 1..C. With one,
        labels index ``classes`` directly (plain argmax). ``sar`` turns the self-attention
        refinement on; ``timestep`` and ``seed`` fix the noise added to the latent.
        ``layer_weights`` (:func:`~segrefine.attention.fit_layer_weights`, StableSeg++)
        weight the cross-attention layers instead of averaging them.
        """
        if not 0.0 <= float(threshold) <= 1.0:
            raise InputError(f"threshold {threshold} is outside [0, 1]")
        names = check_classes(classes)
        cap = self.capture(image, list(names), timestep=timestep, seed=seed,
                           resolution=resolution)  # fmt: skip
        return segment_captured(cap, names, image.shape[:2], threshold=threshold, sar=sar,
                                layer_weights=layer_weights)  # fmt: skip


def segment_captured(
    cap: CapturedAttention, classes: tuple[str, ...], size: tuple[int, int],
    threshold: float = 0.3, sar: bool = True, layer_weights: LayerWeights | None = None,
) -> AttentionSegmentation:
    """The segmentation (at ``size``) of one recorded pass, whose prompt named ``classes``:
    what :meth:`AttentionModel.segment` returns, without running the U-Net again."""
    weights = None if layer_weights is None else layer_weights.vector(cap.cross_names)
    cross = M.aggregate_cross(cap.cross, cap.token_groups, cap.latent_hw, weights=weights)
    class_maps = cross
    if sar:
        averaged = M.average_self_attention(cap.self_attn, cap.latent_hw)
        if averaged is not None:  # no layer small enough: the cross maps are used as is
            class_maps = M.refine_with_self_attention(cross, *averaged)
    has_background = BACKGROUND in (n.lower() for n in classes)
    labels, probs = M.labels_and_probs(class_maps, tuple(size), float(threshold),
                                       has_background=has_background)  # fmt: skip
    class_names = tuple(classes) if has_background else (BACKGROUND, *classes)
    return AttentionSegmentation(labels=labels, probs=probs, class_names=class_names,
                                 cross=cross)  # fmt: skip
