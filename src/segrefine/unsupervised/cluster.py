"""Segmenting one image by differentiable feature clustering, with optional scribbles.

The loop (one short function, :func:`_train`) follows Kim, Kanezaki & Tanaka (IEEE TIP 2020):
forward the image, take each pixel's argmax as its target, step SGD on similarity +
continuity (+ scribble) losses, stop once few enough labels remain. ``ClusterConfig.paper()``
is the published recipe; the defaults add what makes it fast and competitive on a CPU:

* work at reduced size (``max_side``), a smaller response (``channels=D``), few steps;
* superpixel targets (Kanezaki, ICASSP 2018): each Felzenszwalb superpixel of the *full-size*
  image takes its majority cluster as the target, so training settles in few iterations and the
  output keeps full-resolution superpixel boundaries;
* regions, not just clusters: adjacent superpixels are merged greedily while they stay closer
  than ``merge_threshold``, where closeness adds up the network's view (mean soft cluster
  response), colour (mean CIELAB and a CIELAB histogram, which tells a striped texture from
  its average colour) and the edge between them (mean contrast across the shared border, so
  a sharp edge keeps two similar-looking regions apart). This is the segment-count control: a
  larger threshold gives fewer, larger segments. The weights were chosen on BSDS500 *train*.

With ``merge_threshold=0`` the output is the cluster map itself; ``connected=True`` splits
disjoint parts of a cluster into separate labels.

With scribbles the user's labels fix the segments (:func:`_cluster_with_scribbles`): the
network gets exactly one output channel per scribble label, so every pixel ends up with one of
them (label k = scribble label k). Two inputs make that propagation work on a CPU budget:
normalised pixel coordinates beside the colour (without them two same-coloured segments,
e.g. two people's shirts, cannot get different labels) and finer superpixels
(``scribble_sp_scale``), whose mean class probability labels them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from skimage.color import rgb2lab
from tqdm.auto import tqdm

from ..data.datasets import resize_image, resize_mask
from .baselines import felzenszwalb_segment
from .model import ClusterNet, continuity_loss, scribble_loss, similarity_loss
from .regions import (
    connected_regions,
    merge_similar_regions,
    merge_small_regions,
    relabel_sequential,
    split_by_scribbles,
)

__all__ = [
    "NO_SCRIBBLE",
    "ClusterConfig",
    "cluster",
    "cluster_response",
    "response_to_labels",
    "validate_image",
    "validate_scribbles",
]

NO_SCRIBBLE = 255  # scribble-map value of unmarked pixels (negative values also mean unmarked)


@dataclass
class ClusterConfig:
    """Settings of the clustering method (plain values; see ``ClusterConfig.paper()``).

    ``max_iter`` bounds the training steps; training stops early once at most ``min_labels``
    distinct clusters remain, so a larger ``min_labels`` (or smaller ``max_iter``) gives more
    segments. ``channels`` (D) is the most clusters the network can express.
    """

    channels: int = 32
    width: int | None = None  # hidden conv width; None = channels
    n_conv: int = 2
    max_iter: int = 30
    min_labels: int = 3
    lr: float = 0.1
    momentum: float = 0.9
    mu_sim: float = 1.0
    mu_con: float = 1.0
    mu_scr: float = 2.0  # weight of the scribble cross-entropy
    max_side: int | None = 120  # train at this longest side (None = full size)
    max_input_side: int | None = 1024  # larger images: segmented at this size, labels upsampled
    superpixels: bool = True  # Kanezaki 2018 superpixel-majority targets
    sp_scale: float = 150.0  # Felzenszwalb settings of the superpixels
    sp_min_size: int = 50
    merge_threshold: float = 24.0  # merge adjacent superpixels closer than this; 0 = clusters
    response_weight: float = 30.0  # weight of the soft response against CIELAB when merging
    hist_weight: float = 20.0  # weight of the CIELAB histograms (hist_bins per channel)
    hist_bins: int = 8
    edge_weight: float = 1.0  # weight of the mean CIELAB contrast across the shared border
    scribble_sp_scale: float = 100.0  # finer superpixels with scribbles (Felzenszwalb scale)
    scribble_coords: bool = True  # with scribbles: pixel coordinates are network inputs too
    connected: bool = False  # cluster output: split disjoint parts of a cluster
    min_region: float = 0.0  # cluster output: merge regions below this fraction of the image
    seed: int = 0

    @classmethod
    def paper(cls, **overrides) -> ClusterConfig:
        """The published recipe: D=100, full size, up to 1000 steps, stop at 3 labels (with
        scribbles: colour alone as input)."""
        base = cls(
            channels=100,
            max_iter=1000,
            min_labels=3,
            max_side=None,
            superpixels=False,
            merge_threshold=0.0,
            connected=False,
            min_region=0.0,
            scribble_coords=False,
        )
        return replace(base, **overrides)


def validate_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    return image


def validate_scribbles(scribbles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scribble map -> ``int64`` (H, W) with -1 for unmarked pixels; must match ``shape``."""
    scribbles = np.asarray(scribbles)
    if scribbles.shape != tuple(shape):
        raise ValueError(f"scribble map is {scribbles.shape}, image is {tuple(shape)}")
    out = scribbles.astype(np.int64)
    out[(out < 0) | (out == NO_SCRIBBLE)] = -1
    return out


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


LAB_RANGE = ((0.0, 100.0), (-60.0, 60.0), (-60.0, 60.0))  # binned CIELAB span (rest clipped)


def histogram_indicators(lab: np.ndarray, bins: int) -> np.ndarray:
    """(H, W, 3 * bins) one-hot bin indicators of each CIELAB channel: averaged over a region
    they are its colour histograms (each channel's sums to 1), so the Euclidean distance of
    region means compares histograms and merging keeps them exact."""
    out = np.zeros((*lab.shape[:2], 3 * bins), np.float32)
    rows, cols = np.indices(lab.shape[:2])
    for c, (lo, hi) in enumerate(LAB_RANGE):
        idx = np.clip(((lab[..., c] - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)
        out[rows, cols, c * bins + idx] = 1.0
    return out


def response_to_labels(
    response: torch.Tensor,
    image: np.ndarray,
    cfg: ClusterConfig,
    superpixels: np.ndarray | None,
    keep_ids: bool = False,
) -> np.ndarray:
    """Turn a full-size response into the final ``int32`` label map, as configured.

    Region output (superpixels and ``merge_threshold > 0``, not ``keep_ids``): superpixels
    merged by similarity of mean soft response and colour. Cluster output otherwise: the
    argmax (majority per superpixel when given), then ``connected`` / ``min_region``;
    ``keep_ids`` (and not ``connected``) returns the cluster ids themselves.
    """
    if superpixels is not None and cfg.merge_threshold > 0 and not keep_ids:
        lab = rgb2lab(image).astype(np.float32)
        soft = torch.softmax(response, dim=0).permute(1, 2, 0).numpy() * cfg.response_weight
        parts = [lab, soft]
        if cfg.hist_weight > 0:
            parts.append(histogram_indicators(lab, cfg.hist_bins) * cfg.hist_weight)
        edges = ndimage.gaussian_filter(lab, (1, 1, 0)) if cfg.edge_weight > 0 else None
        return merge_similar_regions(
            superpixels, np.concatenate(parts, axis=2), cfg.merge_threshold, edges,
            cfg.edge_weight,
        )  # fmt: skip
    clusters = response.argmax(dim=0)
    if superpixels is not None:
        sp = torch.from_numpy(superpixels.astype(np.int64)).view(-1)
        clusters = superpixel_targets(
            clusters.view(-1), sp, int(sp.max()) + 1, response.shape[0]
        ).view(image.shape[:2])
    clusters = clusters.numpy().astype(np.int32)
    if keep_ids and not cfg.connected:
        return clusters
    labels = connected_regions(clusters) if cfg.connected else relabel_sequential(clusters)
    if cfg.min_region > 0:
        labels = merge_small_regions(labels, int(cfg.min_region * labels.size))
    return labels


def _cluster_with_scribbles(
    image: np.ndarray, scribbles: np.ndarray, cfg: ClusterConfig, progress: bool
) -> np.ndarray:
    """The scribble variant: K scribble labels -> a network with K output channels.

    Training (``max_iter`` steps: the label count is fixed, so there is no early stop)
    combines the scribble cross-entropy on marked pixels with the similarity and continuity
    terms elsewhere; a scribble decides its superpixel's target, and a superpixel holding
    strokes of two labels is first cut between them. Output: each superpixel takes the label
    of highest mean probability, a superpixel holding strokes takes its strokes' majority
    label, and every scribbled pixel keeps its own.
    """
    ids = np.unique(scribbles[scribbles >= 0])
    index = np.where(scribbles >= 0, np.searchsorted(ids, scribbles), -1)  # labels -> 0..K-1
    k = len(ids)
    run = replace(cfg, sp_scale=cfg.scribble_sp_scale)
    coords = cfg.scribble_coords
    net = ClusterNet(5 if coords else 3, k, cfg.n_conv, cfg.width or cfg.channels)
    sp = split_by_scribbles(_superpixels(image, run), index) if cfg.superpixels else None
    problem, sp = _prepare(image, run, index, coords, sp)
    _train(net, [problem], run, progress, min_labels=0)
    prob = torch.softmax(full_response(net, image, run, coords), dim=0).view(k, -1).numpy()
    marked = index >= 0
    if sp is None:
        labels = prob.argmax(axis=0).reshape(index.shape)
    else:
        flat, n_sp = sp.ravel(), int(sp.max()) + 1
        mean = np.stack([np.bincount(flat, weights=p, minlength=n_sp) for p in prob], axis=1)
        strokes = np.bincount(
            sp[marked].astype(np.int64) * k + index[marked], minlength=n_sp * k
        ).reshape(n_sp, k)
        choice = np.where(strokes.any(axis=1), strokes.argmax(axis=1), mean.argmax(axis=1))
        labels = choice[sp]
    labels[marked] = index[marked]
    labels = ids[labels].astype(np.int32)
    return connected_regions(labels) if cfg.connected else labels


def cluster(
    image: np.ndarray,
    scribbles: np.ndarray | None = None,
    config: ClusterConfig | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Segment an RGB ``uint8`` image (H, W, 3) without labels; returns ``int32`` (H, W).

    ``scribbles`` is an optional (H, W) map of user labels (0..254; 255 or negative =
    unmarked). With scribbles the labels fix the segments: every pixel gets one of the
    scribble labels (label k = scribble label k, so the output has exactly as many labels
    as there are scribble labels), each scribbled pixel keeps its own label, and two
    different labels are never merged. With ``config.connected`` disjoint parts of a label
    are split into separate labels instead.

    >>> img = np.zeros((16, 16, 3), np.uint8); img[:, 8:] = 255
    >>> cluster(img, config=ClusterConfig(max_iter=5)).shape
    (16, 16)
    >>> scr = np.full((16, 16), 255, np.uint8); scr[4, 1:6] = 3; scr[4, 10:15] = 7
    >>> np.unique(cluster(img, scr)).tolist()
    [3, 7]
    """
    cfg = config or ClusterConfig()
    image = validate_image(image)
    full_size = image.shape[:2]
    if scribbles is not None:
        scribbles = validate_scribbles(scribbles, full_size)
        if not (scribbles >= 0).any():
            scribbles = None
    reduced = _work_size(full_size, cfg.max_input_side)
    if reduced != full_size:  # keeps superpixels and merging affordable on huge photos
        labels = cluster(
            _resize(image, reduced, nearest=False),
            None if scribbles is None else shrink_scribbles(scribbles, reduced),
            replace(cfg, max_input_side=None),
            progress,
        )
        labels = _resize(labels, full_size, nearest=True)
        if scribbles is not None and not cfg.connected:
            labels[scribbles >= 0] = scribbles[scribbles >= 0]
        return labels
    if scribbles is not None:
        torch.manual_seed(cfg.seed)
        return _cluster_with_scribbles(image, scribbles, cfg, progress)
    response, superpixels = cluster_response(image, cfg, progress)
    return response_to_labels(response, image, cfg, superpixels)


def cluster_response(
    image: np.ndarray, cfg: ClusterConfig, progress: bool = False
) -> tuple[torch.Tensor, np.ndarray | None]:
    """The trained network's response (D, H, W) for one image at its own size, and the
    full-size superpixels (None without); :func:`response_to_labels` turns them into labels.

    :func:`cluster` is these two steps; kept apart so that merge settings can be compared on
    one trained response (``benchmarks/cluster_merge_sweep.py``).
    """
    torch.manual_seed(cfg.seed)
    net = ClusterNet(3, cfg.channels, cfg.n_conv, cfg.width)
    problem, superpixels = _prepare(image, cfg, None)
    _train(net, [problem], cfg, progress, cfg.min_labels)
    return full_response(net, image, cfg), superpixels
