"""Settings and input checks of the clustering method (:mod:`.cluster`): :class:`ClusterConfig`
with its published recipe, the scribble-map convention (``NO_SCRIBBLE``) and the validation of
an image and its scribble map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError

__all__ = ["NO_SCRIBBLE", "ClusterConfig", "validate_image", "validate_scribbles"]

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

    def __post_init__(self):
        finite = all(math.isfinite(v) for v in (self.lr, self.momentum, self.mu_sim, self.mu_con,
                                                 self.mu_scr, self.sp_scale, self.merge_threshold,
                                                 self.response_weight, self.hist_weight,
                                                 self.edge_weight, self.scribble_sp_scale,
                                                 self.min_region))  # fmt: skip
        checks = {
            "numbers (must be finite)": finite,
            "channels (1..512)": 1 <= self.channels <= 512,
            "width (1..512 or none)": self.width is None or 1 <= self.width <= 512,
            "n_conv (1..16)": 1 <= self.n_conv <= 16,
            "max_iter (1..100000)": 1 <= self.max_iter <= 100_000,
            "min_labels (1..254)": 1 <= self.min_labels <= 254,
            "lr (in (0, 10])": 0 < self.lr <= 10,
            "momentum (in [0, 1))": 0 <= self.momentum < 1,
            "max_side (8..8192 or none)": self.max_side is None or 8 <= self.max_side <= 8192,
            "max_input_side (8..16384 or none)":
                self.max_input_side is None or 8 <= self.max_input_side <= 16384,
            "superpixel settings (positive)": self.sp_scale > 0 and self.sp_min_size >= 1
                and self.scribble_sp_scale > 0,
            "merge_threshold (0 or more)": self.merge_threshold >= 0,
            "hist_bins (1..64)": 1 <= self.hist_bins <= 64,
            "min_region (in [0, 1))": 0 <= self.min_region < 1,
        }  # fmt: skip
        for name, ok in checks.items():
            if not ok:
                raise InputError(f"clustering settings: invalid {name}")

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
        raise InputError(f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 4:
        raise InputError(f"image is {image.shape[1]}x{image.shape[0]}; clustering needs at "
                         "least 4 x 4 pixels")  # fmt: skip
    return image


def validate_scribbles(scribbles: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Scribble map -> ``int64`` (H, W) with -1 for unmarked pixels; must match ``shape``."""
    scribbles = np.asarray(scribbles)
    if scribbles.shape != tuple(shape):
        raise ValueError(f"scribble map is {scribbles.shape}, image is {tuple(shape)}")
    out = scribbles.astype(np.int64)
    out[(out < 0) | (out == NO_SCRIBBLE)] = -1
    return out
