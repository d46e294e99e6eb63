"""Baselines for unsupervised segmentation: k-means on colour + position, and Felzenszwalb.

Both take an RGB ``uint8`` image (H, W, 3) and return an ``int32`` label map (H, W). The
defaults are the *strong* settings used for comparison in the benchmark (Felzenszwalb at
scale=300 rather than scikit-image's over-segmenting scale=1).
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.vq import kmeans2
from skimage.color import rgb2lab
from skimage.segmentation import felzenszwalb

__all__ = ["felzenszwalb_segment", "kmeans_segment"]


def kmeans_segment(
    image: np.ndarray, k: int = 8, xy_weight: float = 0.5, seed: int = 0, iterations: int = 20
) -> np.ndarray:
    """k-means on per-pixel CIELAB colour plus position.

    Position is scaled so that crossing the longer image side counts as ``100 * xy_weight``
    Lab units (L* spans 0..100), so ``xy_weight=0`` clusters on colour alone.

    >>> labels = kmeans_segment(np.zeros((8, 8, 3), np.uint8), k=2)
    >>> labels.shape
    (8, 8)
    """
    image = np.asarray(image)
    h, w = image.shape[:2]
    lab = rgb2lab(image).reshape(-1, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) * (100.0 * xy_weight / max(h, w, 1))
    feats = np.concatenate([lab, yy.reshape(-1, 1), xx.reshape(-1, 1)], axis=1)
    k = max(1, min(k, len(feats)))
    rng = np.random.default_rng(seed)
    _, labels = kmeans2(feats, k, iter=iterations, minit="++", seed=rng)
    return labels.reshape(h, w).astype(np.int32)


def felzenszwalb_segment(
    image: np.ndarray, scale: float = 300.0, sigma: float = 0.8, min_size: int = 50
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher graph segmentation (scikit-image), strong default settings."""
    return felzenszwalb(
        np.asarray(image), scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1
    ).astype(np.int32)
