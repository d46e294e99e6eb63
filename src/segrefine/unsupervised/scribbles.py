"""Simulated user scribbles for benchmarking the scribble variant on human segmentations."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.morphology import skeletonize

from .cluster import NO_SCRIBBLE

__all__ = ["make_scribbles"]


def _longest_path(skeleton: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """The longest shortest path (8-connected, in pixels) of the skeleton part holding
    ``start``: two Dijkstra sweeps, as for a tree's diameter. Returns a boolean mask."""
    ys, xs = np.nonzero(skeleton)
    index = np.full(skeleton.shape, -1, dtype=np.int64)
    index[ys, xs] = np.arange(len(ys))
    rows, cols, weights = [], [], []
    h, w = skeleton.shape
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        y2, x2 = ys + dy, xs + dx
        inside = (y2 < h) & (x2 >= 0) & (x2 < w)
        other = np.full(len(ys), -1, dtype=np.int64)
        other[inside] = index[y2[inside], x2[inside]]
        linked = other >= 0
        rows.append(np.flatnonzero(linked))
        cols.append(other[linked])
        weights.append(np.full(int(linked.sum()), np.hypot(dy, dx)))
    graph = coo_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(ys), len(ys)),
    ).tocsr()
    far = dijkstra(graph, directed=False, indices=int(index[start]))
    end_a = int(np.where(np.isinf(far), -1, far).argmax())
    far, previous = dijkstra(graph, directed=False, indices=end_a, return_predecessors=True)
    node = int(np.where(np.isinf(far), -1, far).argmax())
    path = [node]
    while node != end_a:
        node = int(previous[node])
        path.append(node)
    out = np.zeros_like(skeleton, dtype=bool)
    out[ys[path], xs[path]] = True
    return out


def make_scribbles(
    truth: np.ndarray, max_strokes: int = 12, min_fraction: float = 0.005, margin: int = 3
) -> np.ndarray:
    """Simulated user scribbles: one stroke along each of the largest ground-truth segments.

    For each segment of at least ``min_fraction`` of the image (largest first, at most
    ``max_strokes``), the stroke is the longest path along the skeleton (medial axis) of the
    segment shrunk by ``margin`` pixels: one thin, continuous line down the middle of the
    segment's length, the way a user traces a region (synthetic scribbles from skeletons are
    the usual protocol, e.g. ScribbleSup, Lin et al. CVPR 2016). Only the part of the shrunk
    segment holding its most interior point is used; a segment with no pixel more than
    ``margin`` from its border gets no stroke. Returns ``uint8`` (H, W): stroke k has label
    k, unmarked pixels are 255. Deterministic.
    """
    truth = np.asarray(truth)
    ids, sizes = np.unique(truth, return_counts=True)
    out = np.full(truth.shape, NO_SCRIBBLE, dtype=np.uint8)
    k = 0
    for idx in np.argsort(-sizes, kind="stable"):
        if k >= max_strokes or sizes[idx] < min_fraction * truth.size:
            break
        inside = ndimage.distance_transform_edt(np.pad(truth == ids[idx], 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(inside.argmax()), inside.shape)
        if inside[y, x] <= margin:
            continue
        parts, _ = ndimage.label(inside > margin, structure=np.ones((3, 3)))
        skeleton = skeletonize(parts == parts[y, x])
        sy, sx = np.nonzero(skeleton)
        nearest = int(np.argmin((sy - y) ** 2 + (sx - x) ** 2))
        out[_longest_path(skeleton, (int(sy[nearest]), int(sx[nearest])))] = k
        k += 1
    return out
