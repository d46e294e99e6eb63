"""From recorded attention to class maps and labels: pure functions on NumPy arrays.

Nothing here knows about diffusers; each step of the method (cross-attention aggregation,
self-attention refinement, labelling) can be fed planted arrays and checked exactly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def layer_grid(hw: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) grid of a layer with ``hw`` positions, for a latent of ``latent_hw``.

    The U-Net halves the latent (rounding up, as its strided convolutions do) at each level,
    so the grid is the latent divided by the first power of two whose area matches.
    """
    f = 1
    while True:
        h, w = -(-latent_hw[0] // f), -(-latent_hw[1] // f)  # ceil, as stride-2 convs give
        if h * w == hw:
            return h, w
        if h * w < hw or (h == 1 and w == 1):
            break
        f *= 2
    raise ValueError(f"{hw} positions fit no downsampling of a {latent_hw} latent")


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (C, h, w) maps to (C, *size); a no-op (same values) at equal size."""
    maps = np.asarray(maps, dtype=np.float32)
    if tuple(maps.shape[1:]) == tuple(size):
        return maps.copy()
    t = torch.from_numpy(maps)[None]
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)[0].numpy()


def normalise_max(maps: np.ndarray) -> np.ndarray:
    """Scale each class map to a maximum of 1 (maps that are all zero stay zero)."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None]


def layer_class_maps(
    layer: np.ndarray, token_groups: Sequence[Sequence[int]], grid: tuple[int, int],
) -> np.ndarray:
    """One cross-attention layer (HW, tokens) as class maps (C, *grid): each class is the
    mean of its tokens' columns (a multi-word class is the mean of its words)."""
    per_class = np.stack([layer[:, list(tokens)].mean(axis=1) for tokens in token_groups])
    return per_class.reshape(-1, *grid)


def check_layer_weights(weights, n_layers: int) -> np.ndarray:
    """``weights`` as float32 summing to 1: one per layer, finite, non-negative, not all 0."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if len(w) != n_layers:
        raise ValueError(f"{len(w)} layer weights for {n_layers} cross-attention layers")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("layer weights must be finite, non-negative and not all zero")
    return (w / w.sum()).astype(np.float32)


def aggregate_cross(
    layers: Sequence[np.ndarray], token_groups: Sequence[Sequence[int]],
    latent_hw: tuple[int, int], weights: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Class maps (C, h, w) from cross-attention layers, each (HW, tokens).

    For each class the layer's columns of its tokens are averaged (a multi-word class is the
    mean of its words), every layer is resized to the finest grid among them and the layers
    are averaged -- or, with ``weights`` (one per layer, non-negative; normalised to sum 1
    here), weighted; each class map is then scaled to a maximum of 1.
    """
    if not layers:
        raise ValueError("no cross-attention layers to aggregate")
    w = None if weights is None else check_layer_weights(weights, len(layers))
    grids = [layer_grid(layer.shape[0], latent_hw) for layer in layers]
    target = max(grids, key=lambda g: g[0] * g[1])
    total = np.zeros((len(token_groups), *target), dtype=np.float32)
    for i, (layer, grid) in enumerate(zip(layers, grids, strict=True)):
        resized = resize_maps(layer_class_maps(layer, token_groups, grid), target)
        # the unweighted sum then one division is the plain mean, kept bit for bit as it was
        total += resized if w is None else w[i] * resized
    return normalise_max(total / len(layers) if w is None else total)


def average_self_attention(
    layers: Sequence[np.ndarray], latent_hw: tuple[int, int],
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The mean self-attention (R^2, R^2) at the most common grid among ``layers`` (ties go
    to the finer grid), and that grid; None without layers. Self-attention matrices of other
    grids cannot be averaged in without resampling both of their axes, so they are left out.
    """
    if not layers:
        return None
    counts = Counter(layer.shape[0] for layer in layers)
    hw = max(counts, key=lambda n: (counts[n], n))
    chosen = [np.asarray(layer, dtype=np.float32) for layer in layers if layer.shape[0] == hw]
    return np.mean(chosen, axis=0), layer_grid(hw, latent_hw)


def refine_with_self_attention(
    maps: np.ndarray, affinity: np.ndarray, grid: tuple[int, int],
) -> np.ndarray:
    """Self-attention refinement: maps resized to ``grid``, then ``affinity @ maps`` (each
    position becomes the attention-weighted mean of the positions it attends to), then each
    class scaled back to a maximum of 1. An identity ``affinity`` changes nothing."""
    n = grid[0] * grid[1]
    if affinity.shape != (n, n):
        raise ValueError(f"affinity {affinity.shape} does not match the {grid} grid")
    flat = resize_maps(maps, grid).reshape(len(maps), n)  # (C, R^2)
    refined = (affinity.astype(np.float32) @ flat.T).T
    return normalise_max(refined.reshape(len(maps), *grid))


def labels_and_probs(
    maps: np.ndarray, size: tuple[int, int], threshold: float = 0.3,
    has_background: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (H, W) uint8 and per-pixel probabilities (K, H, W) float32 from class maps.

    The maps (C, h, w, each in [0, 1]) are upsampled bilinearly to ``size``. When the classes
    include a background class (``has_background``) the label is the plain argmax and
    K = C. Otherwise a background channel of constant ``threshold`` is put first (K = C + 1):
    a pixel whose best score is below ``threshold`` is background (0), else its best class
    (1..C). The probabilities are the channels divided by their per-pixel sum.
    """
    scores = np.clip(resize_maps(maps, size), 0.0, 1.0)
    if has_background:
        channels, labels = scores, scores.argmax(axis=0)
    else:
        best = scores.max(axis=0)
        labels = np.where(best < threshold, 0, scores.argmax(axis=0) + 1)
        channels = np.concatenate([np.full((1, *size), threshold, np.float32), scores])
    total = channels.sum(axis=0, keepdims=True)
    # a pixel where every channel is 0 (threshold 0, no class anywhere) gets a uniform vector
    probs = np.where(total > 0, channels / np.where(total > 0, total, 1.0), 1.0 / len(channels))
    return labels.astype(np.uint8), probs.astype(np.float32)
