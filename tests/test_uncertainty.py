"""Uncertainty and calibration: the metric functions against hand-computed cases, what the
refiner's uncertainty map shows for each kind of input, and the calibration temperature."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from refiner_helpers import tiny_refiner

from segrefine.diffusion.calibrate import fit_temperature
from segrefine.diffusion.refiner import Refiner, RefinerSpec
from segrefine.diffusion.uncertainty import kept_pixels, normalised_entropy, temper
from segrefine.errors import InputError
from segrefine.metrics import (
    UncertaintyScores,
    error_detection_auroc,
    errors_in_most_uncertain,
    expected_calibration_error,
)

# --- metrics ------------------------------------------------------------------------------


def test_auroc_is_the_share_of_error_correct_pairs_ranked_right():
    u = np.array([[0.1, 0.4], [0.2, 0.3]])
    truth = np.zeros((2, 2), np.uint8)
    pred = np.array([[0, 1], [1, 0]])  # errors at 0.4 and 0.2; right at 0.1 and 0.3
    # pairs (error, correct): (.4, .1) (.4, .3) (.2, .1) right, (.2, .3) wrong -> 3 / 4
    assert error_detection_auroc(u, pred, truth) == pytest.approx(0.75)


def test_auroc_counts_ties_half_and_leaves_void_out():
    u = np.full((2, 2), 0.5)
    truth = np.array([[0, 0], [0, 255]])
    pred = np.array([[1, 0], [0, 1]])  # one error; the void pixel's label is no error
    assert error_detection_auroc(u, pred, truth) == pytest.approx(0.5)


def test_auroc_tells_apart_tiny_uncertainties():
    """Most pixels are very sure: a histogram must not lump 1e-9 with 1e-7."""
    u = np.array([[1e-9, 1e-7]])
    assert error_detection_auroc(u, np.array([[0, 1]]), np.array([[0, 0]])) == 1.0


def test_ece_weighs_each_bins_gap_by_its_pixels():
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    pred = np.array([1, 1, 1, 1, 1, 1])
    truth = np.array([1, 1, 1, 0, 1, 1])
    # bin [0.933, 1]: 4 pixels, accuracy 0.75 at 0.95 -> 0.2; bin of 0.55: 2 right -> 0.45
    expected = (4 * 0.2 + 2 * 0.45) / 6
    assert expected_calibration_error(conf, pred, truth) == pytest.approx(expected)
    assert expected_calibration_error(conf[:4], pred[:4], truth[:4], bins=1) == pytest.approx(0.2)


def test_share_of_errors_in_the_most_uncertain_tenth():
    u = np.arange(20) / 19
    truth = np.zeros(20, np.uint8)
    pred = np.zeros(20, np.uint8)
    pred[[0, 18, 19]] = 1  # the two most uncertain pixels (the top 10%) and the least
    assert errors_in_most_uncertain(u, pred, truth) == pytest.approx(2 / 3)


def test_the_cut_shares_tied_pixels_out_evenly():
    pred = np.zeros(10, np.uint8)
    pred[0] = 1  # one error among ten equally uncertain pixels: the top one is 1/10 of it
    assert errors_in_most_uncertain(np.full(10, 0.3), pred, np.zeros(10, np.uint8)) == 0.1


def test_without_errors_the_detection_scores_are_undefined():
    u, labels = np.full((3, 3), 0.2), np.ones((3, 3), np.uint8)
    s = UncertaintyScores()
    s.update(u, np.full((3, 3), 0.9), labels, labels)
    summary = s.summary()
    assert summary["error_auroc"] is None and summary["errors_in_top10"] is None
    assert summary["ece"] == pytest.approx(0.1) and summary["error_rate"] == 0.0
    empty = UncertaintyScores().summary()
    assert empty["ece"] is None and empty["pixels"] == 0


def test_scores_accumulated_image_by_image_are_the_pooled_scores():
    rng = np.random.default_rng(0)
    u, conf = rng.random((2, 30, 30)), rng.uniform(0.5, 1, (2, 30, 30))
    truth = rng.integers(0, 2, (2, 30, 30))
    pred = np.where(rng.random((2, 30, 30)) < u, 1 - truth, truth)
    streamed = UncertaintyScores()
    for i in range(2):
        streamed.update(u[i], conf[i], pred[i], truth[i])
    pooled = UncertaintyScores()
    pooled.update(u.reshape(60, 30), conf.reshape(60, 30), pred.reshape(60, 30),
                  truth.reshape(60, 30))  # fmt: skip
    assert streamed.summary() == pytest.approx(pooled.summary(), rel=1e-12)
    assert streamed.summary()["error_auroc"] > 0.6  # errors were drawn where u is high


def test_maps_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="shape"):
        UncertaintyScores().update(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 2)),
                                   np.zeros((2, 2)))  # fmt: skip


# --- what the map shows -------------------------------------------------------------------


def _trained_looking(band: int = 2) -> Refiner:
    """A tiny two-class banded refiner whose head corrects (random output weights)."""
    ref = tiny_refiner(classes=("a", "b"), band=band)
    torch.nn.init.normal_(ref.net.out.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    ref.prepare_inference()
    return ref


def _square_mask() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[10:22, 10:22] = 1
    return image, mask


def test_a_hard_mask_is_sure_where_the_refiner_may_not_change_it():
    """Black outside the band: the mask's softening is the refiner's doubt, not the user's."""
    image, mask = _square_mask()
    out = _trained_looking().refine(image, labels=mask, samples=2)
    far = np.ones((32, 32), bool)
    far[5:27, 5:27] = False  # more than the band (2 px) and the softening from the edges
    assert np.all(out.uncertainty[far] == 0)
    assert out.uncertainty[9:23, 9:23].max() > 0.05  # the band shows the samples' doubt


def test_the_same_mask_as_probabilities_keeps_its_own_uncertainty():
    from segrefine.diffusion.onehot import probs_from_labels

    image, mask = _square_mask()
    probs = probs_from_labels(mask, 2)
    out = _trained_looking().refine(image, probs=probs, samples=2)
    far = np.s_[:3, :]
    expected = normalised_entropy(torch.from_numpy(probs), 0).numpy()
    np.testing.assert_allclose(out.uncertainty[far], expected[far], atol=1e-5)
    assert out.uncertainty[far].min() > 0.2  # 0.95 / 0.05 is what this input says


def test_tempering_softens_refined_pixels_only_and_keeps_their_labels():
    probs = torch.tensor([0.7, 0.3]).view(1, 2, 1, 1).expand(1, 2, 1, 2).contiguous()
    samples = torch.stack([probs, probs.clone()], 1)  # (1, 2, 2, 1, 2)
    samples[0, :, :, 0, 1] = torch.tensor([0.9, 0.1])  # both samples refine the second pixel
    kept = kept_pixels(samples, probs)
    assert kept[0, :, 0].tolist() == [[True, False], [True, False]]
    soft = temper(samples, kept, 2.0)
    assert torch.equal(soft[..., 0, 0], samples[..., 0, 0])
    assert soft[0, 0, 0, 0, 1].item() == pytest.approx(3 / 4)  # sqrt(.9) / (sqrt(.9) + sqrt(.1))
    assert torch.equal(temper(samples, kept, 1.0), samples)


def test_a_refiner_applies_its_runs_temperature():
    image, mask = _square_mask()
    ref = _trained_looking()
    plain = ref.refine(image, labels=mask, samples=2)
    ref.temperature = 3.0
    soft = ref.refine(image, labels=mask, samples=2)
    changed = plain.uncertainty > 0
    assert np.all(soft.uncertainty[changed] >= plain.uncertainty[changed] - 1e-6)
    assert np.array_equal(soft.uncertainty == 0, plain.uncertainty == 0)


def test_a_run_config_with_an_impossible_temperature_is_refused(tmp_path):
    spec = tiny_refiner().spec
    good = RefinerSpec.from_json({**spec.to_json(), "calibration": {"temperature": 1.5}})
    assert Refiner.from_spec(good).temperature == 1.5
    for bad in (0, -1, "hot", True, 1e9):
        with pytest.raises(InputError, match="temperature"):
            RefinerSpec.from_json({**spec.to_json(), "calibration": {"temperature": bad}})
    json.dumps(good.to_json())  # what config.json holds


def test_the_fitted_temperature_minimises_the_nll_and_leaves_the_refiner_as_it_was():
    rng = np.random.default_rng(1)
    ref = _trained_looking()
    images, truths, masks = [], [], []
    for _ in range(3):
        image, mask = _square_mask()
        truth = mask.copy()
        truth[rng.random(mask.shape) < 0.05] ^= 1  # the refiner cannot know these
        images.append(image), truths.append(truth), masks.append(mask)
    fit = fit_temperature(ref, images, truths, labels=masks, samples=2, tolerance=0.05)
    assert ref.temperature == 1.0
    assert 0.25 <= fit["temperature"] <= 4 and fit["nll_after"] <= fit["nll_before"]
    assert fit["pixels"] == 3 * 32 * 32 and math.isfinite(fit["nll_after"])


def test_a_class_agnostic_refiner_shows_a_hard_mask_as_sure_outside_the_band_too():
    from refiner_helpers import TINY

    from segrefine.diffusion import RefinerConfig

    torch.manual_seed(0)
    cfg = RefinerConfig(data="unused", band=2, class_agnostic=True, **TINY)
    ref = Refiner.from_spec(cfg.spec(("ignored",)), "cpu")
    torch.nn.init.normal_(ref.net.out.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    ref.prepare_inference()
    image, mask = _square_mask()
    out = ref.refine(image, labels=mask, samples=2)
    far = np.ones((32, 32), bool)
    far[5:27, 5:27] = False
    assert np.all(out.uncertainty[far] == 0) and out.uncertainty.max() > 0.05


def test_calibrating_a_run_records_the_temperature_that_every_load_applies(
    tmp_path, synthetic_root, trained_run, trained_refiner
):
    import shutil

    from segrefine.diffusion.calibrate import calibrate_refiner

    run = tmp_path / "refiner"
    shutil.copytree(trained_refiner[0], run)
    record = calibrate_refiner(run, synthetic_root, "val", trained_run)
    config = json.loads((run / "config.json").read_text())
    assert config["calibration"] == record and record["split"] == "val"
    assert Refiner.load(run, "cpu").temperature == record["temperature"]
    assert record["nll_after"] <= record["nll_before"]
    with pytest.raises(InputError, match="zoo"):
        calibrate_refiner("zoo:anything", synthetic_root, "val", trained_run)
