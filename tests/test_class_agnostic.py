"""A class-agnostic refiner: trained on every class against the rest, it refines any label
map one class at a time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from refiner_helpers import TINY, tiny_config

from segrefine.data.io import VOID
from segrefine.diffusion import Refiner, RefinerConfig, train_refiner
from segrefine.diffusion.onehot import prior_for_image
from segrefine.errors import InputError


def _agnostic(band: int = 2) -> Refiner:
    torch.manual_seed(0)
    cfg = RefinerConfig(data="unused", band=band, class_agnostic=True, **TINY)
    return Refiner.from_spec(cfg.spec(("ignored",)), "cpu")


def test_its_classes_are_background_and_object_and_it_needs_no_segmenter():
    ref = _agnostic()
    assert ref.class_names == ("background", "object") and ref.spec.class_agnostic
    with pytest.raises(InputError, match="class-agnostic"):
        RefinerConfig(data="d", class_agnostic=True, segmenter="some_run")
    with pytest.raises(InputError, match="class-agnostic"):
        RefinerConfig(data="d", class_agnostic=True, mode="paper")


def test_an_untrained_one_returns_any_label_map_it_is_given():
    """Each class is refined against the rest and recombined; a head that changes nothing
    (an untrained one starts at zero) must give back the input, whatever its class count."""
    ref = _agnostic()
    rng = np.random.default_rng(0)
    # at the working size (short side 32), so no resizing round trip blurs small regions
    image = rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)
    for c in (2, 3, 7):
        labels = np.zeros((32, 40), np.uint8)
        for k in range(1, c):
            labels[rng.integers(0, 24) :][:, rng.integers(0, 32) :][:10, :8] = k
        out = ref.refine(image, labels=labels, samples=2)
        assert out.probs.shape == (c, 32, 40)
        prior = prior_for_image(labels.shape, c, labels=labels)  # the mask, softened
        assert np.array_equal(out.labels, prior.argmax(0))
        np.testing.assert_allclose(out.probs, prior, atol=1e-3)
        np.testing.assert_allclose(out.probs.sum(0), 1, atol=1e-5)
        present = len(np.unique(labels))
        # each task both ways round (as given and with its sides swapped)
        assert out.nfe == 2 * (1 if c == 2 else present) * ref.nfe(None, 2, None)


def test_one_vs_rest_replaces_each_present_class_by_its_refinement(monkeypatch):
    ref = _agnostic()
    probs = np.zeros((3, 8, 8), np.float32)
    probs[0], probs[1, :, :4], probs[2, :, 4:] = 0.2, 0.8, 0.8
    probs[0, :, :4], probs[0, :, 4:] = 0.1, 0.1
    probs[2, :, :4], probs[1, :, 4:] = 0.1, 0.1
    seen = []

    def fake(images, priors, *args):  # class 2 is refined to "everywhere", either way round
        from segrefine.diffusion.refiner import Refinement

        seen.extend(p.shape for p in priors)
        out = []
        for p in priors:
            q = p.copy()
            for side in (0, 1):
                if np.allclose(p[side], probs[2]):
                    q[side], q[1 - side] = 0.99, 0.01
            out.append(Refinement(q.argmax(0), q, np.zeros(p.shape[1:], np.float32), 1))
        return out

    monkeypatch.setattr(ref, "_refine_priors", fake)
    out = ref.refine(np.zeros((8, 8, 3), np.uint8), probs)
    # classes 1 and 2 present (0 is not in the argmax), each as given and swapped
    assert seen == [(2, 8, 8)] * 4
    assert (out.labels == 2).all()  # the more confident refinement wins the overlap


def test_a_bias_towards_the_side_called_object_cancels(monkeypatch):
    """A network that grows whichever side is 1 (one trained with swapped sides did) changes
    nothing: each task is refined both ways round and the two averaged."""
    from segrefine.diffusion.refiner import Refinement

    ref = _agnostic()
    labels = np.zeros((16, 16), np.uint8)
    labels[4:12, 3:9] = 1

    def grows_side_one(images, priors, *args):
        out = []
        for p in priors:
            # a mask's probabilities lie in [0.05, 0.95]: the shift keeps them probabilities
            q = p + np.array([-0.04, 0.04], np.float32)[:, None, None]
            out.append(Refinement(q.argmax(0), q, np.zeros(p.shape[1:], np.float32), 1))
        return out

    monkeypatch.setattr(ref, "_refine_priors", grows_side_one)
    out = ref.refine(np.zeros((16, 16, 3), np.uint8), labels=labels)
    prior = prior_for_image(labels.shape, 2, labels=labels)
    np.testing.assert_allclose(out.probs, prior, atol=1e-6)
    assert np.array_equal(out.labels, labels)


def test_trains_on_every_class_against_the_rest(tmp_path, synthetic_root):
    cfg = tiny_config(synthetic_root, class_agnostic=True, iterations=4, val_every=4, band=2)
    best = train_refiner(cfg, tmp_path / "run", device="cpu", progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_names"] == ["background", "object"] and config["class_agnostic"]
    assert config["classes"] is None and best["val"]["num_images"] > 8  # one per (image, class)
    ref = Refiner.load(tmp_path / "run", "cpu")
    image = np.asarray(Image.open(sorted((synthetic_root / "images" / "val").iterdir())[0]))
    mask = np.asarray(Image.open(sorted((synthetic_root / "masks" / "val").iterdir())[0]))
    assert ref.refine(image, labels=mask).probs.shape[0] >= mask.max() + 1


def test_refine_cli_keeps_the_masks_classes(run_cli, tmp_path, synthetic_root):
    ref = _agnostic()
    ref.save_pretrained(tmp_path / "agnostic")
    masks = tmp_path / "masks"
    masks.mkdir()
    for src in sorted((synthetic_root / "masks" / "val").iterdir()):
        (masks / src.name).write_bytes(src.read_bytes())
    (masks / "classes.txt").write_text((synthetic_root / "classes.txt").read_text())
    code, _, err = run_cli("refine", "--refiner", tmp_path / "agnostic", "--images",
                           synthetic_root, "--masks", masks, "--out", tmp_path / "out",
                           "--device", "cpu", "-q")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "out" / "classes.txt").read_text() == (
        synthetic_root / "classes.txt").read_text()


def test_training_shows_each_item_either_way_round():
    from types import SimpleNamespace

    from segrefine.diffusion.batches import BatchSource

    masks = torch.zeros(4, 32, 32, dtype=torch.int64)
    masks[:, :, :8] = 1  # a small object: a quarter of every image
    masks[:, 0, :] = VOID
    images = torch.full((4, 32, 32, 3), 128, dtype=torch.uint8)
    drawn = []
    for agnostic in (False, True):
        cfg = SimpleNamespace(batch_size=64, crop=None, seed=0, oof_fraction=0.0,
                              class_agnostic=agnostic)  # fmt: skip
        drawn.append(BatchSource(cfg, images, masks, 2).draw(step=3))
    (x, y, probs), (x2, y2, probs2) = drawn
    assert torch.equal(x, x2)  # the same items, some turned round: labels and inputs alike
    swapped = (y2 != y).flatten(1).any(1)
    assert 16 < int(swapped.sum()) < 48
    assert torch.equal(y2[swapped], torch.where(y[swapped] == VOID, VOID, 1 - y[swapped]))
    assert torch.equal(probs2[swapped], probs[swapped].flip(1))
    assert torch.equal(probs2[~swapped], probs[~swapped]) and torch.equal(y2[~swapped], y[~swapped])


def test_the_encoder_can_start_from_a_segmenter_of_other_classes(tmp_path, synthetic_root,
                                                                  trained_run):
    from segrefine import checkpoint

    cfg = tiny_config(synthetic_root, class_agnostic=True, iterations=1, val_every=1,
                      width=4, depth=2, lr=1e-12, init_encoder=str(trained_run))  # fmt: skip
    train_refiner(cfg, tmp_path / "run", device="cpu", progress=False)
    seg, _ = checkpoint.load_tensors(trained_run / checkpoint.WEIGHTS)
    enc = Refiner.load(tmp_path / "run", "cpu").net.encoder.state_dict()
    # the learned weights (BatchNorm's running statistics move with the training step)
    same = [n for n in seg if n in enc and enc[n].shape == seg[n].shape
            and "running" not in n and "num_batches" not in n]  # fmt: skip
    assert len(same) > len(enc) // 3
    for name in same:
        torch.testing.assert_close(enc[name], seg[name], atol=1e-6, rtol=0)
    first = next(n for n in seg if n in enc and enc[n].ndim == 4 and enc[n].shape[1] == 5)
    torch.testing.assert_close(enc[first][:, :3], seg[first], atol=1e-6, rtol=0)
    assert not enc[first][:, 3:].any()  # the two probability channels start at zero
    bad = tiny_config(synthetic_root, class_agnostic=True, init_encoder=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="nope"):
        train_refiner(bad, tmp_path / "bad", device="cpu", progress=False)
    assert not (tmp_path / "bad").exists()
