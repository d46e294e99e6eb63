"""Post-processing of label maps: consecutive ids, connected components, merging, splitting."""

from __future__ import annotations

import heapq

import numpy as np
from scipy import ndimage
from skimage.measure import label as _components

__all__ = [
    "border_contrast",
    "connected_regions",
    "merge_similar_regions",
    "merge_small_regions",
    "region_means",
    "relabel_sequential",
    "split_by_scribbles",
]


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..K-1 in order of first appearance (row-major), as ``int32``.

    The numbering depends only on the partition, so equal partitions get equal ids and the
    colour of a region is stable from run to run.
    """
    flat = np.asarray(labels).ravel()
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first), dtype=np.int32)
    return rank[inverse].reshape(np.shape(labels))


def connected_regions(labels: np.ndarray) -> np.ndarray:
    """Give every 8-connected region its own label (disjoint parts of a cluster are split)."""
    labels = np.asarray(labels).astype(np.int64)
    return relabel_sequential(_components(labels, background=-1, connectivity=2))


def _border_sums(labels: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """(n, n) sum over the 4-neighbour pixel pairs with labels (i, j), i != j, of one weight
    per pair (1 without ``weights``: a count), symmetric, zero diagonal. Pairs are ordered as
    the horizontal pairs (row-major) followed by the vertical ones."""
    a = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    b = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    keep = a != b
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    w = None if weights is None else weights[keep]
    sums = np.bincount(a * n + b, weights=w, minlength=n * n).reshape(n, n)
    return sums + sums.T


def _neighbour_counts(labels: np.ndarray, n: int) -> np.ndarray:
    """(n, n) count of 4-neighbour pixel pairs with labels (i, j), symmetric, zero diagonal."""
    return _border_sums(labels, n)


def merge_small_regions(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Merge every region smaller than ``min_size`` pixels into the neighbour it shares the
    longest border with (smallest regions first), then renumber. A region with no neighbour
    (the whole image) is kept."""
    labels = relabel_sequential(labels)
    if min_size <= 1:
        return labels
    while True:
        n = int(labels.max()) + 1
        sizes = np.bincount(labels.ravel(), minlength=n)
        small = np.flatnonzero(sizes < min_size)
        if len(small) == 0 or n == 1:
            return labels
        border = _neighbour_counts(labels, n)
        target = np.arange(n)
        merged = np.zeros(n, dtype=bool)
        for r in small[np.argsort(sizes[small], kind="stable")]:
            if merged[r] or border[r].max() == 0:
                continue
            nb = int(border[r].argmax())
            if merged[nb]:  # its neighbour moved this pass; settle it next pass
                continue
            target[r] = nb
            merged[r] = True
        if not merged.any():
            return labels
        # Follow chains r -> nb -> ... (a neighbour may itself have been merged).
        for _ in range(n):
            nxt = target[target]
            if np.array_equal(nxt, target):
                break
            target = nxt
        labels = relabel_sequential(target[labels])


def region_means(labels: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts (n,) and mean feature vectors (n, C) of regions 0..n-1 of ``labels``."""
    flat = labels.ravel()
    n = int(flat.max()) + 1
    sizes = np.bincount(flat, minlength=n).astype(np.float64)
    feats = features.reshape(len(flat), -1)
    means = np.stack(
        [np.bincount(flat, feats[:, c], minlength=n) for c in range(feats.shape[1])], axis=1
    )
    return sizes, means / np.maximum(sizes, 1.0)[:, None]


def border_contrast(labels: np.ndarray, edges: np.ndarray, n: int) -> np.ndarray:
    """(n, n) summed contrast ``||edges[p] - edges[q]||`` over the 4-neighbour pixel pairs
    (p, q) that straddle the border of regions i and j (symmetric, zero diagonal).

    Divided by :func:`_neighbour_counts` it is the mean contrast along each shared border:
    how strong the edge between two regions is, whatever their mean colours."""
    e = edges.reshape(*labels.shape, -1).astype(np.float64)
    diff = np.concatenate([
        np.sqrt(((e[:, 1:] - e[:, :-1]) ** 2).sum(-1)).ravel(),
        np.sqrt(((e[1:, :] - e[:-1, :]) ** 2).sum(-1)).ravel(),
    ])  # fmt: skip
    return _border_sums(labels, n, diff)


def merge_similar_regions(
    labels: np.ndarray,
    features: np.ndarray,
    threshold: float,
    edges: np.ndarray | None = None,
    edge_weight: float = 0.0,
) -> np.ndarray:
    """Greedily merge adjacent regions whose mean features are closest, while their distance
    stays below ``threshold``.

    ``features`` is (H, W, C); the distance of two regions is the Euclidean distance of their
    mean features plus, with ``edges`` (H, W, E) and ``edge_weight``, ``edge_weight`` times the
    mean contrast of ``edges`` across their shared border (:func:`border_contrast`): two
    regions of similar mean colour but separated by a sharp edge stay apart, two regions of
    a slow gradient with no edge between them merge. After each merge the merged region's
    mean is the size-weighted mean and its borders are the union of both, so the result does
    not depend on how a region was assembled. Sizes play no other part: small fragments are
    merged only when they look alike, never just for being small.
    """
    labels = relabel_sequential(labels)
    n = int(labels.max()) + 1
    if threshold <= 0 or n == 1:
        return labels
    sizes, means = region_means(labels, features)
    border = _neighbour_counts(labels, n).astype(np.float64)
    contrast = None
    if edges is not None and edge_weight > 0:
        contrast = border_contrast(labels, edges, n)
    neighbours = [set(np.flatnonzero(border[i]).tolist()) for i in range(n)]
    version = np.zeros(n, dtype=np.int64)
    parent = np.arange(n)

    def dist(a: int, b: int) -> float:
        d = float(np.sqrt(((means[a] - means[b]) ** 2).sum()))
        if contrast is not None:
            d += edge_weight * contrast[a, b] / border[a, b]
        return d

    heap = [(dist(a, b), a, b, 0, 0) for a in range(n) for b in neighbours[a] if a < b]
    heapq.heapify(heap)
    while heap:
        d, a, b, va, vb = heapq.heappop(heap)
        if d >= threshold:
            break
        if parent[a] != a or parent[b] != b or version[a] != va or version[b] != vb:
            continue  # stale entry: one side has merged since it was pushed
        means[a] = (means[a] * sizes[a] + means[b] * sizes[b]) / (sizes[a] + sizes[b])
        sizes[a] += sizes[b]
        parent[b] = a
        version[a] += 1
        for table in (border, contrast) if contrast is not None else (border,):
            table[a] += table[b]  # a's borders are now a's and b's together
            table[:, a] = table[a]
            table[a, a] = 0.0
        for x in list(neighbours[b]):
            neighbours[x].discard(b)
            if x != a:
                neighbours[x].add(a)
                neighbours[a].add(x)
        neighbours[a].discard(b)
        neighbours[b] = set()
        for x in neighbours[a]:
            heapq.heappush(heap, (dist(a, x), a, x, version[a], version[x]))
    root = parent.copy()
    while not np.array_equal(root[root], root):
        root = root[root]
    return relabel_sequential(root[labels])


def split_by_scribbles(labels: np.ndarray, scribbles: np.ndarray) -> np.ndarray:
    """Split every region that holds scribbles of more than one label (H, W; -1 = unmarked).

    Each pixel of such a region goes with its nearest scribbled pixel, so the region is cut
    between its strokes; regions with strokes of one label or none are kept. Afterwards no
    region holds two scribble labels, so a per-region decision can never join two of them.
    """
    labels = relabel_sequential(labels)
    marked = scribbles >= 0
    if not marked.any():
        return labels
    n, k = int(labels.max()) + 1, int(scribbles.max()) + 1
    strokes = np.bincount(
        labels[marked].astype(np.int64) * k + scribbles[marked], minlength=n * k
    ).reshape(n, k)
    mixed = (strokes > 0).sum(axis=1) > 1
    if not mixed.any():
        return labels
    _, (iy, ix) = ndimage.distance_transform_edt(~marked, return_indices=True)
    nearest = scribbles[iy, ix]
    return relabel_sequential(np.where(mixed[labels], n + labels * k + nearest, labels))
