"""Unsupervised segmentation: loss terms, the clustering loop, scribbles, regions, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from segrefine.unsupervised.benchmark import make_scribbles
from segrefine.unsupervised.cluster import ClusterConfig, cluster
from segrefine.unsupervised.metrics import (
    best_match_miou,
    covering,
    probabilistic_rand_index,
    region_scores,
    variation_of_information,
)
from segrefine.unsupervised.model import continuity_loss, scribble_loss, similarity_loss
from segrefine.unsupervised.reference import ClusterModel, cluster_video
from segrefine.unsupervised.regions import (
    connected_regions,
    merge_similar_regions,
    merge_small_regions,
    relabel_sequential,
)

torch.set_num_threads(1)


def blocks_image(seed: int = 0, size: int = 32, colours: int = 4, noise: float = 8.0):
    """A (size, size) image of ``colours`` vertical bands, with Gaussian noise; and its truth."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(colours, 3))
    truth = np.repeat(np.arange(colours), size // colours)[None, :].repeat(size, axis=0)
    image = palette[truth] + rng.normal(0, noise, size=(size, size, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


# ---- loss terms on hand-made tensors ---------------------------------------------------------


def test_similarity_loss_is_cross_entropy_towards_own_argmax():
    response = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, D=2, 1, 2)
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert similarity_loss(response).item() == pytest.approx(expected, rel=1e-6)


def test_similarity_loss_weights_pixels():
    response = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    weight = torch.tensor([[[0.0, 1.0]]])
    assert similarity_loss(response, weight=weight).item() == pytest.approx(
        math.log(1 + math.exp(-1)), rel=1e-6
    )


def test_continuity_loss_is_mean_absolute_vertical_plus_horizontal_difference():
    response = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])
    # vertical |3-0|, |5-1| -> mean 3.5; horizontal |1-0|, |5-3| -> mean 1.5
    assert continuity_loss(response).item() == pytest.approx(5.0)
    assert continuity_loss(torch.ones(1, 3, 4, 4)).item() == 0.0


def test_scribble_loss_counts_only_marked_pixels():
    response = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])
    scribbles = torch.tensor([[[1, -1]]])  # pixel 0 says label 1, pixel 1 is unmarked
    assert scribble_loss(response, scribbles).item() == pytest.approx(
        math.log(1 + math.exp(2)), rel=1e-6
    )
    assert scribble_loss(response, torch.full((1, 1, 2), -1)).item() == 0.0


# ---- the clustering loop ---------------------------------------------------------------------


def test_training_stops_once_label_count_reaches_minimum():
    image, _ = blocks_image(seed=1, colours=8, noise=20.0)
    cfg = ClusterConfig(merge_threshold=0.0, max_iter=300, min_labels=8)
    model = ClusterModel(cfg).fit([image])
    assert model.iterations < 50  # stopped by the label count, long before the step limit
    labels = cluster(image, config=cfg)
    assert 1 <= len(np.unique(labels)) <= 8


def test_max_iter_bounds_training():
    image, _ = blocks_image(seed=2, colours=8, noise=20.0)
    model = ClusterModel(ClusterConfig(superpixels=False, max_iter=3, min_labels=1)).fit([image])
    assert model.iterations == 3


def test_default_cluster_is_deterministic_and_finds_the_bands():
    image, truth = blocks_image(seed=3, size=48)
    a, b = cluster(image), cluster(image)
    assert a.shape == truth.shape and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    assert covering(a, truth) > 0.9


def test_scribble_labels_are_respected_on_scribbled_pixels():
    image, _ = blocks_image(seed=4, size=48, colours=3, noise=10.0)
    scribbles = np.full((48, 48), 255, dtype=np.uint8)
    scribbles[10, 2:14] = 0
    scribbles[30, 18:30] = 7  # labels need not be consecutive
    scribbles[20, 34:46] = 2
    labels = cluster(image, scribbles, config=ClusterConfig(max_iter=40))
    marked = scribbles != 255
    np.testing.assert_array_equal(labels[marked], scribbles[marked])


def test_scribble_map_of_another_size_is_rejected():
    image, _ = blocks_image(seed=5)
    with pytest.raises(ValueError, match="scribble map"):
        cluster(image, np.zeros((10, 10), np.uint8))


def test_reference_model_segments_new_images_with_consistent_cluster_ids():
    a, _ = blocks_image(seed=6, colours=2, noise=4.0)
    b = a[:, ::-1].copy()  # the same two colours, bands swapped
    model = ClusterModel(ClusterConfig(max_iter=20)).fit([a])
    la, lb = model.segment(a, clusters=True), model.segment(b, clusters=True)
    np.testing.assert_array_equal(la, lb[:, ::-1])  # same colour -> same cluster id
    frames = cluster_video([a, a, b], ClusterConfig(max_iter=10), iter_per_frame=2)
    assert len(frames) == 3 and all(f.shape == a.shape[:2] for f in frames)


# ---- regions ---------------------------------------------------------------------------------


def test_connected_regions_split_disjoint_parts_of_a_cluster():
    labels = np.array([[0, 1, 0], [0, 1, 0]])
    out = connected_regions(labels)
    assert len(np.unique(out)) == 3
    np.testing.assert_array_equal(relabel_sequential(np.array([[5, 5, 2]])), [[0, 0, 1]])


def test_merge_small_regions_absorbs_into_longest_border():
    labels = np.array([[0, 0, 0, 1], [0, 2, 1, 1], [0, 0, 1, 1]])
    out = merge_small_regions(labels, min_size=2)
    assert len(np.unique(out)) == 2 and out[1, 1] == out[0, 0]


def test_merge_similar_regions_respects_threshold_and_scribbles():
    labels = np.array([[0, 0, 1, 1, 2, 2]])
    feats = np.array([[0, 0, 1, 1, 50, 50]], dtype=float)[..., None]
    out = merge_similar_regions(labels, feats, threshold=2.0)
    assert out[0, 0] == out[0, 2] and out[0, 2] != out[0, 4]
    scr = np.array([[0, -1, -1, 1, -1, -1]])  # the user marks regions 0 and 1 as different
    out = merge_similar_regions(labels, feats, threshold=2.0, scribbles=scr)
    assert out[0, 0] != out[0, 2]


def test_make_scribbles_draws_strokes_inside_segments():
    truth = np.zeros((40, 60), dtype=np.uint8)
    truth[:, 30:] = 1
    scr = make_scribbles(truth, margin=2)
    marked = scr != 255
    assert set(np.unique(scr[marked])) == {0, 1}
    for k in (0, 1):
        assert len(np.unique(truth[scr == k])) == 1  # a stroke never crosses a boundary


# ---- metrics ---------------------------------------------------------------------------------


def test_identical_segmentations_score_perfectly():
    seg = np.array([[0, 0, 1], [2, 2, 1]])
    relabelled = seg + 10  # ids are arbitrary
    assert covering(relabelled, seg) == pytest.approx(1.0)
    assert variation_of_information(relabelled, seg) == pytest.approx(0.0, abs=1e-12)
    assert probabilistic_rand_index(relabelled, seg) == pytest.approx(1.0)
    assert best_match_miou(relabelled, seg) == pytest.approx(1.0)


def test_metrics_match_a_hand_computed_case():
    pred, truth = np.array([[0, 0, 1, 1]]), np.array([[0, 0, 0, 1]])
    # IoU(p0, t0) = 2/3, IoU(p1, t1) = 1/2, IoU(p1, t0) = 1/4
    assert covering(pred, truth) == pytest.approx((3 * 2 / 3 + 1 * 1 / 2) / 4)
    assert best_match_miou(pred, truth) == pytest.approx((2 / 3 + 1 / 2) / 2)
    # pixel pairs: ab, ad, bd agree; ac, bc, cd disagree
    assert probabilistic_rand_index(pred, truth) == pytest.approx(0.5)
    h_p = math.log(2)
    h_t = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mutual = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    assert variation_of_information(pred, truth) == pytest.approx(h_p + h_t - 2 * mutual)


def test_unmatched_truth_segments_count_zero_and_annotators_are_averaged():
    pred, truth = np.zeros((1, 4), int), np.array([[0, 0, 0, 1]])
    assert best_match_miou(pred, truth) == pytest.approx(0.75 / 2)
    scores = region_scores(pred, [truth, np.zeros((1, 4), int)])
    assert scores["miou"] == pytest.approx((0.375 + 1.0) / 2)
    assert scores["covering"] == pytest.approx(((3 * 0.75 + 0.25) / 4 + 1.0) / 2)


def test_metrics_reject_different_sizes():
    with pytest.raises(ValueError, match="differ in size"):
        covering(np.zeros((2, 2)), np.zeros((2, 3)))
