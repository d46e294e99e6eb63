"""Label-free segmentation from a diffusion U-Net's self-attention (DiffSeg, no text, no training).

DiffSeg (Tian et al., "Diffuse, Attend, and Segment", CVPR 2024) reads each row of a
self-attention matrix as a probability distribution over image positions: positions of one
object attend to that object. The steps, each a pure function on arrays here:

1. :func:`aggregate_self_attention`: the recorded layers (grids of different sizes) are
   brought to the finest grid among them (key axes resized bilinearly and each row renormalised,
   query axes repeated) and averaged, weighting a layer by its grid side (DiffSeg's
   proportional weights) or equally.
2. :func:`merge_attention`: the rows at an m x m grid of anchor positions start the proposals;
   in the first round each anchor becomes the mean of every row whose symmetric KL divergence
   to it is below ``tau``; each later round merges proposals closer than ``tau`` (greedily, in
   order, each proposal joining one group) into their mean.
3. :func:`labels_from_maps`: the merged maps are upsampled to the image size and each pixel
   takes the map that is largest there (DiffSeg's non-maximum suppression); segment ids are
   renumbered 0..K-1 in raster order of first appearance.

:func:`diffseg_segment` runs these on one U-Net pass of a loaded
:class:`~segrefine.attention.AttentionModel` under the empty prompt (DiffSeg's unconditional
pass: the clean image latent at timestep 300); :func:`diffseg_method` loads a model folder once
and returns an ``image -> labels`` callable for the BSDS500 benchmark. The optional K-means
refinement of the original is not implemented.

Memory: only the self-attention layers the model records are used (``max_self_tokens``: the
32 x 32 and coarser layers of SD at 512 px), so the aggregated matrix is (N, N) with N <= that
bound (the merging holds a few such arrays in float64: 8 MB each at N = 1024), and the merged
maps are upsampled to the image size a few at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .maps import layer_grid, resize_maps

__all__ = [
    "DiffSegMethod",
    "aggregate_self_attention",
    "anchor_positions",
    "capture_self_attention",
    "diffseg_method",
    "diffseg_segment",
    "labels_from_maps",
    "merge_attention",
    "segment_from_self_attention",
    "symmetric_kl",
]

EPS = 1e-12  # floor under probabilities before their log (planted maps hold exact zeros)
WEIGHTINGS = ("resolution", "uniform")


# -- 1. aggregation -------------------------------------------------------------------------------


def aggregate_self_attention(
    layers: Sequence[np.ndarray], latent_hw: tuple[int, int], weighting: str = "resolution",
) -> tuple[np.ndarray, tuple[int, int]]:
    """One (N, N) self-attention matrix at the finest grid among ``layers`` (each (n, n), rows
    over key positions), and that grid (N = h * w).

    A coarser layer's rows are resized bilinearly over the key axes to the target grid and
    renormalised to sum to 1; its query positions are repeated (nearest) onto the target grid.
    ``weighting`` "resolution" weights each layer by its grid side (as DiffSeg does: larger
    grids count more), "uniform" averages the layers. Rows of the result sum to 1.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not layers:
        raise ValueError("no self-attention layers to aggregate")
    for layer in layers:
        if layer.ndim != 2 or layer.shape[0] != layer.shape[1]:
            raise ValueError(f"a self-attention layer must be square (n, n), got {layer.shape}")
    grids = [layer_grid(layer.shape[0], latent_hw) for layer in layers]
    target = max(grids, key=lambda g: g[0] * g[1])
    n_target = target[0] * target[1]
    raw = np.array([np.sqrt(g[0] * g[1]) if weighting == "resolution" else 1.0 for g in grids])
    weights = raw / raw.sum()
    total = np.zeros((n_target, n_target), dtype=np.float32)
    for layer, grid, weight in zip(layers, grids, weights, strict=True):
        layer = np.asarray(layer, dtype=np.float32)
        if grid != target:
            n = grid[0] * grid[1]
            keys = resize_maps(layer.reshape(n, *grid), target).reshape(n, n_target)
            keys = np.clip(keys, 0.0, None)
            keys /= np.maximum(keys.sum(axis=1, keepdims=True), EPS)
            # queries: (n_target, h, w) -> nearest onto the target grid -> (n_target, N)
            queries = torch.from_numpy(np.ascontiguousarray(keys.T)).reshape(1, n_target, *grid)
            layer = F.interpolate(queries, size=target, mode="nearest")[0]
            layer = layer.reshape(n_target, n_target).T.numpy()
        total += np.float32(weight) * layer
    total /= np.maximum(total.sum(axis=1, keepdims=True), EPS)
    return total, target


# -- 2. merging -----------------------------------------------------------------------------------


def anchor_positions(grid: tuple[int, int], anchors: int) -> np.ndarray:
    """Flat indices of an ``anchors`` x ``anchors`` grid of positions on ``grid`` (fewer along
    an axis shorter than ``anchors``), evenly spaced by a whole step and centred, as DiffSeg's
    sampling grid (16 anchors on 64 positions: 1, 5, ..., 61)."""
    if int(anchors) < 1:
        raise ValueError(f"anchors must be at least 1, got {anchors}")

    def axis(side: int) -> np.ndarray:
        m = min(int(anchors), side)
        if m == 1:
            return np.array([(side - 1) // 2])
        step = (side - 1) // (m - 1)
        start = (side - 1 - step * (m - 1)) // 2
        return start + step * np.arange(m)

    rows, cols = axis(grid[0]), axis(grid[1])
    return (rows[:, None] * grid[1] + cols[None, :]).ravel()


def symmetric_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(A, B) symmetric KL divergences 0.5 * (KL(p_a || q_b) + KL(q_b || p_a)) between the rows
    of ``p`` (A, N) and of ``q`` (B, N), in nats, in float64; zeros are floored at 1e-12."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    log_p, log_q = np.log(np.maximum(p, EPS)), np.log(np.maximum(q, EPS))
    # 0.5 * sum_i (p_i - q_i)(log p_i - log q_i), expanded into matrix products
    self_p = np.einsum("an,an->a", p, log_p)
    self_q = np.einsum("bn,bn->b", q, log_q)
    kl = 0.5 * (self_p[:, None] + self_q[None, :] - p @ log_q.T - log_p @ q.T)
    return np.maximum(kl, 0.0)


def _thresholds(tau: float | Sequence[float], iterations: int) -> list[float]:
    if int(iterations) < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    taus = [float(tau)] * int(iterations) if np.isscalar(tau) else [float(t) for t in tau]
    if len(taus) != int(iterations):
        raise ValueError(f"{len(taus)} thresholds given for {iterations} iterations")
    if not all(np.isfinite(t) and t > 0 for t in taus):
        raise ValueError(f"tau must be positive and finite, got {tau}")
    return taus


def merge_attention(
    attn: np.ndarray, grid: tuple[int, int], anchors: int | np.ndarray = 16,
    tau: float | Sequence[float] = 1.1, iterations: int = 3,
) -> np.ndarray:
    """DiffSeg's iterative attention merging: (K, h, w) merged maps from ``attn`` (N, N),
    whose rows are distributions over the N = h * w positions of ``grid``.

    ``anchors``: an int m for an m x m anchor grid (:func:`anchor_positions`), or an array of
    flat position indices. Round 1: each anchor's proposal is the mean of all rows within
    symmetric KL ``tau`` of the anchor's row (its own always included). Rounds 2..``iterations``:
    proposals are visited in order; an unmerged proposal takes every unmerged proposal within
    ``tau`` of it (itself included) and they become their mean, so a round partitions the
    proposals. ``tau`` may also give one threshold per round. Deterministic; rows are
    renormalised to sum to 1 first.
    """
    h, w = int(grid[0]), int(grid[1])
    attn = np.asarray(attn, dtype=np.float64)
    if attn.shape != (h * w, h * w):
        raise ValueError(f"attention {attn.shape} does not match the {(h, w)} grid")
    if not np.all(np.isfinite(attn)) or attn.min() < 0:
        raise ValueError("attention rows must be finite and non-negative")
    taus = _thresholds(tau, iterations)
    attn = attn / np.maximum(attn.sum(axis=1, keepdims=True), EPS)
    if np.isscalar(anchors):
        idx = anchor_positions((h, w), int(anchors))
    else:
        idx = np.asarray(anchors, dtype=np.int64).ravel()
        if idx.size == 0 or idx.min() < 0 or idx.max() >= h * w:
            raise ValueError(f"anchor indices must lie in 0..{h * w - 1}")

    # round 1: anchors against every position
    matched = symmetric_kl(attn[idx], attn) < taus[0]
    matched[np.arange(len(idx)), idx] = True
    maps = (matched.astype(np.float64) @ attn) / matched.sum(axis=1, keepdims=True)

    # later rounds: proposals against each other, greedily in order
    for t in taus[1:]:
        close = symmetric_kl(maps, maps) < t
        used = np.zeros(len(maps), dtype=bool)
        merged = []
        for i in range(len(maps)):
            if used[i]:
                continue
            group = close[i] & ~used
            group[i] = True
            used |= group
            merged.append(maps[group].mean(axis=0))
        maps = np.stack(merged)
    return maps.reshape(-1, h, w).astype(np.float32)


# -- 3. labelling ---------------------------------------------------------------------------------


def labels_from_maps(maps: np.ndarray, size: tuple[int, int], chunk: int = 16) -> np.ndarray:
    """(H, W) int32 segment ids from (K, h, w) maps: bilinear upsampling to ``size``, then
    per pixel the largest map (ties go to the earlier map). The ids are renumbered 0..K'-1 in
    raster order of first appearance (maps that win no pixel leave no id). The maps are
    upsampled ``chunk`` at a time, so memory stays at ``chunk`` image-sized maps."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or len(maps) == 0:
        raise ValueError(f"expected (K, h, w) maps, got {maps.shape}")
    size = (int(size[0]), int(size[1]))
    best = np.full(size, -np.inf, dtype=np.float32)
    labels = np.zeros(size, dtype=np.int64)
    for start in range(0, len(maps), max(1, int(chunk))):
        part = resize_maps(maps[start:start + max(1, int(chunk))], size)
        top = part.argmax(axis=0)
        value = np.take_along_axis(part, top[None], axis=0)[0]
        better = value > best
        best = np.where(better, value, best)
        labels = np.where(better, top + start, labels)
    ids, first = np.unique(labels, return_index=True)
    order = ids[np.argsort(first)]  # ids by first appearance
    lut = np.zeros(len(maps), dtype=np.int32)
    lut[order] = np.arange(len(order), dtype=np.int32)
    return lut[labels]


def segment_from_self_attention(
    layers: Sequence[np.ndarray], latent_hw: tuple[int, int], size: tuple[int, int],
    tau: float | Sequence[float] = 1.1, anchors: int = 16, iterations: int = 3,
    weighting: str = "resolution",
) -> np.ndarray:
    """Aggregate, merge and label: (H, W) = ``size`` int32 segment ids from recorded
    self-attention ``layers`` (each (n, n)) of a latent of ``latent_hw``."""
    attn, grid = aggregate_self_attention(layers, latent_hw, weighting=weighting)
    maps = merge_attention(attn, grid, anchors=anchors, tau=tau, iterations=iterations)
    return labels_from_maps(maps, size)


# -- the model side -------------------------------------------------------------------------------


def _check_params(tau, anchors, iterations, weighting) -> None:
    try:
        _thresholds(tau, iterations)
    except (TypeError, ValueError) as err:
        raise InputError(f"DiffSeg: {err}") from err
    if isinstance(anchors, bool) or not isinstance(anchors, int | np.integer) or anchors < 1:
        raise InputError(f"DiffSeg: anchors must be a positive integer, got {anchors!r}")
    if weighting not in WEIGHTINGS:
        raise InputError(f"DiffSeg: weighting must be one of {WEIGHTINGS}, got {weighting!r}")


@torch.inference_mode()
def capture_self_attention(
    model, image: np.ndarray, prompt: str = "", timestep: int = 300, noise: bool = False,
    seed: int = 0, resolution: int | None = None,
) -> tuple[list[np.ndarray], tuple[int, int]]:
    """One U-Net pass of ``model`` (an :class:`~segrefine.attention.AttentionModel`) on
    ``image`` under ``prompt`` (default empty: no text); returns the recorded self-attention
    layers (each (HW, HW), head-averaged, only those within the model's ``max_self_tokens``)
    and the latent's (h, w).

    ``AttentionModel.capture`` needs class names for its prompt; this is the same pass with a
    free prompt. As in DiffSeg the clean image latent is used at ``timestep`` (300); with
    ``noise`` it is first noised to that timestep with CPU noise seeded by ``seed``.
    """
    resolution = int(resolution or model.resolution)
    model._check(image, timestep, resolution)
    latents = model._latents(image, resolution)
    t = torch.tensor([int(timestep)], dtype=torch.long)
    x = latents
    if noise:
        eps = torch.randn(latents.shape, generator=torch.Generator().manual_seed(int(seed)))
        x = model.scheduler.add_noise(latents.float().cpu(), eps, t)
    text = model._text(prompt)
    store = model.store
    store.clear()
    store.active = True
    try:
        model.unet(x.to(model.device, model.dtype), t.to(model.device),
                   encoder_hidden_states=text, return_dict=False)  # fmt: skip
        layers = [a[0].numpy() for _, a in store.self_attn]
    finally:
        store.active = False
        store.clear()
    return layers, (int(latents.shape[-2]), int(latents.shape[-1]))


def diffseg_segment(
    model, image: np.ndarray, tau: float | Sequence[float] = 1.1, anchors: int = 16,
    iterations: int = 3, seed: int = 0, timestep: int = 300, noise: bool = False,
    weighting: str = "resolution", resolution: int | None = None,
) -> np.ndarray:
    """Segment ``image`` (H, W, 3) uint8 with no text and no training: (H, W) int32 segment
    ids 0..K-1 (no classes) from ``model``'s self-attention under the empty prompt.

    ``tau``: the symmetric-KL merging threshold (larger -> fewer segments); ``anchors``: the
    side of the anchor grid; ``iterations``: merging rounds (the first from the anchors);
    ``timestep``/``noise``/``seed``: the U-Net pass (:func:`capture_self_attention`).
    """
    _check_params(tau, anchors, iterations, weighting)
    layers, latent_hw = capture_self_attention(
        model, image, timestep=timestep, noise=noise, seed=seed, resolution=resolution)
    if not layers:
        raise InputError(f"DiffSeg: the model recorded no self-attention layer (none has at "
                         f"most max_self_tokens={model.store.max_self_tokens} positions; "
                         f"raise it or lower the resolution)")  # fmt: skip
    return segment_from_self_attention(layers, latent_hw, image.shape[:2], tau=tau,
                                       anchors=anchors, iterations=iterations,
                                       weighting=weighting)  # fmt: skip


class DiffSegMethod:
    """``image -> labels`` (:func:`diffseg_segment` with fixed settings on one loaded model);
    ``name`` describes it for a results table."""

    def __init__(self, model, **settings):
        self.model = model
        self.settings = settings
        tau = settings.get("tau", 1.1)
        anchors = settings.get("anchors", 16)
        self.name = f"DiffSeg (SD self-attention, tau={tau}, {anchors}x{anchors} anchors)"

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return diffseg_segment(self.model, image, **self.settings)


def diffseg_method(
    model_path: str | Path, device: str = "auto", dtype: torch.dtype | None = None,
    resolution: int | None = None, max_self_tokens: int = 32 * 32,
    tau: float | Sequence[float] = 1.1, anchors: int = 16, iterations: int = 3, seed: int = 0,
    timestep: int = 300, noise: bool = False, weighting: str = "resolution",
) -> DiffSegMethod:
    """Load the Stable Diffusion folder ``model_path`` once (see
    :func:`~segrefine.attention.load_attention_model`) and return a callable
    ``image (H, W, 3) uint8 -> labels (H, W) int32`` for the BSDS500 benchmark. Settings are
    checked before the model is loaded; a bad folder or setting is an ``InputError``."""
    from .load import load_attention_model

    _check_params(tau, anchors, iterations, weighting)
    model = load_attention_model(model_path, device=device, dtype=dtype, resolution=resolution,
                                 max_self_tokens=max_self_tokens)  # fmt: skip
    return DiffSegMethod(model, tau=tau, anchors=anchors, iterations=iterations, seed=seed,
                         timestep=timestep, noise=noise, weighting=weighting)  # fmt: skip
