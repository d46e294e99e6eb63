"""Unsupervised segmentation by differentiable feature clustering (Kim, Kanezaki & Tanaka 2020).

``cluster(image)`` segments one image; ``ClusterModel`` trains on reference images and segments
new ones with a forward pass; ``kmeans_segment`` / ``felzenszwalb_segment`` are the baselines;
``region_scores`` gives covering, PRI, VoI and best-match mIoU; ``run_cluster_benchmark`` runs
them all on BSDS500.
"""

from .baselines import felzenszwalb_segment, kmeans_segment
from .benchmark import run_cluster_benchmark
from .cluster import ClusterConfig, cluster
from .metrics import (
    best_match_miou,
    covering,
    probabilistic_rand_index,
    region_scores,
    variation_of_information,
)
from .reference import ClusterModel, cluster_video
from .scribbles import make_scribbles

__all__ = [
    "ClusterConfig",
    "ClusterModel",
    "best_match_miou",
    "cluster",
    "cluster_video",
    "covering",
    "felzenszwalb_segment",
    "kmeans_segment",
    "make_scribbles",
    "probabilistic_rand_index",
    "region_scores",
    "run_cluster_benchmark",
    "variation_of_information",
]
