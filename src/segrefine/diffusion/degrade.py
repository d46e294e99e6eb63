"""The degradation generator: realistic coarse masks made from ground truth.

A refiner learns to correct the kind of errors it sees in training. Segmenters make a few
kinds: boundaries that are too smooth, too fat or too thin; thin parts lost; whole regions
missed; false-positive blobs on look-alike texture; one class confused with another. The
:func:`degrade` function produces each kind at random from a ground-truth mask and returns
*soft* probabilities, with confidence that varies over the image as a real segmenter's does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..data.io import VOID


@dataclass
class DegradeConfig:
    """How often and how strongly each error kind is applied (probabilities per image)."""

    p_morph: float = 0.6  # erode or dilate one class
    max_radius: int = 4  # ... by up to this many pixels
    p_jitter: float = 0.7  # smooth random displacement of all boundaries
    max_jitter: float = 4.0  # pixels of displacement (amplitude)
    p_coarse: float = 0.4  # compute the mask at 1/4..1/8 resolution (blobby boundaries)
    p_delete: float = 0.4  # remove a connected region, or cut a hole into one
    p_insert: float = 0.4  # add a false-positive blob of some class
    p_swap: float = 0.3  # relabel a region as another non-background class (3+ classes)
    blur: tuple[float, float] = (0.5, 3.0)  # Gaussian blur of the one-hot map, pixels
    temperature: tuple[float, float] = (0.5, 1.5)  # < 1 sharpens, > 1 softens
    noise: float = 1.0  # amplitude of smooth logit noise (spatially varying confidence)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def _random_blob(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random smooth blob covering ~1-10% of the image."""
    h, w = shape
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    ry, rx = rng.uniform(0.05, 0.2) * h, rng.uniform(0.05, 0.2) * w
    yy, xx = np.mgrid[0:h, 0:w]
    r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    wobble = 0.4 * _smooth_field(rng, shape, max(h, w) / 16)
    return r + wobble < 1.0


def _pick_region(rng: np.random.Generator, labels: np.ndarray, classes) -> np.ndarray | None:
    """A random connected region of one of ``classes`` (None when there is none)."""
    present = [c for c in classes if (labels == c).any()]
    if not present:
        return None
    cls = present[rng.integers(len(present))]
    comp, n = ndimage.label(labels == cls)
    return comp == rng.integers(1, n + 1)


def degrade_labels(
    mask: np.ndarray, num_classes: int, rng: np.random.Generator, cfg: DegradeConfig | None = None
) -> np.ndarray:
    """A plausibly wrong hard label map (H, W) made from ``mask`` (void is treated as class 0)."""
    cfg = cfg or DegradeConfig()
    labels = np.where(mask == VOID, 0, mask).astype(np.int64)
    h, w = labels.shape
    fg = list(range(1, num_classes))

    if rng.random() < cfg.p_coarse:
        f = int(rng.choice([4, 6, 8]))
        small = (max(h // f, 2), max(w // f, 2))
        onehot = np.stack([(labels == c).astype(np.float32) for c in range(num_classes)])
        zoom = [(1, small[0] / h, small[1] / w), (1, h / small[0], w / small[1])]
        coarse = ndimage.zoom(ndimage.zoom(onehot, zoom[0], order=1), zoom[1], order=1)
        labels = coarse[:, :h, :w].argmax(0)
    if rng.random() < cfg.p_morph and fg:
        cls = int(rng.choice(fg))
        r = int(rng.integers(1, cfg.max_radius + 1))
        disk = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
        region = labels == cls
        if rng.random() < 0.5:
            grown = ndimage.binary_dilation(region, disk)
            labels[grown] = cls
        else:
            shrunk = ndimage.binary_erosion(region, disk)
            labels[region & ~shrunk] = 0
    if rng.random() < cfg.p_jitter:
        amp = rng.uniform(0.5, cfg.max_jitter)
        sigma = rng.uniform(3, 10)
        dy = amp * _smooth_field(rng, (h, w), sigma)
        dx = amp * _smooth_field(rng, (h, w), sigma)
        yy, xx = np.mgrid[0:h, 0:w]
        labels = ndimage.map_coordinates(labels, [yy + dy, xx + dx], order=0, mode="nearest")
    if rng.random() < cfg.p_delete and fg:
        region = _pick_region(rng, labels, fg)
        if region is not None:
            if rng.random() < 0.5:
                region = region & _random_blob(rng, (h, w))  # a hole, not the whole region
            labels[region] = 0
    if rng.random() < cfg.p_insert and fg:
        labels[_random_blob(rng, (h, w))] = int(rng.choice(fg))
    if rng.random() < cfg.p_swap and len(fg) >= 2:
        region = _pick_region(rng, labels, fg)
        if region is not None:
            labels[region] = int(rng.choice(fg))
    return labels


def soften(
    labels: np.ndarray, num_classes: int, rng: np.random.Generator, cfg: DegradeConfig | None = None
) -> np.ndarray:
    """Hard labels -> soft probabilities (C, H, W) with a segmenter-like confidence pattern:
    blurred at boundaries, and randomly more or less sure in smooth patches of the image."""
    cfg = cfg or DegradeConfig()
    onehot = np.stack([(labels == c).astype(np.float32) for c in range(num_classes)])
    sigma = rng.uniform(*cfg.blur)
    onehot = np.stack([ndimage.gaussian_filter(ch, sigma) for ch in onehot])
    logits = np.log(onehot + 1e-3) / rng.uniform(*cfg.temperature)
    if cfg.noise > 0:
        shape = labels.shape
        logits += cfg.noise * np.stack(
            [_smooth_field(rng, shape, rng.uniform(4, 16)) for _ in range(num_classes)]
        )
    logits -= logits.max(0, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def degrade(
    mask: np.ndarray, num_classes: int, rng: np.random.Generator, cfg: DegradeConfig | None = None
) -> np.ndarray:
    """Make a realistic coarse *probability* map (C, H, W) from a ground-truth mask (H, W).

    This is how segrefine makes the coarse inputs a refiner learns from when no segmenter
    predictions are given (and half of them when they are). In order, each with its
    probability from ``cfg``:

    1. coarse resolution: the mask is downsampled 4-8x and upsampled (over-smooth boundaries);
    2. erosion or dilation of one class by 1..``max_radius`` pixels (too thin / too fat);
    3. boundary jitter: every boundary moved by a smooth random displacement field;
    4. deletion of one connected region of a class, or of a blob-shaped hole in it (misses);
    5. insertion of a random blob of a random class (false positives);
    6. class swap: one region relabelled as another foreground class (3+ classes only).

    The result is then softened (:func:`soften`): Gaussian blur, a random temperature, and
    smooth random logit noise, so confidence varies over the image. Void pixels count as
    background. Deterministic for a given ``rng`` state.

    >>> probs = degrade(mask, 2, np.random.default_rng(0))      # doctest: +SKIP
    """
    return soften(degrade_labels(mask, num_classes, rng, cfg), num_classes, rng, cfg)
