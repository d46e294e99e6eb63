"""Unsupervised segmentation: loss terms, the clustering loop, scribbles, regions, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from segrefine.unsupervised.cluster import ClusterConfig, cluster, shrink_scribbles
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
    border_contrast,
    connected_regions,
    merge_similar_regions,
    merge_small_regions,
    relabel_sequential,
    split_by_scribbles,
)
from segrefine.unsupervised.scribbles import make_scribbles

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
    image, truth = blocks_image(seed=4, size=48, colours=3, noise=10.0)
    scribbles = np.full((48, 48), 255, dtype=np.uint8)
    scribbles[10, 2:14] = 0
    scribbles[30, 18:30] = 7  # labels need not be consecutive
    scribbles[20, 34:46] = 2
    labels = cluster(image, scribbles)
    marked = scribbles != 255
    np.testing.assert_array_equal(labels[marked], scribbles[marked])
    assert set(np.unique(labels)) == {0, 2, 7}  # the scribble labels fix the segment count
    assert covering(labels, truth) > 0.9  # and each stroke claims its band


def test_two_scribble_labels_on_one_colour_never_merge():
    rng = np.random.default_rng(7)
    image = np.clip(120 + rng.normal(0, 6, (40, 60, 3)), 0, 255).astype(np.uint8)
    scribbles = np.full((40, 60), 255, dtype=np.uint8)
    scribbles[20, 5:15], scribbles[20, 45:55] = 1, 4
    labels = cluster(image, scribbles)
    assert set(np.unique(labels)) == {1, 4}
    assert (labels[scribbles == 1] == 1).all() and (labels[scribbles == 4] == 4).all()
    # Same colour everywhere: only position can tell the two apart, nearest stroke wins.
    assert (labels[:, :12] == 1).mean() > 0.9 and (labels[:, -12:] == 4).mean() > 0.9


def test_scribbles_work_without_superpixels_and_on_images_over_the_size_limit():
    image, truth = blocks_image(seed=8, size=48, colours=2, noise=6.0)
    scribbles = np.full((48, 48), 255, dtype=np.uint8)
    scribbles[5:40, 12], scribbles[5:40, 36] = 3, 9
    for cfg in (
        ClusterConfig.paper(max_iter=40),
        ClusterConfig(max_input_side=20),  # segmented at 20 px, labels brought back to 48
    ):
        labels = cluster(image, scribbles, config=cfg)
        assert set(np.unique(labels)) == {3, 9}
        np.testing.assert_array_equal(labels[scribbles != 255], scribbles[scribbles != 255])
        assert covering(labels, truth) > 0.8


def test_connected_splits_a_scribble_label_into_its_disjoint_parts():
    image, _ = blocks_image(seed=9, size=48, colours=3, noise=4.0)
    image[:, 32:] = image[:, :16]  # bands A B A: label 0 on both outer bands
    scribbles = np.full((48, 48), 255, dtype=np.uint8)
    scribbles[10:40, 8], scribbles[10:40, 40], scribbles[10:40, 24] = 0, 0, 1
    assert len(np.unique(cluster(image, scribbles))) == 2
    assert len(np.unique(cluster(image, scribbles, ClusterConfig(connected=True)))) == 3


def test_shrinking_scribbles_keeps_one_pixel_strokes():
    scribbles = np.full((40, 40), -1, dtype=np.int64)
    scribbles[13, 4:30] = 2  # row 13 is no row a nearest-neighbour resize to 10 would sample
    scribbles[37, 37] = 5
    small = shrink_scribbles(scribbles, (10, 10))
    assert (small[3, 1:8] == 2).all() and small[9, 9] == 5
    assert (small >= 0).sum() == 8


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


def test_merge_similar_regions_respects_threshold():
    labels = np.array([[0, 0, 1, 1, 2, 2]])
    feats = np.array([[0, 0, 1, 1, 50, 50]], dtype=float)[..., None]
    out = merge_similar_regions(labels, feats, threshold=2.0)
    assert out[0, 0] == out[0, 2] and out[0, 2] != out[0, 4]
    assert len(np.unique(merge_similar_regions(labels, feats, threshold=0.5))) == 3


def test_merge_keeps_regions_apart_across_a_sharp_edge():
    # four quadrants of equal mean colour; a step edge runs down the middle column border
    labels = np.zeros((6, 6), int)
    labels[:, 3:] = 1
    labels[3:, :] += 2
    feats = np.zeros((6, 6, 1))
    edges = np.zeros((6, 6, 1))
    edges[:, 3:] = 10.0
    assert len(np.unique(merge_similar_regions(labels, feats, 1.0))) == 1
    out = merge_similar_regions(labels, feats, 1.0, edges, edge_weight=0.5)
    assert len(np.unique(out)) == 2 and (out[:, :3] == out[0, 0]).all()
    assert (out[:, 3:] == out[0, 5]).all()


def test_border_contrast_sums_steps_along_the_border():
    labels = np.array([[0, 0, 1, 1]] * 3)
    edges = np.array([[0.0, 1.0, 4.0, 4.0]] * 3)[..., None]
    c = border_contrast(labels, edges, 2)
    assert c[0, 1] == c[1, 0] == 9.0 and c[0, 0] == 0  # three pairs of contrast 3


def test_split_by_scribbles_cuts_only_regions_with_two_labels():
    labels = np.array([[0, 0, 0, 0, 1, 1]])
    scr = np.array([[2, -1, -1, 5, 3, -1]])  # region 0 holds labels 2 and 5, region 1 only 3
    out = split_by_scribbles(labels, scr)
    assert out[0, 0] == out[0, 1] != out[0, 2] == out[0, 3]  # cut halfway between strokes
    assert out[0, 4] == out[0, 5] and len(np.unique(out)) == 3
    np.testing.assert_array_equal(split_by_scribbles(labels, np.full((1, 6), -1)), labels)


def test_make_scribbles_draws_one_continuous_stroke_inside_each_large_segment():
    truth = np.zeros((40, 100), dtype=np.uint8)
    truth[20:] = 1  # two long bands
    truth[2:6, 2:6] = 2  # too small for a stroke: 16 px < 0.5 % of the image
    scr = make_scribbles(truth)
    marked = scr != 255
    assert set(np.unique(scr[marked])) == {0, 1}
    for k in (0, 1):
        stroke = scr == k
        assert len(np.unique(truth[stroke])) == 1  # a stroke never crosses a boundary
        inside = ndimage.distance_transform_edt(np.pad(truth == truth[stroke][0], 1))[1:-1, 1:-1]
        assert inside[stroke].min() > 3  # it keeps the margin
        assert ndimage.label(stroke, structure=np.ones((3, 3)))[1] == 1  # one line
        assert stroke.sum() >= 60  # along the band's length (100 px - 2 x margin)
    np.testing.assert_array_equal(scr, make_scribbles(truth))


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
