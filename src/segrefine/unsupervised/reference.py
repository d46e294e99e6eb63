"""Reference-image mode: train one clustering network on a set of images, then segment new
images with a forward pass only (and, frame by frame, video).

Cluster ids mean the same thing in every image segmented by one model (cluster k is the same
axis of the response space), which the per-image :func:`~.cluster.cluster` cannot promise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import torch

from .baselines import felzenszwalb_segment
from .cluster import (
    ClusterConfig,
    _prepare,
    _train,
    full_response,
    response_to_labels,
    validate_image,
)
from .model import ClusterNet

__all__ = ["ClusterModel", "cluster_video"]


class ClusterModel:
    """A clustering network trained on reference images.

    >>> imgs = [np.full((16, 16, 3), v, np.uint8) for v in (0, 255)]
    >>> model = ClusterModel(ClusterConfig(max_iter=4)).fit(imgs)
    >>> model.segment(imgs[0]).shape
    (16, 16)
    """

    def __init__(self, config: ClusterConfig | None = None):
        self.config = config or ClusterConfig()
        torch.manual_seed(self.config.seed)
        self.net = ClusterNet(3, self.config.channels, self.config.n_conv, self.config.width)
        self.iterations = 0

    def fit(
        self, images: Sequence[np.ndarray], max_iter: int | None = None, progress: bool = False
    ) -> ClusterModel:
        """Train (or keep training) on ``images``, one image per step, cycling through them.

        Training stops after ``max_iter`` steps (default ``config.max_iter``) or once the
        image of a step has at most ``config.min_labels`` clusters.
        """
        if len(images) == 0:
            raise ValueError("need at least one reference image")
        cfg = self.config
        if max_iter is not None:
            cfg = replace(cfg, max_iter=max_iter)
        problems = [_prepare(validate_image(im), cfg, None)[0] for im in images]
        self.iterations += _train(self.net, problems, cfg, progress, cfg.min_labels)
        return self

    def segment(self, image: np.ndarray, clusters: bool = False) -> np.ndarray:
        """Label map (H, W) of a new image from one forward pass (no training).

        ``clusters=True`` returns the cluster ids themselves (comparable across images);
        otherwise the configured output (merged regions by default).
        """
        image = validate_image(image)
        cfg = self.config
        sp = (
            felzenszwalb_segment(image, scale=cfg.sp_scale, min_size=cfg.sp_min_size)
            if cfg.superpixels
            else None
        )
        return response_to_labels(
            full_response(self.net, image, cfg), image, cfg, sp, keep_ids=clusters
        )


def cluster_video(
    frames: Iterable[np.ndarray],
    config: ClusterConfig | None = None,
    first_iter: int | None = None,
    iter_per_frame: int = 5,
    clusters: bool = True,
) -> list[np.ndarray]:
    """Segment frames in order, carrying the network from one frame to the next.

    The first frame trains for ``first_iter`` steps (default ``config.max_iter``), each later
    frame for ``iter_per_frame`` steps, so cluster ids stay consistent along the video.
    """
    model = ClusterModel(config)
    out = []
    for i, frame in enumerate(frames):
        model.fit([frame], max_iter=first_iter if i == 0 else iter_per_frame)
        out.append(model.segment(frame, clusters=clusters))
    return out
