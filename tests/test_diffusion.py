"""The diffusion refiner: one-hot maps, the two sampling loops, training, and bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segrefine.data.io import VOID
from segrefine.diffusion import (
    Refiner,
    RefinerConfig,
    degrade,
    probs_from_labels,
    stochastic_onehot,
    train_refiner,
)
from segrefine.diffusion.modes import MODES, get_mode
from segrefine.diffusion.modes.paper import paper_image
from segrefine.diffusion.onehot import check_probs, labels_to_signed
from segrefine.diffusion.sampling import ddim_schedule, make_scheduler, start_timestep
from segrefine.errors import InputError

TINY = {"size": 32, "width": 8, "depth": 2, "features": 8, "head_width": 8, "batch_size": 4}


def tiny_refiner(mode: str = "default", classes=("a", "b", "c"), band: int = 0) -> Refiner:
    torch.manual_seed(0)
    cfg = RefinerConfig(data="unused", mode=mode, band=band, **TINY)
    return Refiner.from_spec(cfg.spec(classes), "cpu")


# --- one-hot maps -------------------------------------------------------------------------


def test_stochastic_onehot_is_plus_minus_one_with_one_winner_per_pixel():
    probs = torch.softmax(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), 1)
    y = stochastic_onehot(probs, torch.Generator().manual_seed(1))
    assert y.shape == probs.shape
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    assert torch.all((y == 1).sum(1) == 1)


def test_stochastic_onehot_draws_labels_with_the_given_probabilities():
    probs = torch.tensor([0.2, 0.8]).view(1, 2, 1, 1).expand(1, 2, 100, 100).contiguous()
    y = stochastic_onehot(probs, torch.Generator().manual_seed(0))
    share = (y[0, 1] == 1).float().mean().item()
    assert abs(share - 0.8) < 0.02


def test_stochastic_onehot_of_a_certain_map_is_its_argmax():
    labels = torch.randint(0, 3, (1, 6, 6), generator=torch.Generator().manual_seed(0))
    certain = (labels_to_signed(labels, 3) + 1) / 2
    assert torch.equal(stochastic_onehot(certain), labels_to_signed(labels, 3))


def test_void_pixels_claim_no_class():
    labels = torch.tensor([[[0, 1, VOID]]])
    signed = labels_to_signed(labels, 2)
    assert signed[0, :, 0, 2].tolist() == [0.0, 0.0]
    assert signed[0, :, 0, 1].tolist() == [-1.0, 1.0]


def test_probs_from_labels_is_a_distribution_that_keeps_the_mask():
    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    p = probs_from_labels(mask, 2, confidence=0.9, sigma=1.0)
    assert p.shape == (2, 20, 20)
    np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
    assert np.array_equal(p.argmax(0), mask)
    assert p[1, 10, 10] == pytest.approx(0.95, abs=1e-3)  # far from the boundary
    assert p[1, 5, 10] < 0.9  # less sure on it


# --- the two modes --------------------------------------------------------------------------


class Recorder(torch.nn.Module):
    """A stand-in denoiser that records what it is given."""

    def __init__(self):
        super().__init__()
        self.inputs, self.timesteps = [], []
        self.config = None

    def forward(self, x, t):  # paper mode: returns zero noise
        self.inputs.append(x.clone())
        self.timesteps.append(t.clone())
        return type("Out", (), {"sample": torch.zeros_like(x)})()

    def encode(self, image, probs):
        return image

    def prior_terms(self, probs):
        return torch.log(probs), None

    def head(self, features, x_t, t, prior):
        self.inputs.append(x_t.clone())
        self.timesteps.append(t.clone())
        return prior[0].repeat_interleave(x_t.shape[0] // prior[0].shape[0], 0)


def test_paper_mode_starts_at_strength_T_without_noising():
    sched = make_scheduler()
    image = torch.randn(1, 3, 8, 8)  # normalised, as the segmenters see it
    probs = torch.full((1, 2, 8, 8), 0.5)
    net = Recorder()
    get_mode("paper").sample(net, image, probs, sched, 0.5, 3, torch.Generator().manual_seed(0), 1)
    first = net.inputs[0]
    assert net.timesteps[0].tolist() == [499]
    assert torch.equal(first[:, :3], paper_image(image))  # the image channels are not noised
    assert set(first[:, 3:].unique().tolist()) == {-1.0, 1.0}  # a clean one-hot sample


def test_default_mode_noises_the_one_hot_start_to_strength_T():
    sched = make_scheduler()
    probs = torch.full((1, 2, 16, 16), 0.5)
    net = Recorder()
    get_mode("default").sample(net, torch.zeros(1, 3, 16, 16), probs, sched, 0.3, 2,
                               torch.Generator().manual_seed(0), 1)  # fmt: skip
    assert [t.item() for t in net.timesteps] == ddim_schedule(sched, 299, 2)[1] == [299, 157]
    first = net.inputs[0]
    assert not set(first.unique().tolist()) <= {-1.0, 1.0}
    # signal scale sqrt(alpha_bar_t), noise scale sqrt(1 - alpha_bar_t)
    ab = sched.alphas_cumprod[299].item()
    assert first.std().item() == pytest.approx(np.sqrt(ab + (1 - ab)), rel=0.15)


def test_start_timestep_follows_strength():
    sched = make_scheduler(1000)
    assert start_timestep(sched, 1.0) == 999
    assert start_timestep(sched, 0.5) == 499
    with pytest.raises(ValueError):
        start_timestep(sched, 0.0)


def test_an_untrained_default_refiner_returns_the_prior():
    """The head starts at zero, so training only has to learn corrections."""
    ref = tiny_refiner()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    probs = rng.dirichlet([0.3] * 3, size=(32, 32)).transpose(2, 0, 1).astype(np.float32)
    out = ref.refine(image, probs, samples=2)
    assert np.array_equal(out.labels, probs.argmax(0))
    assert out.probs.shape == (3, 32, 32) and out.uncertainty.shape == (32, 32)
    assert 0 <= out.uncertainty.min() and out.uncertainty.max() <= 1
    assert out.nfe == 2


@pytest.mark.parametrize("mode", ["default", "paper"])
def test_refinement_is_deterministic_under_a_seed(mode):
    ref = tiny_refiner(mode)
    if mode == "default":  # a trained head depends on the noise; an untrained one is zero
        torch.nn.init.normal_(
            ref.net.out.weight, std=0.5, generator=torch.Generator().manual_seed(0)
        )
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    probs = np.full((3, 32, 32), 1 / 3, np.float32)
    a = ref.refine(image, probs, steps=2, samples=2, seed=5)
    b = ref.refine(image, probs, steps=2, samples=2, seed=5)
    c = ref.refine(image, probs, steps=2, samples=2, seed=6)
    assert np.array_equal(a.probs, b.probs)
    assert not np.array_equal(a.probs, c.probs)


def test_flip_mirrors_half_of_the_samples_and_mirrors_them_back(monkeypatch):

    calls = []

    def fake_sampler(net, image, probs, scheduler, strength, steps, gen, samples):
        # noise-free and mirror-equivariant: flip must then change nothing at all
        calls.append((samples, image.clone()))
        return torch.softmax(image[:, :3] * 4, 1).repeat_interleave(samples, 0)

    monkeypatch.setattr(MODES["default"], "sample", fake_sampler)
    ref = tiny_refiner()
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)  # not symmetric
    probs = np.full((3, 32, 32), 1 / 3, np.float32)
    plain = ref.refine(image, probs, samples=3, flip=False)
    calls.clear()
    flipped = ref.refine(image, probs, samples=3, flip=True)
    np.testing.assert_allclose(flipped.probs, plain.probs, rtol=1e-5, atol=1e-6)
    assert [k for k, _ in calls] == [2, 1] and flipped.nfe == 3
    assert torch.equal(calls[1][1], calls[0][1].flip(-1))


def test_flip_is_seeded_changes_the_samples_and_needs_two_of_them():
    ref = tiny_refiner()
    torch.nn.init.normal_(ref.net.out.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    probs = rng.dirichlet([1.0] * 3, size=(32, 32)).transpose(2, 0, 1).astype(np.float32)
    a = ref.refine(image, probs, samples=2, seed=1, flip=True)
    b = ref.refine(image, probs, samples=2, seed=1, flip=True)
    c = ref.refine(image, probs, samples=2, seed=1)
    assert np.array_equal(a.probs, b.probs) and not np.allclose(a.probs, c.probs)
    with pytest.raises(InputError, match="samples >= 2"):
        ref.refine(image, probs, samples=1, flip=True)


def test_refine_resizes_to_the_network_and_back():
    ref = tiny_refiner()
    out = ref.refine(np.zeros((40, 60, 3), np.uint8), labels=np.ones((40, 60), np.uint8))
    assert out.labels.shape == (40, 60)
    assert (out.labels == 1).mean() > 0.9


# --- degradations ---------------------------------------------------------------------------


def test_degrade_is_deterministic_and_makes_plausible_errors():
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:44] = 1
    a = degrade(mask, 2, np.random.default_rng(3))
    b = degrade(mask, 2, np.random.default_rng(3))
    assert np.array_equal(a, b)
    ious = []
    for seed in range(20):
        p = degrade(mask, 2, np.random.default_rng(seed))
        np.testing.assert_allclose(p.sum(0), 1, atol=1e-5)
        pred = p.argmax(0) == 1
        ious.append((pred & (mask == 1)).sum() / (pred | (mask == 1)).sum())
    assert 0.4 < np.mean(ious) < 0.98  # wrong, but recognisably the same object


# --- bad inputs -----------------------------------------------------------------------------


def test_probability_maps_are_checked():
    good = np.full((2, 4, 4), 0.5, np.float32)
    with pytest.raises(InputError, match="3 classes|2 classes"):
        check_probs(good, 3)
    with pytest.raises(InputError, match="sum to 1"):
        check_probs(good * 0.5, 2)
    with pytest.raises(InputError, match="4x4 but its image is 5x5"):
        check_probs(good, 2, (5, 5))
    with pytest.raises(InputError, match="C x H x W"):
        check_probs(good[0], 2)


def test_class_count_mismatch_is_an_input_error():
    ref = tiny_refiner(classes=("a", "b", "c"))
    with pytest.raises(InputError, match="trained for 3"):
        ref.refine(np.zeros((32, 32, 3), np.uint8), np.full((2, 32, 32), 0.5, np.float32))


# --- training -------------------------------------------------------------------------------


def tiny_config(root, **kw) -> RefinerConfig:
    base = {**TINY, "batch_size": 8, "lr": 3e-3, "warmup": 20}
    return RefinerConfig(data=str(root), **{**base, **kw})


def test_a_trained_refiner_improves_degraded_masks_on_held_out_images(
    trained_refiner, synthetic_root
):
    from segrefine.data.datasets import load_split
    from segrefine.diffusion.batches import validation_priors
    from segrefine.metrics import SegmentationScores

    _, best = trained_refiner
    val = load_split(synthetic_root, "val", None, False, 32)
    priors = validation_priors(tiny_config(synthetic_root), val, "cpu")  # fixed degradations
    scores = SegmentationScores(val.num_classes, val.class_names)
    for p, item in zip(priors, val.items, strict=True):
        scores.update(p.argmax(0), item.mask)
    before = scores.summary()["mean_image_iou"]
    assert best["val"]["mean_image_iou"] > before + 3


def test_refiner_run_folder_has_config_weights_and_log(trained_refiner):
    out, _ = trained_refiner
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "refiner" and config["mode"] == "default"
    assert config["inference"] == {"steps": 1, "strength": 0.3, "samples": 2}
    assert (out / "model.safetensors").exists() and (out / "log.jsonl").exists()
    ref = Refiner.load(out, "cpu")
    assert ref.class_names == ("background", "blob", "star", "worm", "ring")


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_continues_exactly_where_a_crashed_run_stopped(
    tmp_path, synthetic_root, monkeypatch, ema_decay
):
    from segrefine import checkpoint
    from segrefine.diffusion import train as train_module

    cfg = tiny_config(synthetic_root, iterations=6, val_every=3, val_split=None, batch_size=4,
                      ema_decay=ema_decay)  # fmt: skip
    train_refiner(cfg, tmp_path / "straight", device="cpu", progress=False)

    real_append = checkpoint.append_log

    def crash_after_first(run_dir, record):
        real_append(run_dir, record)
        if record["step"] == 3:
            raise RuntimeError("simulated crash")

    monkeypatch.setattr(train_module.checkpoint, "append_log", crash_after_first)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_refiner(cfg, tmp_path / "crashed", device="cpu", progress=False)
    monkeypatch.setattr(train_module.checkpoint, "append_log", real_append)
    train_refiner(None, tmp_path / "crashed", resume=True, device="cpu", progress=False)
    a, _ = checkpoint.load_tensors(tmp_path / "straight" / "model.safetensors")
    b, _ = checkpoint.load_tensors(tmp_path / "crashed" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ema_warmup_schedules():
    from segrefine.diffusion.train import make_ema

    params = [torch.nn.Parameter(torch.zeros(2))]
    # diffusers' default warm-up: still below the 0.999 cap after 5500 steps
    ema = make_ema(params, RefinerConfig(data="unused", ema_decay=0.999))
    assert ema.get_decay(5501) == pytest.approx(5501 / 5510)
    # power 1: a running mean of every step (decay n / (n + 1)) until the cap takes over
    ema = make_ema(params, RefinerConfig(data="unused", ema_decay=0.999, ema_power=1.0))
    assert [ema.get_decay(n + 1) for n in (1, 2, 3)] == pytest.approx([1 / 2, 2 / 3, 3 / 4])
    assert ema.get_decay(5501) == 0.999
    values = [1.0, 2.0, 6.0]
    for v in values:  # the shadow is then the plain mean of the weights seen
        params[0].data.fill_(v)
        ema.step(params)
    assert torch.allclose(ema.shadow_params[0], torch.full((2,), 3.0))


def test_ema_weights_are_validated_kept_and_logged_beside_the_raw_ones(tmp_path, synthetic_root):
    from segrefine import checkpoint

    cfg = tiny_config(synthetic_root, iterations=4, val_every=2, batch_size=4, ema_decay=0.9,
                      validate_raw=True)  # fmt: skip
    train_refiner(cfg, tmp_path / "ema", device="cpu", progress=False)
    log = [json.loads(line) for line in (tmp_path / "ema" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert all("val" in r and "val_raw" in r for r in log)
    kept, meta = checkpoint.load_tensors(tmp_path / "ema" / "model.safetensors")
    last, _ = checkpoint.load_tensors(tmp_path / "ema" / "last.safetensors")
    raw = {k[6:]: v for k, v in last.items() if k.startswith("model.")}
    # the average differs from the raw weights, and what is kept is the average
    assert meta["step"] in (2, 4) and not torch.equal(kept["out.weight"], raw["out.weight"])
    if meta["step"] == 4:
        names = [n for n, _ in Refiner.load(tmp_path / "ema", "cpu").net.named_parameters()]
        shadow = last[f"extra.ema.{names.index('out.weight')}"]
        assert torch.equal(kept["out.weight"], shadow)


# --- the commands ---------------------------------------------------------------------------


def test_train_refiner_cli_with_out_of_fold_segmenters(
    run_cli, tmp_path, synthetic_root, trained_run
):
    out = tmp_path / "ref"
    code, stdout, err = run_cli(
        "train-refiner",
        "--data",
        synthetic_root,
        "--segmenter",
        trained_run,
        "--iterations",
        "4",
        "--batch-size",
        "4",
        "--out",
        out,
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    assert (out / "oof" / "fold0" / "model.safetensors").exists()
    assert (out / "oof" / "fold1" / "model.safetensors").exists()
    assert (out / "oof" / "views.safetensors").exists()
    assert "run saved" in stdout
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # validated (EMA weights) without the opt-in second validation of the raw weights
    assert log and all("val" in r and "val_raw" not in r for r in log)


def test_refine_cli_writes_labels_probabilities_and_uncertainty(
    run_cli, tmp_path, synthetic_root, trained_run, trained_refiner
):
    ref, _ = trained_refiner
    out = tmp_path / "refined"
    code, _, err = run_cli(
        "refine",
        "--refiner",
        ref,
        "--segmenter",
        trained_run,
        "--images",
        synthetic_root,
        "--split",
        "val",
        "--out",
        out,
        "--samples",
        "2",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    ids = sorted(p.stem for p in out.glob("*.npy"))
    assert len(ids) == 8
    probs = np.load(out / f"{ids[0]}.npy")
    assert probs.shape == (5, 32, 32) and probs.dtype == np.float16
    assert (out / f"{ids[0]}_uncertainty.png").exists() and (out / f"{ids[0]}.png").exists()


def test_refine_cli_takes_any_models_probabilities_and_rejects_bad_ones(
    run_cli, tmp_path, synthetic_root, trained_run, trained_refiner
):
    ref, _ = trained_refiner
    probs = tmp_path / "probs"
    code, _, err = run_cli(
        "predict",
        "--model",
        trained_run,
        "--images",
        synthetic_root,
        "--out",
        probs,
        "--save-probs",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    code, _, err = run_cli(
        "refine",
        "--refiner",
        ref,
        "--probs",
        probs,
        "--images",
        synthetic_root,
        "--out",
        tmp_path / "a",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    victim = sorted(probs.glob("*.npy"))[0]
    np.save(victim, np.full((5, 32, 32), 0.5, np.float16))  # does not sum to 1
    code, _, err = run_cli(
        "refine",
        "--refiner",
        ref,
        "--probs",
        probs,
        "--images",
        synthetic_root,
        "--out",
        tmp_path / "b",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 2 and "sum to 1" in err and victim.name in err
    assert len(err.strip().splitlines()) == 1
    np.save(victim, np.full((3, 32, 32), 1 / 3, np.float16))  # wrong class count
    code, _, err = run_cli(
        "refine",
        "--refiner",
        ref,
        "--probs",
        probs,
        "--images",
        synthetic_root,
        "--out",
        tmp_path / "c",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 2 and "3 classes" in err and victim.name in err


def test_refine_cli_flip_writes_results_and_rejects_one_sample(
    run_cli, tmp_path, synthetic_root, trained_run, trained_refiner
):
    ref, _ = trained_refiner
    common = ("--refiner", ref, "--segmenter", trained_run, "--images", synthetic_root,
              "--device", "cpu", "-q", "--flip")  # fmt: skip
    code, _, err = run_cli("refine", *common, "--out", tmp_path / "a")
    assert code == 0, err
    assert sorted((tmp_path / "a").glob("*_uncertainty.png"))
    code, _, err = run_cli("refine", *common, "--samples", "1", "--out", tmp_path / "b")
    assert code == 2 and "samples >= 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "b").exists()


def test_refine_cli_rejects_a_segmenter_with_other_classes(
    run_cli, tmp_path, synthetic_root, trained_run
):
    ref = tmp_path / "blob_refiner"
    train_refiner(
        tiny_config(synthetic_root, classes=["blob"], iterations=2, val_split=None),
        ref,
        device="cpu",
        progress=False,
    )
    code, _, err = run_cli(
        "refine",
        "--refiner",
        ref,
        "--segmenter",
        trained_run,
        "--images",
        synthetic_root,
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
    )
    assert code == 2 and "the segmenter has 5 classes" in err and "refiner has 2" in err


def test_benchmark_cli_writes_report_and_results(
    run_cli, tmp_path, synthetic_root, trained_run, trained_refiner
):
    ref, _ = trained_refiner
    out = tmp_path / "bench"
    code, stdout, err = run_cli(
        "benchmark",
        "--data",
        synthetic_root,
        "--segmenter",
        trained_run,
        "--refiner",
        ref,
        "--out",
        out,
        "--sweep",
        "1,2",
        "--other",
        trained_run,
        "-q",
    )
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    for part in ("baseline", "refined"):
        assert set(results[part]) >= {"mean_image_iou", "miou", "boundary_iou", "boundary_f"}
    assert results["nfe_per_image"] == 2  # default: 1 step x 2 samples
    assert results["settings"]["flip"] is False  # test-time mirroring is opt-in
    assert results["segment_images_per_s"] > 0 and results["refine_images_per_s"] > 0
    assert [s["steps"] for s in results["steps_sweep"]] == [1, 2]
    for name in ("report.md", "improved.png", "worsened.png", "scatter.png", "steps.png"):
        assert (out / name).exists(), name
    assert "Table 1" in (out / "report.md").read_text()


def test_training_on_crops_draws_crop_sized_batches(synthetic_root):
    from segrefine.data.datasets import load_split
    from segrefine.diffusion.batches import BatchSource

    train = load_split(synthetic_root, "train", None, False, 32)
    cfg = tiny_config(synthetic_root, crop=16)
    images = torch.from_numpy(np.stack([it.image for it in train.items]))
    masks = torch.from_numpy(np.stack([it.mask for it in train.items]).astype(np.int64))
    x, y, probs = BatchSource(cfg, images, masks, train.num_classes).draw(0)
    assert x.shape[-2:] == y.shape[-2:] == probs.shape[-2:] == (16, 16)
    x2, _, _ = BatchSource(cfg, images, masks, train.num_classes).draw(0)
    assert torch.equal(x, x2)  # the window comes from the step's seed

    # out-of-fold views are cut with the same window as their masks: probabilities that are
    # the masks' one-hot stay aligned with the masks after cropping (and flipping)
    c = train.num_classes
    views = {"images": images, "masks": masks.to(torch.uint8),
             "probs": torch.nn.functional.one_hot(masks, c).permute(0, 3, 1, 2).half()}  # fmt: skip
    only_views = tiny_config(synthetic_root, crop=16, oof_fraction=1.0)
    for step in range(3):
        x, y, probs = BatchSource(only_views, images, masks, c, views).draw(step)
        assert x.shape[-2:] == y.shape[-2:] == probs.shape[-2:] == (16, 16)
        assert torch.equal(probs.argmax(1), y)


def test_start_share_trains_that_share_exactly_at_the_inference_start(synthetic_root):
    from segrefine.diffusion.sampling import make_scheduler, start_timestep

    seen = []

    def net(x_t, t, image, probs):  # records the timesteps a training step draws
        seen.append(t)
        return torch.zeros(probs.shape, requires_grad=True)

    scheduler = make_scheduler()
    start = start_timestep(scheduler, 0.3)
    y = torch.zeros(64, 8, 8, dtype=torch.long)
    x, probs = torch.zeros(64, 3, 8, 8), torch.full((64, 2, 8, 8), 0.5)
    for share in (0.0, 0.5, 1.0):
        cfg = tiny_config(synthetic_root, start_share=share)
        get_mode("default").loss(net, scheduler, cfg, x, y, probs, step=0)
        at_start = (seen[-1] == start).float().mean().item()
        assert abs(at_start - share) < 0.2 if share < 1 else at_start == 1.0


def test_encoder_starts_as_the_segmenters_feature_extractor(trained_run):
    from segrefine import checkpoint
    from segrefine.segmenter import Segmenter

    seg = Segmenter.load(trained_run, "cpu")
    seg_cfg = checkpoint.read_config(trained_run, "segmenter")
    names = seg.class_names
    mode = get_mode("default")
    same = Refiner.from_spec(RefinerConfig(data="x", width=4, depth=2).spec(names)).net
    other = Refiner.from_spec(RefinerConfig(data="x", width=8, depth=2).spec(names)).net
    assert mode.init_from_segmenter(other, trained_run, seg_cfg) == 0
    copied = mode.init_from_segmenter(same, trained_run, seg_cfg)
    assert copied == len(same.encoder.state_dict()) - 2  # all but the output conv
    grabbed = {}
    same.encoder.ups[-1].register_forward_hook(lambda m, i, o: grabbed.setdefault("ref", o))
    seg.model.ups[-1].register_forward_hook(lambda m, i, o: grabbed.setdefault("seg", o))
    x, p = torch.randn(2, 3, 32, 32), torch.rand(2, len(names), 32, 32)
    with torch.no_grad():
        same.encode(x, p / p.sum(1, keepdim=True))
        seg.model(x)
    torch.testing.assert_close(grabbed["ref"], grabbed["seg"])  # probabilities start ignored


def test_head_shares_per_image_work_across_samples_exactly():
    # the split first convolution must equal the concatenated one it replaces, per sample
    from segrefine.diffusion.networks import ConditionalDenoiser, timestep_embedding

    torch.manual_seed(0)
    net = ConditionalDenoiser(3, width=4, depth=2, features=8, head_width=8, band=2).eval()
    torch.nn.init.normal_(net.out.weight)  # the output starts at zero: make it matter
    image = torch.randn(2, 3, 16, 16)
    probs = torch.softmax(torch.randn(2, 3, 16, 16), 1)
    k = 3
    x = torch.randn(2 * k, 3, 16, 16)
    t = torch.tensor([5, 5, 5, 40, 40, 40])
    with torch.no_grad():
        got = net.head(net.encode(image, probs), x, t, net.prior_terms(probs))
        feats = net.encoder(torch.cat([image, probs * 2 - 1], 1)).repeat_interleave(k, 0)
        emb = net.time_mlp(timestep_embedding(t, net.emb_dim))
        h = net.block2(net.block1(torch.cat([feats, x], 1), emb), emb)
        log_prior, band = (a.repeat_interleave(k, 0) for a in net.prior_terms(probs))
        want = net.prior_scale * log_prior + net.out(h) * band
    assert got.shape == (2 * k, 3, 16, 16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
