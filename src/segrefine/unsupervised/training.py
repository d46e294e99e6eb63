"""Training the clustering network of :mod:`.cluster`: inputs at work size (resizing, the
standardised input tensor, scribbles shrunk without losing strokes), superpixel-majority
targets, one SGD step and the loop around it, and the full-size response of the trained
network. :mod:`.reference` trains one network on several images with the same pieces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data.datasets import resize_image, resize_mask
from .baselines import felzenszwalb_segment
from .config import ClusterConfig
from .model import ClusterNet, continuity_loss, scribble_loss, similarity_loss

__all__ = ["full_response", "image_tensor", "shrink_scribbles", "superpixel_targets"]


def _work_size(shape: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    h, w = shape
    if max_side is None or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """An image (bilinear) or an id map of any integer type (nearest) at ``size`` (h, w)."""
    if not nearest:
        return resize_image(arr, size)
    if arr.dtype == np.uint8:
        return resize_mask(arr, size)
    return resize_mask(arr.astype(np.int32), size).astype(arr.dtype)


def image_tensor(image: np.ndarray, coords: bool = False) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, H, W) float, each channel standardised over the image.

    ``coords=True`` appends two channels, y and x, running from -1 to 1 across the image.
    """
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None] / 255.0
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    if not coords:
        return x
    h, w = image.shape[:2]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.cat([x, yy[None, None], xx[None, None]], dim=1)


def shrink_scribbles(scribbles: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scribble map (H, W; -1 = unmarked) at a smaller ``size``, keeping every stroke.

    Nearest-neighbour resizing would drop a one-pixel stroke whenever its row or column is
    not sampled (three times in four at a quarter of the size); here every marked pixel marks
    the pixel it falls into (where strokes collide, the later one in row-major order wins).
    """
    if scribbles.shape == tuple(size):
        return scribbles
    (h_in, w_in), (h, w) = scribbles.shape, size
    out = np.full(size, -1, dtype=scribbles.dtype)
    ys, xs = np.nonzero(scribbles >= 0)
    out[ys * h // h_in, xs * w // w_in] = scribbles[ys, xs]
    return out


def superpixel_targets(
    clusters: torch.Tensor,
    superpixels: torch.Tensor,
    n_sp: int,
    channels: int,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Each pixel's target = the majority cluster of its superpixel (flat int64 tensors).

    ``weights`` (flat float) weight the votes, e.g. to let scribbled pixels decide.
    """
    counts = torch.bincount(
        superpixels * channels + clusters, weights=weights, minlength=n_sp * channels
    )
    return counts.view(n_sp, channels).argmax(dim=1)[superpixels]


@dataclass
class _Problem:
    """One image prepared for training: input tensor and optional targets at work size."""

    x: torch.Tensor
    superpixels: torch.Tensor | None  # flat int64 at work size
    n_sp: int
    scribbles: torch.Tensor | None  # (1, h, w) int64, -1 = unmarked


def _step(net: ClusterNet, opt: torch.optim.Optimizer, p: _Problem, cfg: ClusterConfig) -> int:
    """One SGD step on one image; returns the number of distinct clusters before the step."""
    opt.zero_grad(set_to_none=True)
    response = net(p.x)
    clusters = response.detach().argmax(dim=1)
    target = clusters
    if p.superpixels is not None:
        votes, weights = clusters, None
        if p.scribbles is not None:  # a scribble decides its superpixel's target
            marked = p.scribbles >= 0
            votes = torch.where(marked, p.scribbles, clusters)
            weights = (1.0 + 1e4 * marked.double()).view(-1)
        target = superpixel_targets(
            votes.view(-1), p.superpixels, p.n_sp, response.shape[1], weights
        ).view_as(clusters)
    if p.scribbles is not None:
        marked = p.scribbles >= 0
        loss = cfg.mu_sim * similarity_loss(response, target, weight=(~marked).float())
        loss = loss + cfg.mu_scr * scribble_loss(response, p.scribbles)
    else:
        loss = cfg.mu_sim * similarity_loss(response, target)
    loss = loss + cfg.mu_con * continuity_loss(response)
    loss.backward()
    opt.step()
    return int(torch.unique(clusters).numel())


def _train(
    net: ClusterNet, problems: list[_Problem], cfg: ClusterConfig, progress: bool, min_labels: int
) -> int:
    """The training loop: cycle over the images until few enough labels remain."""
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    net.train()
    it = 0
    bar = tqdm(total=cfg.max_iter, disable=not progress, leave=False, desc="clustering")
    for it in range(cfg.max_iter):
        n_labels = _step(net, opt, problems[it % len(problems)], cfg)
        bar.update(1)
        bar.set_postfix(labels=n_labels, refresh=False)
        if n_labels <= min_labels:
            break
    bar.close()
    return it + 1


def _superpixels(image: np.ndarray, cfg: ClusterConfig) -> np.ndarray:
    return felzenszwalb_segment(image, scale=cfg.sp_scale, min_size=cfg.sp_min_size)


def _prepare(
    image: np.ndarray,
    cfg: ClusterConfig,
    scribbles: np.ndarray | None,
    coords: bool = False,
    superpixels: np.ndarray | None = None,
) -> tuple[_Problem, np.ndarray | None]:
    """Work-size input, superpixels (full size and work size) and scribbles for one image.

    ``superpixels`` (full size) replace the configured ones when given.
    """
    size = _work_size(image.shape[:2], cfg.max_side)
    x = image_tensor(_resize(image, size, nearest=False), coords)
    sp_full = sp_t = None
    n_sp = 0
    if cfg.superpixels:
        sp_full = _superpixels(image, cfg) if superpixels is None else superpixels
        n_sp = int(sp_full.max()) + 1
        sp_t = torch.from_numpy(_resize(sp_full, size, nearest=True).astype(np.int64)).view(-1)
    scr = None
    if scribbles is not None:
        scr = torch.from_numpy(shrink_scribbles(scribbles, size))[None]
    return _Problem(x, sp_t, n_sp, scr), sp_full


def full_response(
    net: ClusterNet, image: np.ndarray, cfg: ClusterConfig, coords: bool = False
) -> torch.Tensor:
    """Response (D, H, W) at full size from one forward pass (bilinear upsampling).

    BatchNorm uses the image's own statistics, as during training.
    """
    size = _work_size(image.shape[:2], cfg.max_side)
    with torch.no_grad():
        response = net(image_tensor(_resize(image, size, nearest=False), coords))
        if response.shape[2:] != image.shape[:2]:
            response = F.interpolate(
                response, size=image.shape[:2], mode="bilinear", align_corners=False
            )
    return response[0]
