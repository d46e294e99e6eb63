"""Probability maps, stochastic one-hot maps, and soft probabilities from hard masks.

All label maps inside the refiner live in the diffusion model's space: one channel per class,
values in [-1, 1], the chosen class +1 and every other class -1 (the paper's encoding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..data.io import VOID
from ..data.transforms import resize_probs
from ..errors import InputError


def stochastic_onehot(
    probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one label per pixel from ``probs`` (B, C, H, W) and encode it as +1 / -1 channels.

    This is the paper's starting point: a *sample* of the segmenter's belief, not its argmax,
    so repeated draws explore the pixels the segmenter is unsure about.
    """
    b, c, h, w = probs.shape
    # inverse-CDF sampling: one uniform number v per pixel; the label is the first class whose
    # cumulative probability reaches v. `reached` is 0...0 1...1 along the classes (the last
    # cumulative sum is the total, so it always ends in 1), and its first difference is the
    # one-hot of that label: three dense passes instead of a count, one_hot and a permute
    # (several times faster with 11 classes, same draws)
    u = torch.rand((b, 1, h, w), generator=generator, device=probs.device)
    cdf = probs.clamp_min(0).cumsum(1)
    reached = (u * cdf[:, -1:] <= cdf).float()
    reached[:, 1:] -= reached[:, :-1].clone()
    return reached.mul_(2).sub_(1)


def labels_to_signed(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Long labels (B, H, W) -> (B, C, H, W) float with +1 on the label's channel, -1 elsewhere.

    Void pixels (255) get 0 on every channel: no class is claimed there.
    """
    void = labels == VOID
    onehot = F.one_hot(labels.clamp(0, num_classes - 1).masked_fill(void, 0), num_classes)
    signed = onehot.permute(0, 3, 1, 2).float() * 2 - 1
    return signed.masked_fill(void.unsqueeze(1), 0.0)


def probs_from_labels(
    labels: np.ndarray, num_classes: int, confidence: float = 0.9, sigma: float = 1.0
) -> np.ndarray:
    """Soft probabilities (C, H, W) for a hard label mask, when that is all a user has.

    Each class's indicator is averaged with its Gaussian blur of ``sigma`` pixels (so confidence
    drops near boundaries, where masks are least reliable, while the mask's class stays the
    most likely everywhere) and then mixed with the uniform distribution:
    ``p = confidence * soft + (1 - confidence) / C``. Far from a boundary the
    mask's class therefore gets ``confidence + (1 - confidence) / C`` (0.95 for two classes at
    the defaults). Void pixels (255) become uniform.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"a label mask must be 2-D, got shape {labels.shape}")
    valid = labels != VOID
    if valid.any() and labels[valid].max() >= num_classes:
        raise InputError(
            f"label mask has class id {int(labels[valid].max())} but the refiner"
            f" knows {num_classes} classes"
        )
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(num_classes)])
    onehot[:, ~valid] = 1.0 / num_classes
    if sigma > 0:
        # half the indicator, half its blur: softer near boundaries, argmax always kept
        blurred = np.stack([ndimage.gaussian_filter(ch, sigma, mode="nearest") for ch in onehot])
        onehot = 0.5 * onehot + 0.5 * blurred
    onehot /= onehot.sum(0, keepdims=True)
    return (confidence * onehot + (1.0 - confidence) / num_classes).astype(np.float32)


def check_probs(
    probs: np.ndarray,
    num_classes: int,
    shape: tuple[int, int] | None = None,
    path: str | Path | None = None,
    atol: float = 1e-2,
) -> np.ndarray:
    """Validate a (C, H, W) probability map: class count, size, range and sum to 1.

    Saved maps are often float16, so sums are checked to ``atol``; the result is float32,
    renormalised exactly.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise InputError(f"probability map must be C x H x W, got shape {probs.shape}", path)
    if probs.shape[0] != num_classes:
        raise InputError(
            f"probability map has {probs.shape[0]} classes but the refiner was "
            f"trained for {num_classes}",
            path,
        )
    if shape is not None and probs.shape[1:] != tuple(shape):
        raise InputError(
            f"probability map is {probs.shape[2]}x{probs.shape[1]} but its image "
            f"is {shape[1]}x{shape[0]}",
            path,
        )
    probs = probs.astype(np.float32)
    if not np.isfinite(probs).all() or probs.min() < -1e-4 or probs.max() > 1 + 1e-4:
        raise InputError("probability map has values outside [0, 1]", path)
    sums = probs.sum(0)
    if np.abs(sums - 1).max() > atol:
        raise InputError(
            f"probabilities do not sum to 1 over classes (sums range "
            f"{sums.min():.3f}..{sums.max():.3f}); pass softmax outputs",
            path,
        )
    probs = probs.clip(0, 1)
    return probs / probs.sum(0, keepdims=True)


def check_size(given_hw: tuple[int, int], shape: tuple[int, int], what: str = "coarse input",
               path: str | Path | None = None) -> None:  # fmt: skip
    """A coarse input of size ``given_hw`` for an image of ``shape`` (both H, W) is its size,
    or smaller with the same aspect ratio (within 2%); anything else is an input error."""
    (h, w), (H, W) = given_hw, shape
    if (h, w) != (H, W) and (h > H or w > W or abs((h / w) / (H / W) - 1) > 0.02):
        raise InputError(f"{what} is {w}x{h} but its image is {W}x{H} (a coarse input may "
                         f"be smaller than its image, with the same aspect ratio)", path)


def check_coarse(coarse, shape: tuple[int, int], num_classes: int | None) -> None:
    """Everything :func:`prior_for_image` would refuse in a
    :class:`~segrefine.data.coarse.Coarse` for an image of ``shape``, found without the work
    (``num_classes`` None: any, as a class-agnostic refiner takes them)."""
    what = "label mask" if coarse.hard else "probability map"
    check_size(coarse.shape, shape, what, coarse.path)
    if coarse.probs is not None:
        check_probs(coarse.probs, num_classes or coarse.probs.shape[0], path=coarse.path)


def prior_for_image(
    shape: tuple[int, int],
    num_classes: int,
    probs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    path: str | Path | None = None,
) -> np.ndarray:
    """The coarse input for an image of ``shape`` (H, W) as float32 probabilities (C, H, W).

    ``probs`` are checked (:func:`check_probs`); hard ``labels`` are softened
    (:func:`probs_from_labels`). Either may be at a lower resolution than the image, with the
    same aspect ratio (within 2%): it is then upsampled bilinearly and renormalised, a mask
    after softening, so its boundaries come out smooth rather than blocky. A larger input or
    another aspect ratio is an input error naming both sizes.
    """
    given = probs if probs is not None else labels
    h, w = np.asarray(given).shape[-2:]
    H, W = shape
    check_size((h, w), shape, "probability map" if probs is not None else "label mask", path)
    if probs is not None:
        p = check_probs(probs, num_classes, path=path)
    else:
        p = probs_from_labels(np.asarray(labels), num_classes)
    if (h, w) == (H, W):
        return p
    return resize_probs(torch.from_numpy(np.ascontiguousarray(p)), (H, W)).numpy()
