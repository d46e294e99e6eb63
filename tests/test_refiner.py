"""The diffusion refiner: one-hot maps, the two modes' sampling, degradations, bad inputs and the
denoiser's shared per-image work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from refiner_helpers import tiny_refiner

from segrefine.data.io import VOID
from segrefine.diffusion import (
    degrade,
    probs_from_labels,
    stochastic_onehot,
)
from segrefine.diffusion.modes import MODES, get_mode
from segrefine.diffusion.modes.paper import paper_image
from segrefine.diffusion.onehot import check_probs, labels_to_signed, prior_for_image
from segrefine.diffusion.sampling import ddim_schedule, make_scheduler, start_timestep
from segrefine.errors import InputError

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



def test_outside_the_band_probabilities_and_uncertainty_are_the_priors():
    """A trained head rescales the prior's log-probabilities (a learned temperature); where it
    may not correct, that must not turn a confident prior into an unsure-looking one."""
    ref = tiny_refiner(classes=("a", "b"), band=2)
    with torch.no_grad():
        ref.net.prior_scale.fill_(0.2)  # what training learned in a real run (0.14-0.46)
    image = np.full((32, 32, 3), 128, np.uint8)
    probs = np.full((2, 32, 32), 0.01, np.float32)
    probs[0, :, :16], probs[1, :, 16:] = 0.99, 0.99  # confident, one vertical boundary
    out = ref.refine(image, probs, samples=2)
    far = np.s_[:, :10]  # more than the band's 2 px from the boundary
    assert np.allclose(out.probs[(slice(None), *far)], probs[(slice(None), *far)], atol=1e-5)
    entropy = -(probs * np.log(probs)).sum(0) / np.log(2)
    assert np.allclose(out.uncertainty[far], entropy[far], atol=1e-4)
    assert out.uncertainty[far].max() < 0.1  # sure is shown as sure
    assert np.array_equal(out.labels, probs.argmax(0))

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


def test_the_copy_made_for_inference_refines_as_the_network_does():
    ref = tiny_refiner("default")
    ref.bf16 = False  # exact float32 comparison on any CPU
    gen = torch.Generator().manual_seed(0)
    torch.nn.init.normal_(ref.net.out.weight, std=0.5, generator=gen)
    for m in ref.net.modules():  # statistics that folding has to get right
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.normal_(1, 0.3, generator=gen)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    probs = np.full((3, 32, 32), 1 / 3, np.float32)
    plain = ref.refine(image, probs, steps=1, samples=2, seed=5)
    ref.prepare_inference()
    assert ref.inference_module is not ref.net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.inference_module.modules())
    fast = ref.refine(image, probs, steps=1, samples=2, seed=5)
    np.testing.assert_allclose(fast.probs, plain.probs, atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in ref.net.modules())  # kept
    ref.net = tiny_refiner("default").net  # a new network: the old copy is not used
    assert ref.inference_module is ref.net


def test_bf16_sampling_returns_float32_close_to_float32_sampling():
    ref = tiny_refiner("default")
    torch.nn.init.normal_(ref.net.out.weight, std=0.5, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    probs = rng.dirichlet(np.ones(3), (32, 32)).transpose(2, 0, 1).astype(np.float32)
    ref.bf16 = False
    exact = ref.refine(image, probs, steps=1, samples=2, seed=5)
    ref.bf16 = True
    half = ref.refine(image, probs, steps=1, samples=2, seed=5)
    assert half.probs.dtype == np.float32
    assert not np.array_equal(half.probs, exact.probs)  # bf16 really ran
    np.testing.assert_allclose(half.probs, exact.probs, atol=0.05)


def test_a_loaded_segmenter_predicts_with_its_inference_copy_as_without(trained_run):
    from segrefine import Segmenter

    seg = Segmenter.load(trained_run, "cpu")
    assert seg.inference_module is not seg.model
    image = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    fast = seg.predict(image)
    seg._fast = None  # the network itself
    np.testing.assert_allclose(seg.predict(image), fast, atol=1e-5)


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


def test_a_run_can_choose_its_degradations():
    """``RefinerConfig.degrade`` overrides the error kinds training and validation draw: with
    every kind off and no noise the coarse masks keep the truth's labels; unknown keys fail."""
    from types import SimpleNamespace

    from segrefine.diffusion import RefinerConfig
    from segrefine.diffusion.batches import BatchSource, validation_priors

    off = {"p_morph": 0, "p_jitter": 0, "p_coarse": 0, "p_delete": 0, "p_insert": 0,
           "p_swap": 0, "noise": 0.0, "blur": (0.5, 0.5)}  # fmt: skip
    masks = torch.zeros(8, 32, 32, dtype=torch.int64)
    masks[:, 8:24, 6:20] = 1
    images = torch.full((8, 32, 32, 3), 128, dtype=torch.uint8)
    changed = []
    for degrade_with in ({}, off):
        cfg = SimpleNamespace(batch_size=8, crop=None, seed=0, oof_fraction=0.0,
                              degrade=degrade_with)  # fmt: skip
        _, y, probs = BatchSource(cfg, images, masks, 2).draw(step=1)
        # augmentation pads with void, which degradations count as background
        changed.append(int(((probs.argmax(1) != y) & (y != VOID)).sum()))
        val = SimpleNamespace(items=[SimpleNamespace(mask=masks[0].numpy())], num_classes=2)
        cfg.segmenter = None
        changed[-1] += int((validation_priors(cfg, val, "cpu")[0].argmax(0) != masks[0].numpy())
                           .sum())  # fmt: skip
    assert changed[0] > 0 and changed[1] == 0
    for bad in ({"p_teleport": 1.0}, {"p_morph": "often"}, {"blur": [1.0]}):
        with pytest.raises(InputError, match="degrade"):
            RefinerConfig(data="d", degrade=bad)


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


def test_coarse_inputs_smaller_than_the_image_are_upsampled():
    mask = np.zeros((16, 24), np.uint8)
    mask[4:12, 6:18] = 1
    up = prior_for_image((32, 48), 2, labels=mask)  # softened, then upsampled smoothly
    assert up.shape == (2, 32, 48)
    np.testing.assert_allclose(up.sum(0), 1, atol=1e-5)
    blocky = np.kron(mask, np.ones((2, 2), np.uint8))  # nearest-neighbour upsampling
    assert np.mean(up.argmax(0) == blocky) > 0.97  # the same mask, rounded at its corners
    assert 0.1 < up[1, 7, 20] < 0.9  # a boundary pixel of the upsampled mask is unsure
    probs = prior_for_image((32, 48), 2, probs=probs_from_labels(mask, 2))
    np.testing.assert_allclose(probs, up, atol=1e-6)
    ref = tiny_refiner(classes=("a", "b"))
    out = ref.refine(np.zeros((32, 48, 3), np.uint8), labels=mask)
    assert out.labels.shape == (32, 48)


@pytest.mark.parametrize("shape", [(64, 96), (32, 24)])
def test_a_larger_coarse_input_or_another_aspect_ratio_is_refused(shape):
    with pytest.raises(InputError, match=r"label mask is \d+x\d+ but its image is 48x32"):
        prior_for_image((32, 48), 2, labels=np.zeros(shape, np.uint8))


def test_class_count_mismatch_is_an_input_error():
    ref = tiny_refiner(classes=("a", "b", "c"))
    with pytest.raises(InputError, match="trained for 3"):
        ref.refine(np.zeros((32, 32, 3), np.uint8), np.full((2, 32, 32), 0.5, np.float32))


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
