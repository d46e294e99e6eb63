"""Refinement at the image's own resolution: the passes' sizes, tiling, and the training crops
a native refiner learns from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refiner_helpers import TINY, tiny_config

from segrefine.data.transforms import resize_probs
from segrefine.diffusion import Refiner, RefinerConfig, train_refiner
from segrefine.diffusion.native import (
    TILE,
    _thick_changes,
    draw_native_crops,
    effective_size,
    pass_sizes,  # fmt: skip
    refine_pass,
)
from segrefine.diffusion.onehot import probs_from_labels


def test_passes_double_up_to_the_image_size_and_skip_a_tiny_last_step():
    assert pass_sizes((500, 750), 128) == [(250, 375), (500, 750)]
    assert pass_sizes((226, 246), 128) == [(226, 246)]  # one pass at 1.77x
    assert pass_sizes((150, 150), 128) == []  # 1.17x: the working size is close enough
    assert pass_sizes((128, 300), 128) == []


def native_refiner(band: int = 2) -> Refiner:
    torch.manual_seed(0)
    cfg = RefinerConfig(data="unused", native=True, band=band, **TINY)
    return Refiner.from_spec(cfg.spec(("bg", "object")), "cpu")


def test_an_untrained_native_refiner_returns_a_large_mask_unchanged_through_tiles():
    """The machinery alone (doubling passes, tiles, blending) must not move a boundary."""
    ref = native_refiner()
    assert ref.defaults["native"] is True
    mask = np.zeros((300, 600), np.uint8)
    mask[40:260, 100:520] = 1
    mask[120:180, 250:380] = 0  # a hole
    image = np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    out = ref.refine(image, labels=mask, input_size=ref.size)  # as if predicted small
    assert out.labels.shape == (300, 600) and out.uncertainty.shape == (300, 600)
    assert np.array_equal(out.labels, mask)


def test_finer_passes_draw_one_sample_unless_mirroring(monkeypatch):
    import segrefine.diffusion.native as native

    seen = []
    original = native.refine_pass

    def spy(refiner, image, probs, settings, *args, **kwargs):
        seen.append((settings["samples"], settings["flip"]))
        return original(refiner, image, probs, settings, *args, **kwargs)

    monkeypatch.setattr(native, "refine_pass", spy)
    ref = native_refiner()
    mask = np.zeros((300, 600), np.uint8)
    mask[40:260, 100:520] = 1
    image = np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    ref.refine(image, labels=mask, samples=4, input_size=ref.size)
    assert seen and all(s == (1, False) for s in seen)
    seen.clear()
    ref.refine(image, labels=mask, samples=4, flip=True, input_size=ref.size)  # mirroring
    assert seen and all(s == (4, True) for s in seen)  # needs its samples


def test_finer_passes_move_pixels_only_two_from_a_boundary_whatever_the_network_says(
        monkeypatch):  # fmt: skip
    import segrefine.diffusion.native as native

    ref = native_refiner(band=6)  # the network's own band is wider
    bands, original = [], native.refine_pass
    monkeypatch.setattr(native, "refine_pass", lambda *a, **kw: bands.append(a[5]) or original(*a))
    rng = np.random.default_rng(0)
    mask = (rng.random((300, 600)) > 0.5).astype(np.uint8)
    ref.refine(rng.integers(0, 255, (300, 600, 3), dtype=np.uint8), labels=mask, input_size=64)
    assert bands and set(bands) == {native.FINER_BAND}
    # a network that swaps the classes everywhere: only the finer band limits what changes
    ref.refine_tensors = lambda x, p, **kw: (p.flip(1), torch.zeros(p.shape[0], *p.shape[2:]))
    mask = np.zeros((100, 160), np.uint8)
    mask[30:70, 40:120] = 1
    probs = torch.from_numpy(probs_from_labels(mask, 2))
    image = np.zeros((100, 160, 3), np.uint8)
    settings = {"steps": 1, "strength": 0.3, "samples": 1, "flip": False}
    out, _ = refine_pass(ref, image, probs, settings, seed=0, band=native.FINER_BAND)
    changed = (out.argmax(0) != probs.argmax(0)).numpy()
    from scipy import ndimage

    size = 2 * native.FINER_BAND + 1  # pixels with the other class within two (any direction)
    near = ndimage.maximum_filter(mask, size) != ndimage.minimum_filter(mask, size)
    assert native.FINER_BAND == 2 and changed.any()
    assert not (changed & ~near).any()


def _spy_passes(monkeypatch) -> list[tuple[int, int]]:
    import segrefine.diffusion.native as native

    sizes = []
    original = native.refine_pass

    def spy(refiner, image, *args, **kwargs):
        sizes.append(image.shape[:2])
        return original(refiner, image, *args, **kwargs)

    monkeypatch.setattr(native, "refine_pass", spy)
    return sizes


def test_finer_passes_run_only_above_the_resolution_the_input_was_predicted_at(monkeypatch):
    sizes = _spy_passes(monkeypatch)
    ref = native_refiner()
    mask = np.zeros((300, 600), np.uint8)
    mask[40:260, 100:520] = 1
    image = np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    ref.refine(image, labels=mask)  # a mask at full size is taken as drawn there
    assert sizes == []
    ref.refine(image, labels=mask[::4, ::4])  # a quarter-size mask: the passes above 75 px
    assert sizes == [(150, 300), (300, 600)]
    assert pass_sizes((300, 600), ref.size)[0] == (75, 150)  # (which there is one at)
    sizes.clear()
    ref.refine(image, labels=mask[::2, ::2])  # half size: only the passes above it
    assert sizes == [(300, 600)]
    sizes.clear()
    # soft maps predicted at a quarter of the size and saved upsampled are recognised as such
    small = probs_from_labels(mask[::4, ::4], 2)
    up = resize_probs(torch.from_numpy(small), (300, 600)).numpy()
    ref.refine(image, probs=up)
    assert sizes[-1] == (300, 600) and (75, 150) not in sizes


def test_effective_size_finds_upsampled_maps_and_trusts_hard_masks():
    yy, xx = np.mgrid[:40, :60]
    small = ((yy - 20) ** 2 / 150 + (xx - 30) ** 2 / 300 < 1).astype(np.uint8)
    p = torch.from_numpy(probs_from_labels(small, 2))
    assert effective_size(p) == (40, 60)
    for f in (2, 4, 8):
        up = resize_probs(p, (40 * f, 60 * f))
        h, w = effective_size(up)
        assert h <= 40 * f / 1.5 and w <= 60 * f / 1.5  # detail at least 1.5x coarser
        hard = probs_from_labels(up.numpy().argmax(0).astype(np.uint8), 2)
        # at 2x its argmax is the small mask upsampled by nearest neighbour, all 2 x 2 blocks:
        # made small (block_size); at 4x and 8x it has detail of its own and is trusted
        assert effective_size(hard) == ((40, 60) if f == 2 else (40 * f, 60 * f))


def test_the_working_pass_carries_only_changes_two_pixels_thick():
    before = torch.zeros(2, 12, 12)
    before[0] = 1
    after = before.clone()
    after[:, 2, 1:10] = torch.tensor([0.0, 1.0])[:, None]  # a one-pixel line: boundary detail
    after[:, 6:9, 6:9] = torch.tensor([0.0, 1.0])[:, None, None]  # a 3 x 3 region
    keep = _thick_changes(before, after)[0]
    assert keep[2].sum() == 0
    assert keep[6:9, 6:9].all() and keep[5:10, 5:10].all()  # grown by a pixel
    assert keep.sum() == 25


def test_tiles_without_band_pixels_are_not_computed():
    ref = native_refiner()
    calls = []
    real = ref.refine_tensors

    def counting(x, p, **kw):
        calls.append(x.shape[0])
        return real(x, p, **kw)

    ref.refine_tensors = counting
    probs = torch.zeros(2, 2 * TILE, 3 * TILE)
    probs[0] = 1  # all background except one small square in the first tile
    probs[0, 10:40, 10:40], probs[1, 10:40, 10:40] = 0, 1
    image = np.zeros((2 * TILE, 3 * TILE, 3), np.uint8)
    settings = {"steps": 1, "strength": 0.3, "samples": 2, "flip": False}
    out, _ = refine_pass(ref, image, probs, settings, seed=0, band=2)
    assert sum(calls) == 1  # one tile of the six holds the boundary
    assert torch.equal(out[:, TILE:, TILE:], probs[:, TILE:, TILE:])


def test_native_training_crops_are_crop_sized_and_the_truth_share_is_the_truth():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((64, 96), np.uint8) for _ in range(3)]
    for m in masks:
        m[20:44, 30:70] = 1
    x, y, p = draw_native_crops(images, masks, 5, 16, 32, 2, rng, truth_share=1.0)
    assert x.shape == (5, 3, 16, 16) and y.shape == (5, 16, 16) and p.shape == (5, 2, 16, 16)
    for yy, pp in zip(y, p, strict=True):
        np.testing.assert_allclose(pp.numpy(), probs_from_labels(yy.numpy().astype(np.uint8), 2))
    _, y, p = draw_native_crops(images, masks, 5, 16, 32, 2, rng, truth_share=0.0)
    np.testing.assert_allclose(p.sum(1).numpy(), 1, atol=1e-5)


def test_a_tile_holds_band_pixels_exactly_when_the_network_would_find_some():
    from segrefine.diffusion.native import _holds_band
    from segrefine.diffusion.networks import uncertain_band

    rng = np.random.default_rng(0)
    for i in range(200):
        c = 2 + i % 3
        logits = torch.from_numpy(rng.normal(0, 1, (c, 12, 12)).astype(np.float32))
        if i % 2:  # mostly one sure class, sometimes with a stray pixel of another
            logits[0] += 8
            if i % 4 == 1:
                logits[1, rng.integers(12), rng.integers(12)] += 30
        probs = torch.softmax(logits * rng.uniform(0.5, 4), 0)
        top, labels = probs.max(0)
        for radius in (1, 6):
            assert _holds_band(top, labels) == bool(uncertain_band(probs[None], radius).any())


def test_label_edges_by_running_sums_match_max_and_min_filters():
    from scipy import ndimage

    from segrefine.diffusion.networks import near_label_edge

    rng = np.random.default_rng(3)
    for i in range(300):
        h, w, c, radius = rng.integers(1, 30), rng.integers(1, 30), rng.integers(1, 4), i % 8
        labels = rng.integers(0, c, (h, w))
        if i % 2:  # blobs, as masks have, besides noise
            small = rng.integers(0, c, (max(1, h // 6), max(1, w // 6)))
            labels = np.kron(small, np.ones((6, 6), int))[:h, :w]
            labels = np.pad(labels, ((0, h - labels.shape[0]), (0, w - labels.shape[1])), "edge")
        size = 2 * radius + 1  # windows cut at the edges = edge-replicated filters
        want = (ndimage.maximum_filter(labels, size, mode="nearest")
                != ndimage.minimum_filter(labels, size, mode="nearest"))  # fmt: skip
        got = near_label_edge(torch.from_numpy(labels)[None], radius)[0].numpy()
        assert np.array_equal(got, want), (h, w, c, radius)


def test_a_batch_that_draws_no_finer_scale_crop_is_all_working_size():
    from types import SimpleNamespace

    from segrefine.diffusion.batches import BatchSource

    rng = np.random.default_rng(0)
    full = ([rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)], [np.ones((64, 96), np.uint8)])
    cfg = SimpleNamespace(batch_size=4, crop=16, size=32, seed=0, oof_fraction=0.0,
                          native_share=1e-9, truth_share=0.0)  # fmt: skip
    images = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    source = BatchSource(cfg, images, torch.ones(2, 32, 32, dtype=torch.int64), 2, native=full)
    x, y, p = source.draw(0)  # once crashed: stacking an empty list of crops
    assert x.shape == (4, 3, 16, 16) and y.shape == (4, 16, 16) and p.shape == (4, 2, 16, 16)


@pytest.mark.parametrize("native_share", [0.5, 1.0])
def test_a_native_refiner_trains_and_records_native_refinement(tmp_path, synthetic_root,
                                                                native_share):  # fmt: skip
    cfg = tiny_config(synthetic_root, native=True, native_share=native_share, crop=16,
                      iterations=2, val_every=2)  # fmt: skip
    train_refiner(cfg, tmp_path / "run", device="cpu", progress=False)
    ref = Refiner.load(tmp_path / "run", "cpu")
    assert ref.defaults["native"] is True and ref.spec.train["native_share"] == native_share
