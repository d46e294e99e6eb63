"""Segmenting one image by differentiable feature clustering, with optional scribbles.

The loop (one short function, ``_train`` in :mod:`.training`) follows Kim, Kanezaki & Tanaka
(IEEE TIP 2020): forward the image, take each pixel's argmax as its target, step SGD on
similarity + continuity (+ scribble) losses, stop once few enough labels remain.
``ClusterConfig.paper()`` is the published recipe; the defaults add what makes it fast and
competitive on a CPU:

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

This module holds the public entry :func:`cluster`, the scribble variant and the step from a
trained response to labels (:func:`response_to_labels`, where the region merging happens);
the settings and input checks are in :mod:`.config`, the training loop in :mod:`.training`.
Names of those two modules that callers import from here (``ClusterConfig``, ``NO_SCRIBBLE``,
``shrink_scribbles``, ``_prepare``, ``_train``, ...) are re-exported.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage
from skimage.color import rgb2lab

from ..errors import InputError
from .config import NO_SCRIBBLE, ClusterConfig, validate_image, validate_scribbles
from .model import ClusterNet
from .regions import (
    connected_regions,
    merge_similar_regions,
    merge_small_regions,
    relabel_sequential,
    split_by_scribbles,
)
from .training import (
    _prepare,
    _resize,
    _superpixels,
    _train,
    _work_size,
    full_response,
    shrink_scribbles,
    superpixel_targets,
)

# Not used here: re-exported so that ``from .cluster import image_tensor`` keeps working.
from .training import image_tensor as image_tensor

__all__ = [
    "NO_SCRIBBLE",
    "ClusterConfig",
    "cluster",
    "cluster_response",
    "response_to_labels",
    "validate_image",
    "validate_scribbles",
]


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
    check_work_size(full_size, cfg)
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


def check_work_size(shape: tuple[int, int], cfg: ClusterConfig, where=None) -> None:
    """An image that ``max_input_side`` would shrink below 4 pixels across (a 4000 x 4 strip)
    is refused at its own size, saying why, rather than as the sliver it would become."""
    reduced = _work_size(shape, cfg.max_input_side)
    if min(reduced) < 4:
        (h, w), long = shape, max(shape)
        needed = min(-(-long * 7 // (2 * min(shape))), 16384)  # round() keeps >= 3.5 -> 4
        raise InputError(f"image is {w}x{h}: shrunk to --max-input-side {cfg.max_input_side} "
                         f"it would be {reduced[1]}x{reduced[0]}, and clustering needs at least "
                         f"4 x 4 pixels; raise --max-input-side to {needed} or crop the image",
                         where)  # fmt: skip


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
