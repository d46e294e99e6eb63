"""Tensor conversion and training augmentation.

Augmentation works on a whole batch at once with one affine warp per image (``grid_sample``),
so it costs little next to the network on a CPU. All its randomness comes from the
``numpy.random.Generator`` passed in, which the trainer seeds from (seed, epoch, batch): a run
resumed from a checkpoint therefore sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .io import VOID

# Images enter every network as (x / 255 - MEAN) / STD: roughly zero-centred, unit-scaled.
MEAN = 0.5
STD = 0.25


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) or (H, W, 3) -> normalised float (N, 3, H, W)."""
    if images.ndim == 3:
        images = images[None]
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float()
    return (x / 255.0 - MEAN) / STD


def resize_probs(probs: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Probabilities (C, h, w) resized bilinearly to ``shape`` (H, W) and renormalised so each
    pixel still sums to 1; returned as they are when already that size."""
    if tuple(probs.shape[1:]) == tuple(shape):
        return probs
    r = F.interpolate(probs[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
    return r / r.sum(0, keepdim=True)


def pad_to_multiple(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Pad (..., H, W) at the bottom and right to multiples of ``stride`` (reflected, or
    replicated where the image is too small to reflect); crop back with ``[..., :H, :W]``."""
    h, w = x.shape[-2:]
    pad = (0, -w % stride, 0, -h % stride)
    if not any(pad):
        return x
    return F.pad(x, pad, mode="reflect" if min(h, w) > max(pad) else "replicate")


# The working size keeps the aspect ratio with the short side at the training size, so its
# pixel count is size^2 x (long side / short side): nothing else bounds it, and a 1 x 1000
# PNG of 299 bytes became a 128 x 128000 working image (6-7 GB). Bounding the ratio bounds the
# working size at MAX_ASPECT training squares (1.6e5 px at size 128, 2.6 MP at 512) however
# small the file. 10:1 keeps every real photo: phone and 360-degree panoramas are 2:1 to
# about 8:1; beyond that an image is a strip, better cropped or split by its owner.
MAX_ASPECT = 10


def working_size(shape: tuple[int, int], size: int,
                 path: str | Path | None = None) -> tuple[int, int]:  # fmt: skip
    """(h, w) at which a model trained on ``size``-px squares sees an image of ``shape``: the
    aspect ratio kept and the short side at ``size`` (training resized each image's central
    square to ``size``, so objects keep the scale they had in training). An image with no
    pixels or longer than :data:`MAX_ASPECT` times its width (or wider) is an input error
    naming ``path``, raised before any work."""
    h, w = shape[:2]
    check_aspect((h, w), size, path)
    scale = size / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def check_aspect(shape: tuple[int, int], size: int, path: str | Path | None = None) -> None:
    """Refuse an image of ``shape`` (H, W) whose working size would exceed
    :data:`MAX_ASPECT` training squares of ``size`` px (see there). The test is on the ratio
    alone, so an image that passes for one model passes for every other."""
    h, w = (int(v) for v in shape[:2])
    if min(h, w) < 1:
        raise InputError(f"image is {w}x{h}: it has no pixels", path)
    if max(h, w) > MAX_ASPECT * min(h, w):
        long = size * max(h, w) // min(h, w)
        wh = f"{long}x{size}" if w > h else f"{size}x{long}"
        raise InputError(f"image is {w}x{h}, an aspect ratio of {max(h, w) / min(h, w):.4g}:1; "
                         f"a model works on it at {wh} = {long * size / 1e6:.1f} MP (short side "
                         f"{size} px), so at most {MAX_ASPECT}:1 is accepted: crop or split "
                         "it", path)  # fmt: skip


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`to_tensor`: normalised float (N, 3, H, W) -> uint8 (N, H, W, 3)."""
    img = ((x * STD + MEAN) * 255.0).clamp(0, 255).round().byte()
    return img.permute(0, 2, 3, 1).cpu().numpy()


@dataclass
class AugmentConfig:
    """What the training augmentation may do (all switchable)."""

    flip: bool = True
    scale: tuple[float, float] = (0.75, 1.25)  # random zoom; (1, 1) disables scale/crop
    max_shift: float = 0.15  # random crop position, as a fraction of the image side
    color_jitter: float = 0.2  # brightness, contrast and saturation each in [1-j, 1+j]


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly flip, scale/crop and colour-jitter a batch.

    ``images``: normalised float (B, 3, H, W); ``masks``: long (B, H, W). Pixels that a zoom-out
    brings in from outside the image become void in the mask (they carry no label) and
    mid-grey in the image.
    """
    config = config or AugmentConfig()
    b = images.shape[0]
    scale = rng.uniform(*config.scale, size=b)
    flip = rng.random(b) < 0.5 if config.flip else np.zeros(b, dtype=bool)
    shift = rng.uniform(-config.max_shift, config.max_shift, size=(b, 2))
    jitter = rng.uniform(1 - config.color_jitter, 1 + config.color_jitter, size=(b, 3))

    if config.scale != (1.0, 1.0) or config.flip or config.max_shift > 0:
        # theta maps output coordinates to input ones: zooming in by s samples a 1/s window.
        theta = np.zeros((b, 2, 3), dtype=np.float32)
        theta[:, 0, 0] = np.where(flip, -1.0, 1.0) / scale
        theta[:, 1, 1] = 1.0 / scale
        # keep the crop window inside the image when zooming in, free when zooming out
        room = np.abs(1.0 - 1.0 / scale)
        theta[:, :, 2] = np.clip(shift * 2, -room[:, None], room[:, None])
        grid = F.affine_grid(torch.from_numpy(theta), list(images.shape), align_corners=False)
        images = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        # shift mask ids by one so that padding (0) is recognisable as "outside" -> void
        m = F.grid_sample(
            (masks + 1).unsqueeze(1).float(),
            grid,
            mode="nearest",
            padding_mode="zeros",
            align_corners=False,
        )
        masks = m.squeeze(1).long() - 1
        masks[masks < 0] = VOID

    if config.color_jitter > 0:
        j = torch.from_numpy(jitter.astype(np.float32))
        rgb = images * STD + MEAN  # back to [0, 1] for the photometric changes
        rgb = rgb * j[:, 0].view(b, 1, 1, 1)  # brightness
        mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
        rgb = (rgb - mean) * j[:, 1].view(b, 1, 1, 1) + mean  # contrast
        gray = rgb.mean(dim=1, keepdim=True)
        rgb = (rgb - gray) * j[:, 2].view(b, 1, 1, 1) + gray  # saturation
        images = (rgb.clamp(0, 1) - MEAN) / STD
    return images, masks
