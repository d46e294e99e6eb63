"""DiffSeg, the label-free variant: self-attention aggregation, KL merging and labelling on
planted arrays, then one run on the tiny random Stable Diffusion folder of test_attention."""

from __future__ import annotations

import numpy as np
import pytest

from segrefine.attention import merge_attention
from segrefine.attention.diffseg import (
    aggregate_self_attention,
    anchor_positions,
    labels_from_maps,
    segment_from_self_attention,
    symmetric_kl,
)
from segrefine.errors import InputError


def region_attention(regions: np.ndarray) -> np.ndarray:
    """(N, N) rows: each position attends uniformly to the positions of its own region."""
    flat = regions.ravel()
    same = (flat[:, None] == flat[None, :]).astype(np.float64)
    return same / same.sum(axis=1, keepdims=True)


def smooth_attention(grid=(8, 8), width=1.5) -> np.ndarray:
    """(N, N) rows: a Gaussian around each position (every row different)."""
    yy, xx = np.mgrid[0:grid[0], 0:grid[1]]
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    d2 = ((pos[:, None] - pos[None]) ** 2).sum(-1)
    a = np.exp(-d2 / (2 * width**2))
    return a / a.sum(axis=1, keepdims=True)


# -- planted arrays -------------------------------------------------------------------------------


def test_two_planted_regions_merge_into_exactly_those_two_segments():
    regions = np.zeros((8, 8), int)
    regions[2:6, 1:5] = 1  # a square inside a surround: unequal sizes
    attn = region_attention(regions)
    maps = merge_attention(attn, (8, 8), anchors=4, tau=1.1, iterations=3)
    assert maps.shape == (2, 8, 8) and maps.dtype == np.float32
    uniform = [(regions == r) / (regions == r).sum() for r in (0, 1)]
    np.testing.assert_allclose(maps, np.stack(uniform), atol=1e-7)  # first anchor: region 0
    np.testing.assert_array_equal(labels_from_maps(maps, (8, 8)), regions)
    # equal halves upsampled 4x: the boundary lands exactly between them
    halves = np.zeros((8, 8), int)
    halves[:, 4:] = 1
    maps = merge_attention(region_attention(halves), (8, 8), anchors=4)
    labels = labels_from_maps(maps, (32, 32))
    assert labels.shape == (32, 32) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.kron(halves, np.ones((4, 4), int)))


def test_small_tau_keeps_more_segments_than_large_tau():
    attn = smooth_attention()
    few = merge_attention(attn, (8, 8), anchors=4, tau=1e6)
    many = merge_attention(attn, (8, 8), anchors=4, tau=1e-9)
    middle = merge_attention(attn, (8, 8), anchors=4, tau=1.0)
    assert len(few) == 1 and len(many) == 16  # every anchor alone / everything together
    assert len(many) >= len(middle) >= len(few)
    np.testing.assert_allclose(few[0].sum(), 1.0, atol=1e-6)
    # one anchor's own row is its proposal when nothing else is close
    np.testing.assert_allclose(many[0].ravel(), attn[anchor_positions((8, 8), 4)[0]], atol=1e-7)
    size = (20, 24)
    n_many = len(np.unique(labels_from_maps(many, size)))
    assert n_many > len(np.unique(labels_from_maps(few, size))) == 1


def test_merging_and_labelling_are_deterministic_and_sized_like_the_image():
    rng = np.random.default_rng(0)
    layers = [rng.random((64, 64)) ** 4, rng.random((16, 16)) ** 4]
    layers = [(a / a.sum(axis=1, keepdims=True)).astype(np.float32) for a in layers]
    a = segment_from_self_attention(layers, (8, 8), (37, 51), tau=0.5, anchors=4)
    b = segment_from_self_attention(layers, (8, 8), (37, 51), tau=0.5, anchors=4)
    assert a.shape == (37, 51) and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    ids = np.unique(a)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # 0..K-1
    _, first = np.unique(a, return_index=True)
    assert list(first) == sorted(first)  # numbered in raster order of first appearance


def test_aggregation_brings_coarse_layers_to_the_finest_grid():
    fine = np.eye(64, dtype=np.float32)
    coarse = np.full((16, 16), 1 / 16, np.float32)  # uniform rows stay uniform
    agg, grid = aggregate_self_attention([coarse, fine], (8, 8))
    assert grid == (8, 8) and agg.shape == (64, 64)
    # weights by grid side: 8 / 12 for the 8 x 8 layer, 4 / 12 for the 4 x 4 one
    np.testing.assert_allclose(agg, np.eye(64) * 2 / 3 + 1 / 3 / 64, atol=1e-6)
    even, _ = aggregate_self_attention([coarse, fine], (8, 8), weighting="uniform")
    np.testing.assert_allclose(even, np.eye(64) / 2 + 1 / 2 / 64, atol=1e-6)
    # a lone layer at the target grid is unchanged
    rng = np.random.default_rng(1)
    one = rng.random((64, 64)).astype(np.float32)
    one /= one.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(aggregate_self_attention([one], (8, 8))[0], one, atol=1e-6)
    # a coarse layer alone: query positions repeated 2 x 2, key maps upsampled and renormalised
    up, grid = aggregate_self_attention([np.eye(16, dtype=np.float32), fine * 0 + 1 / 64],
                                        (8, 8), weighting="uniform")  # fmt: skip
    np.testing.assert_allclose(up.sum(axis=1), 1.0, atol=1e-6)
    blocks = up.reshape(4, 2, 4, 2, 64)
    np.testing.assert_allclose(blocks, np.broadcast_to(blocks[:, :1, :, :1], blocks.shape))
    peak = up.reshape(8, 8, 8, 8)[3, 5]  # query (3, 5) sits in coarse cell (1, 2)
    assert np.unravel_index(peak.argmax(), (8, 8)) in {(2, 4), (2, 5), (3, 4), (3, 5)}


def test_anchor_grid_and_kl():
    np.testing.assert_array_equal(anchor_positions((64, 64), 16)[:3], [65, 69, 73])  # 1, 5, ...
    assert len(anchor_positions((16, 16), 16)) == 256 and len(anchor_positions((4, 6), 16)) == 24
    np.testing.assert_array_equal(anchor_positions((5, 5), 1), [12])  # the centre
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    kl = symmetric_kl(p, p)
    assert kl[0, 0] == 0 and kl[1, 1] == 0
    expected = 0.5 * ((0.5 - 0.9) * np.log(0.5 / 0.9) + (0.5 - 0.1) * np.log(0.5 / 0.1))
    np.testing.assert_allclose(kl[0, 1], expected)
    np.testing.assert_allclose(kl, kl.T)


def test_bad_arguments_to_the_array_steps():
    attn = smooth_attention()
    with pytest.raises(ValueError, match="does not match"):
        merge_attention(attn, (4, 8))
    with pytest.raises(ValueError, match="iterations"):
        merge_attention(attn, (8, 8), iterations=0)
    with pytest.raises(ValueError, match="tau"):
        merge_attention(attn, (8, 8), tau=0.0)
    with pytest.raises(ValueError, match="anchor indices"):
        merge_attention(attn, (8, 8), anchors=np.array([64]))
    with pytest.raises(ValueError, match="weighting"):
        aggregate_self_attention([attn], (8, 8), weighting="max")
    with pytest.raises(ValueError, match="square"):
        aggregate_self_attention([attn[:, :10]], (8, 8))
    # explicit anchors and one threshold per round
    maps = merge_attention(attn, (8, 8), anchors=np.array([0, 63]), tau=[1e-9, 1e-9],
                           iterations=2)
    assert maps.shape == (2, 8, 8)


# -- the tiny random Stable Diffusion model -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    from test_attention import RES, build_tiny_sd

    from segrefine.attention import load_attention_model

    folder = build_tiny_sd(tmp_path_factory.mktemp("tiny_sd_diffseg") / "sd")
    return folder, load_attention_model(folder, device="cpu", resolution=RES)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 48, 3), np.uint8)
    img[:20] = (90, 160, 230)
    img[20:] = (60, 150, 50)
    return (img + rng.integers(0, 20, img.shape)).astype(np.uint8)


def test_diffseg_on_the_tiny_model(tiny, image):
    from segrefine.attention import diffseg_segment
    from segrefine.attention.diffseg import capture_self_attention, diffseg_method

    folder, model = tiny
    layers, latent_hw = capture_self_attention(model, image)  # empty prompt, no classes
    assert latent_hw == (16, 16)
    assert sorted(a.shape for a in layers) == [(64, 64)] + [(256, 256)] * 3
    a = diffseg_segment(model, image, tau=1.1, anchors=16, iterations=3)
    b = diffseg_segment(model, image, tau=1.1, anchors=16, iterations=3)
    assert a.shape == image.shape[:2] and a.dtype == np.int32
    np.testing.assert_array_equal(a, b)
    ids = np.unique(a)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))
    few = diffseg_segment(model, image, tau=1e6)
    assert len(np.unique(few)) == 1
    noised = diffseg_segment(model, image, noise=True, seed=3, timestep=100)
    assert noised.shape == image.shape[:2]
    # the benchmark callable: same labels as the function with the same settings
    method = diffseg_method(folder, device="cpu", resolution=32, max_self_tokens=64, tau=0.5)
    assert "DiffSeg" in method.name
    labels = method(image)
    assert labels.shape == image.shape[:2]
    np.testing.assert_array_equal(labels, diffseg_segment(method.model, image, tau=0.5))
    with pytest.raises(InputError, match="anchors"):
        diffseg_method(folder, anchors=0)
    with pytest.raises(InputError, match="tau"):
        diffseg_segment(model, image, tau=-1)
    with pytest.raises(InputError, match="RGB image"):
        diffseg_segment(model, image[..., 0])


def test_cluster_benchmark_gains_a_diffseg_row(run_cli, tiny, tmp_path):
    import json

    from test_unsupervised_cli import write_fake_bsds

    folder = tiny[0] if isinstance(tiny, tuple) else tiny
    data = write_fake_bsds(tmp_path / "bsds")
    code, _, err = run_cli("cluster-benchmark", "--data", data, "--out", tmp_path / "bench",
                           "--no-scribbles", "--attention-model", folder, "--threads", "1",
                           "--quiet")  # fmt: skip
    assert code == 0, err
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert any(name.startswith("DiffSeg") for name in results) and len(results) == 4
    code, _, err = run_cli("cluster-benchmark", "--data", data, "--out", tmp_path / "b2",
                           "--attention-model", tmp_path / "nowhere")  # fmt: skip
    assert code == 2 and "nowhere" in err
