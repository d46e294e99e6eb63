"""StableSeg++: cross-attention layer weights fitted on pseudo-masks, their file, the commands
that make and use them, and the long-prompt error -- on planted attention and on the tiny
random Stable Diffusion folder of test_attention (no weights are downloaded)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("transformers")


from segrefine.attention import (  # noqa: E402
    CapturedAttention,
    LayerWeights,
    aggregate_cross,
    build_prompt,
    fit_layer_weights,
    layer_maps,
    load_layer_weights,
    save_layer_weights,
    segment_captured,
)
from segrefine.attention.maps import layer_grid, normalise_max, resize_maps  # noqa: E402
from segrefine.errors import InputError  # noqa: E402

CLASSES = ["horse", "grass", "sky"]


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = np.zeros((40, 48, 3), np.uint8)
    img[:, 24:] = (200, 40, 40)
    return (img + rng.integers(0, 30, img.shape)).astype(np.uint8)


def _mean_of_layers(layers, groups, latent_hw):
    """aggregate_cross as it was before layer weights: the reference for bit-identity."""
    grids = [layer_grid(layer.shape[0], latent_hw) for layer in layers]
    target = max(grids, key=lambda g: g[0] * g[1])
    total = np.zeros((len(groups), *target), dtype=np.float32)
    for layer, grid in zip(layers, grids, strict=True):
        per_class = np.stack([layer[:, list(tokens)].mean(axis=1) for tokens in groups])
        total += resize_maps(per_class.reshape(-1, *grid), target)
    return normalise_max(total / len(layers))


# -- weighted aggregation ------------------------------------------------------------------------


def test_default_aggregation_is_bit_identical_to_the_plain_mean(model, image):
    rng = np.random.default_rng(0)
    layers = [rng.random((n, 12)).astype(np.float32) for n in (256, 64, 256, 16)]
    groups = [[3], [5, 6], [9]]
    np.testing.assert_array_equal(aggregate_cross(layers, groups, (16, 16)),
                                  _mean_of_layers(layers, groups, (16, 16)))  # fmt: skip
    uniform = aggregate_cross(layers, groups, (16, 16), weights=[2.0] * 4)  # normalised
    np.testing.assert_allclose(uniform, _mean_of_layers(layers, groups, (16, 16)), atol=1e-6)
    cap = model.capture(image, CLASSES)
    seg = model.segment(image, CLASSES, layer_weights=None)
    np.testing.assert_array_equal(seg.cross, _mean_of_layers(cap.cross, cap.token_groups,
                                                             cap.latent_hw))  # fmt: skip
    again = segment_captured(cap, tuple(CLASSES), image.shape[:2])
    np.testing.assert_array_equal(seg.labels, again.labels)
    np.testing.assert_array_equal(seg.probs, again.probs)


def test_one_hot_weights_use_that_layer_alone():
    rng = np.random.default_rng(0)
    layers = [rng.random((64, 8)).astype(np.float32) for _ in range(3)]
    alone = aggregate_cross(layers, [[1], [2]], (8, 8), weights=[0, 1, 0])
    np.testing.assert_allclose(alone, aggregate_cross(layers[1:2], [[1], [2]], (8, 8)),
                               rtol=1e-6)  # fmt: skip
    for bad in ([1, 1], [1, -1, 1], [0, 0, 0], [1, float("nan"), 1]):
        with pytest.raises(ValueError, match="layer weights"):
            aggregate_cross(layers, [[1]], (8, 8), weights=bad)


def test_layer_maps_weighted_as_the_fit_does_give_segments_probabilities(model, image):
    """The fit weights each layer's (refined) maps; that must be segment's weighted result."""
    import torch

    from segrefine.attention.layers import _log_probs

    cap = model.capture(image, CLASSES)
    weights = LayerWeights(tuple(cap.cross_names), (0.1, 0.2, 0.3, 0.4))
    for sar in (True, False):
        seg = segment_captured(cap, tuple(CLASSES), cap.latent_hw, sar=sar,
                               layer_weights=weights)  # fmt: skip
        lm = layer_maps(cap, sar=sar)
        w = torch.tensor(weights.vector(cap.cross_names))
        probs = _log_probs(torch.from_numpy(lm.maps[None]), w, lm.grid, cap.latent_hw, 0.3,
                           False)[0].exp().numpy()  # fmt: skip
        np.testing.assert_allclose(probs, seg.probs, atol=1e-5)


# -- fitting -------------------------------------------------------------------------------------

NAMES = [f"layer{i}" for i in range(4)]
GRIDS = [(16, 16), (8, 8), (16, 16), (16, 16)]


def _planted(seed: int, informative: int = 2) -> tuple[CapturedAttention, np.ndarray]:
    """A pass where only layer ``informative`` attends to where the two classes are; the
    others attend as strongly, to random places. Returns it and its true labels, at 3x the
    16 x 16 latent (as an image would be)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((16, 16), np.uint8)
    y, x = rng.integers(2, 8, 2)
    truth[y : y + 7, x : x + 6] = 1
    truth[:3] = 2
    cross = []
    for i, (h, w) in enumerate(GRIDS):
        a = np.full((h * w, 77), 0.005, np.float32)
        if i == informative:
            for c in (1, 2):
                a[:, 3 + c] = 0.4 * (truth == c).ravel() + 0.05 * rng.random(h * w)
        else:
            a[:, 4:6] = 0.4 * rng.random((h * w, 2))
        cross.append(a)
    cap = CapturedAttention(
        prompt="planted", token_groups=[[4], [5]], latent_hw=(16, 16), cross=cross,
        cross_names=list(NAMES), self_attn=[np.eye(256, dtype=np.float32)], self_names=["self"],
    )
    return cap, np.kron(truth, np.ones((3, 3), np.uint8))


def test_fit_puts_the_weight_on_the_informative_layer():
    caps, masks = zip(*[_planted(s) for s in range(6)], strict=True)
    masks = [m.copy() for m in masks]
    masks[0][:5] = 255  # void pixels are left out of the loss
    fitted = fit_layer_weights(caps, masks, ["horse", "sky"])
    assert fitted.layers == tuple(NAMES) and fitted.fitted_on == 6
    assert fitted.classes == ("horse", "sky")
    assert fitted.weights[2] > 0.9, fitted.weights
    assert abs(sum(fitted.weights) - 1) < 1e-9 and min(fitted.weights) >= 0
    again = fit_layer_weights((c for c in caps), masks, ["horse", "sky"])  # a generator too
    assert again == fitted  # deterministic

    def accuracy(weights):
        return np.mean([(segment_captured(c, ("horse", "sky"), m.shape,
                                          layer_weights=weights).labels == m).mean()
                        for c, m in zip(caps, masks, strict=True)])  # fmt: skip

    assert accuracy(fitted) > accuracy(None) + 0.2


def test_fit_input_errors():
    cap, mask = _planted(0)
    with pytest.raises(InputError, match="label 3 is not one of the 3 classes"):
        fit_layer_weights([cap], [np.full_like(mask, 3)], ["horse", "sky"])
    with pytest.raises(InputError, match="every pseudo-mask is void"):
        fit_layer_weights([cap], [np.full_like(mask, 255)], ["horse", "sky"])
    with pytest.raises(InputError, match="no images"):
        fit_layer_weights([], [], ["horse", "sky"])
    with pytest.raises(InputError, match="2 classes, not the 3"):
        fit_layer_weights([cap], [mask], CLASSES)


# -- layer_weights.json --------------------------------------------------------------------------


def test_save_load_round_trip(model, image, tmp_path):
    cap = model.capture(image, CLASSES)
    # the model knows its layers without a pass (in module order, not the pass's)
    assert sorted(model.cross_layer_names) == sorted(cap.cross_names)
    weights = LayerWeights(tuple(reversed(cap.cross_names)), (0.5, 0.25, 0.125, 0.125),
                           classes=tuple(CLASSES), fitted_on=7)  # fmt: skip
    path = tmp_path / "layer_weights.json"
    save_layer_weights(path, weights)
    assert set(json.loads(path.read_text())) == {"layers", "weights", "classes", "fitted_on"}
    loaded = load_layer_weights(path, model.cross_layer_names)
    assert loaded == weights
    a = model.segment(image, CLASSES, layer_weights=weights)
    b = model.segment(image, CLASSES, layer_weights=loaded)
    np.testing.assert_array_equal(a.probs, b.probs)
    assert not np.array_equal(a.cross, model.segment(image, CLASSES).cross)


GOOD = {"layers": ["a", "b"], "weights": [0.5, 0.5], "classes": ["sky"], "fitted_on": 3}


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "not a layer weights file"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "weights"}), "expected a JSON object"),
    (json.dumps({**GOOD, "weights": [0.5, -0.5]}), "non-negative"),
    ('{"layers": ["a", "b"], "weights": [NaN, 1], "classes": [], "fitted_on": 1}', "finite"),
    (json.dumps({**GOOD, "weights": [0, 0]}), "not all zero"),
    (json.dumps({**GOOD, "weights": [1.0]}), "1 weights for 2 layers"),
    (json.dumps({**GOOD, "weights": [True, 1]}), "list of numbers"),
    (json.dumps({**GOOD, "layers": ["a", "a"]}), "each layer once"),
    (json.dumps({**GOOD, "layers": "a"}), "list of non-empty names"),
    (json.dumps({**GOOD, "fitted_on": -1}), "number of images"),
])  # fmt: skip
def test_bad_layer_weights_files(tmp_path, text, message):
    path = tmp_path / "layer_weights.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as err:
        load_layer_weights(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_layer_weights_of_another_model_are_refused(model, tmp_path):
    path = tmp_path / "layer_weights.json"
    names = model.cross_layer_names
    path.write_text(json.dumps({**GOOD, "layers": [*names[:-1], "up.attn2"],
                                "weights": [0.25] * 4}))  # fmt: skip
    assert load_layer_weights(path).layers[-1] == "up.attn2"  # well-formed on its own
    with pytest.raises(InputError, match="not this model's 4 .*'up.attn2'") as err:
        load_layer_weights(path, names)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(InputError, match="no such layer weights file"):
        load_layer_weights(tmp_path / "absent.json", names)


# -- the commands --------------------------------------------------------------------------------


def _error_line(err: str) -> str:
    """The one error line (transformers may print its loading progress bars before it)."""
    (line,) = [x for x in err.splitlines() if x.startswith("segrefine: error:")]
    return line


def test_fit_layer_weights_command_then_attention_segment(run_cli, sd_folder, synthetic_root,
                                                          tmp_path):  # fmt: skip
    """StableSeg++ end to end on the random model (one class, so its pseudo-masks are sure
    enough to fit on; their quality is meaningless, the files are the test)."""
    from PIL import Image

    out = tmp_path / "pseudo"
    code, stdout, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "attention",
                                "--attention-model", sd_folder, "--classes", "blob",
                                "--fit-layer-weights", "--out", out, "-q")  # fmt: skip
    assert code == 0, err
    assert "layer_weights.json" in stdout
    report = json.loads((out / "pseudo.json").read_text())
    assert report["method"] == "stableseg++" and report["num_images"] == 16
    assert len(list((out / "masks" / "train").iterdir())) == 16
    fitted = load_layer_weights(out / "layer_weights.json")
    assert fitted.fitted_on == 16 and fitted.classes == ("blob",) and len(fitted.layers) == 4

    images = out / "images" / "train"
    code, _, err = run_cli("attention-segment", "--attention-model", sd_folder, "--classes",
                           "blob,ring", "--images", images, "--out", tmp_path / "seg",
                           "--layer-weights", out / "layer_weights.json", "--device", "cpu",
                           "-q")  # fmt: skip
    assert code == 0, err
    first = sorted(images.iterdir())[0]
    labels = np.asarray(Image.open(tmp_path / "seg" / f"{first.stem}.png"))
    assert labels.shape == np.asarray(Image.open(first)).shape[:2]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**GOOD, "weights": [1, float("nan")]}))
    code, _, err = run_cli("attention-segment", "--attention-model", sd_folder, "--classes", "blob",
                           "--images", images, "--out", tmp_path / "seg2", "--layer-weights",
                           bad, "--device", "cpu")  # fmt: skip
    assert code == 2 and _error_line(err).endswith("bad.json: weights must be finite, "
                                                   "non-negative and not all zero")
    assert not (tmp_path / "seg2").exists()


def test_fit_layer_weights_command_errors(run_cli, sd_folder, synthetic_root, tmp_path):
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--simulate-from-masks",
                           "--fit-layer-weights", "--out", tmp_path / "a")  # fmt: skip
    assert code == 2 and "--fit-layer-weights needs --from attention" in err
    # four classes on a random model: no pixel is sure, so there is nothing to fit on
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "attention",
                           "--attention-model", sd_folder, "--fit-layer-weights", "--out",
                           tmp_path / "b", "-q")  # fmt: skip
    assert code == 2 and "every pseudo-mask is void" in _error_line(err)
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.tmp-*"))


# -- a prompt longer than the text encoder takes ------------------------------------------------


def test_long_prompt_is_refused_before_any_unet_pass(model, image, monkeypatch, run_cli,
                                                     sd_folder, tmp_path):  # fmt: skip
    names = [f"sky{'a' * i}" for i in range(1, 20)]
    n = len(model.tokenizer(build_prompt(names), verbose=False).input_ids)
    assert n > 77

    def no_pass(*args, **kwargs):
        raise AssertionError("the U-Net ran")

    monkeypatch.setattr(model, "_latents", no_pass)
    for call in (lambda: model.check_prompt(names), lambda: model.segment(image, names)):
        with pytest.raises(InputError, match=f"has {n} tokens, longer than the text "
                                             f"encoder's limit of 77") as err:  # fmt: skip
            call()
        assert "\n" not in str(err.value)
    model.check_prompt(names[:5])  # a short one passes

    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "a.png")
    code, _, err = run_cli("attention-segment", "--attention-model", sd_folder, "--classes",
                           ",".join(names), "--images", folder, "--out", tmp_path / "out",
                           "--device", "cpu")  # fmt: skip
    assert code == 2 and f"{n} tokens" in err and not (tmp_path / "out").exists()
