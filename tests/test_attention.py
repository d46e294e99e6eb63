"""Training-free segmentation from diffusion attention, on a tiny random Stable Diffusion
folder built here (no weights are downloaded): loading, recording, aggregation, refinement,
labelling and the errors a bad folder gives."""

from __future__ import annotations

import json
import shutil
import string

import numpy as np
import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402

from segrefine.attention import (  # noqa: E402
    aggregate_cross,
    average_self_attention,
    build_prompt,
    labels_and_probs,
    layer_grid,
    load_attention_model,
    refine_with_self_attention,
)
from segrefine.errors import InputError  # noqa: E402

WORDS = ["a", "photograph", "of", "and", "horse", "grass", "sky", "traffic", "light",
         "background"]  # fmt: skip
HIDDEN = 16  # text features, = the U-Net's cross_attention_dim
RES = 32  # image side: VAE /2 -> 16 x 16 latent -> U-Net grids 16 x 16 and 8 x 8


def _write_tokenizer(folder) -> dict[str, int]:
    """A CLIP BPE vocabulary of single letters plus merges that rebuild each of WORDS."""
    vocab: dict[str, int] = {}
    for c in string.ascii_lowercase + ",":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges: list[str] = []
    for word in WORDS:
        parts = [*word[:-1], word[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            if f"{cur} {p}" not in merges:
                merges.append(f"{cur} {p}")
            cur += p
            vocab.setdefault(cur, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
    }))  # fmt: skip
    return vocab


def build_tiny_sd(root):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    root.mkdir(parents=True)
    UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=HIDDEN,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    ).save_pretrained(root / "unet")  # fmt: skip
    AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, layers_per_block=1, sample_size=RES,
    ).save_pretrained(root / "vae")  # fmt: skip
    vocab = _write_tokenizer(root / "tokenizer")
    start, end = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), bos_token_id=start, eos_token_id=end, pad_token_id=end,
        hidden_size=HIDDEN, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=HIDDEN,
    )).save_pretrained(root / "text_encoder")  # fmt: skip
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                  beta_end=0.012).save_pretrained(root / "scheduler")  # fmt: skip
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDPMScheduler"],
    }))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    img = np.zeros((40, 48, 3), np.uint8)  # not square, not the model's resolution
    img[:20] = (90, 160, 230)
    img[20:] = (60, 150, 50)
    return (img + rng.integers(0, 20, img.shape)).astype(np.uint8)


# -- the real loading path and one U-Net pass ---------------------------------------------------


def test_capture_records_every_cross_layer_and_small_self_layers(model, image):
    cap = model.capture(image, ["horse", "grass", "sky"])
    names = [n.removesuffix(".processor") for n in model.unet.attn_processors]
    # one down block, the mid block and two up-block layers carry attention
    assert len(cap.cross) == len([n for n in names if n.endswith("attn2")]) == 4
    assert len(cap.self_attn) == len([n for n in names if n.endswith("attn1")]) == 4
    assert cap.latent_hw == (16, 16)
    assert sorted(a.shape for a in cap.cross) == [(64, 77), (256, 77), (256, 77), (256, 77)]
    assert sorted(a.shape for a in cap.self_attn) == [(64, 64)] + [(256, 256)] * 3
    for a in cap.cross + cap.self_attn:  # head-averaged softmax rows
        np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-5)
    assert cap.prompt == "a photograph of horse, grass and sky"
    ids = model.tokenizer(cap.prompt).input_ids
    words = [model.tokenizer.decode([ids[i] for i in g]).strip() for g in cap.token_groups]
    assert words == ["horse", "grass", "sky"]


def test_self_attention_bound_skips_large_layers(sd_folder, image):
    small = load_attention_model(sd_folder, device="cpu", resolution=RES, max_self_tokens=64)
    cap = small.capture(image, ["sky"])
    assert [a.shape for a in cap.self_attn] == [(64, 64)]
    assert len(cap.cross) == 4


def test_capture_leaves_the_unet_output_unchanged(model, image):
    from diffusers.models.attention_processor import AttnProcessor2_0

    torch.manual_seed(1)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([1])
    text = torch.randn(1, 77, HIDDEN)
    model.store.active = True
    with torch.no_grad():
        recorded = model.unet(x, t, encoder_hidden_states=text).sample
    model.store.active = False
    model.store.clear()
    saved = dict(model.unet.attn_processors)
    model.unet.set_attn_processor(AttnProcessor2_0())
    try:
        with torch.no_grad():
            reference = model.unet(x, t, encoder_hidden_states=text).sample
    finally:
        model.unet.set_attn_processor(saved)
    torch.testing.assert_close(recorded, reference, atol=1e-5, rtol=1e-4)


def test_segment_shapes_and_determinism(model, image):
    a = model.segment(image, ["horse", "grass", "sky"], seed=3)
    b = model.segment(image, ["horse", "grass", "sky"], seed=3)
    assert a.class_names == ("background", "horse", "grass", "sky")
    assert a.labels.shape == (40, 48) and a.labels.dtype == np.uint8
    assert a.probs.shape == (4, 40, 48) and a.probs.dtype == np.float32
    np.testing.assert_allclose(a.probs.sum(axis=0), 1.0, atol=1e-5)
    assert a.cross.shape == (3, 16, 16)
    np.testing.assert_allclose(a.cross.max(axis=(1, 2)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.probs, b.probs)
    plain = model.segment(image, ["horse", "grass", "sky"], seed=3, sar=False)
    assert plain.probs.shape == a.probs.shape
    np.testing.assert_array_equal(plain.cross, a.cross)  # SAR acts after aggregation


def test_multi_word_class_and_given_background(model, image):
    seg = model.segment(image, ["traffic light", "Background", "sky"])
    cap = model.capture(image, ["traffic light", "Background", "sky"])
    assert len(cap.token_groups[0]) == 2  # "traffic" and "light": one map from both
    ids = model.tokenizer(cap.prompt).input_ids
    words = [model.tokenizer.decode([ids[i] for i in g]).strip() for g in cap.token_groups]
    assert words == ["traffic light", "background", "sky"]
    assert seg.class_names == ("traffic light", "Background", "sky")  # no extra background
    assert seg.probs.shape == (3, 40, 48) and int(seg.labels.max()) <= 2
    np.testing.assert_array_equal(seg.labels, seg.probs.argmax(axis=0))


# -- the array steps, fed planted maps ----------------------------------------------------------


def test_planted_cross_attention_gives_that_segmentation():
    grid = (8, 8)
    region = np.zeros(grid, bool)
    region[2:5, 3:7] = True
    sky = np.zeros(grid, bool)
    sky[:2] = True
    tokens = np.full((64, 10), 0.01, np.float32)
    tokens[:, 4] = region.ravel()  # class 1: one token
    tokens[:, 6] = tokens[:, 7] = sky.ravel()  # class 2: a two-token name
    maps = aggregate_cross([tokens, tokens], [[4], [6, 7]], grid)
    np.testing.assert_array_equal(maps, np.stack([region, sky]).astype(np.float32))
    labels, probs = labels_and_probs(maps, grid, threshold=0.3)
    expected = np.where(region, 1, np.where(sky, 2, 0))
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(probs.argmax(axis=0), expected)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    # with a background class of its own: plain argmax
    labels_bg, probs_bg = labels_and_probs(np.stack([~region, region]).astype(np.float32),
                                           grid, has_background=True)  # fmt: skip
    np.testing.assert_array_equal(labels_bg, region.astype(np.uint8))
    assert probs_bg.shape == (2, 8, 8)


def test_layers_of_different_grids_are_resized_to_the_finest():
    coarse = np.zeros((16, 3), np.float32)
    coarse[:, 1] = 1.0
    fine = np.zeros((64, 3), np.float32)
    fine[:, 1] = 0.5
    maps = aggregate_cross([coarse, fine], [[1]], (8, 8))
    assert maps.shape == (1, 8, 8)
    np.testing.assert_allclose(maps, 1.0)  # uniform 0.75 scaled to its max
    assert layer_grid(16, (8, 8)) == (4, 4) and layer_grid(6, (6, 10)) == (2, 3)
    with pytest.raises(ValueError):
        layer_grid(7, (8, 8))


def test_identity_self_attention_changes_nothing():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 8, 8)).astype(np.float32)
    maps /= maps.max(axis=(1, 2), keepdims=True)
    refined = refine_with_self_attention(maps, np.eye(64, dtype=np.float32), (8, 8))
    np.testing.assert_array_equal(refined, maps)


def test_self_attention_spreads_a_class_over_what_attends_to_it():
    maps = np.zeros((1, 2, 2), np.float32)
    maps[0, 0, 0] = 1.0
    affinity = np.eye(4, dtype=np.float32)
    affinity[3] = [1.0, 0, 0, 0]  # the last position attends only to the first
    refined = refine_with_self_attention(maps, affinity, (2, 2))
    np.testing.assert_array_equal(refined[0], [[1, 0], [0, 1]])


def test_self_attention_average_uses_the_most_common_grid():
    layers = [np.eye(16), np.eye(16) * 0.5, np.eye(64)]
    S, grid = average_self_attention(layers, (8, 8))
    assert grid == (4, 4) and S.shape == (16, 16)
    np.testing.assert_allclose(S, np.eye(16) * 0.75)
    assert average_self_attention([], (8, 8)) is None


def test_prompt():
    assert build_prompt(["sky"]) == "a photograph of sky"
    assert build_prompt(["horse", "grass", "sky"]) == "a photograph of horse, grass and sky"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["unet", "text_encoder"])
def test_missing_component_is_named(sd_folder, tmp_path, component):
    copy = tmp_path / "sd"
    shutil.copytree(sd_folder, copy, ignore=shutil.ignore_patterns(component))
    with pytest.raises(InputError, match=f"{component}/ component folder is missing") as err:
        load_attention_model(copy, device="cpu")
    assert str(err.value).count("\n") == 0 and component in str(err.value.path)


def test_bad_folders(sd_folder, tmp_path):
    with pytest.raises(InputError, match="no such model folder"):
        load_attention_model(tmp_path / "absent", device="cpu")
    bad_index = tmp_path / "bad_index"
    shutil.copytree(sd_folder, bad_index)
    (bad_index / "model_index.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable model index"):
        load_attention_model(bad_index, device="cpu")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(sd_folder, no_weights)
    for f in (no_weights / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(InputError, match="cannot load the unet component") as err:
        load_attention_model(no_weights, device="cpu")
    assert "\n" not in str(err.value)
    no_vocab = tmp_path / "no_vocab"
    shutil.copytree(sd_folder, no_vocab)
    (no_vocab / "tokenizer" / "vocab.json").unlink()
    with pytest.raises(InputError, match="vocab.json is missing"):
        load_attention_model(no_vocab, device="cpu")
    not_sd = tmp_path / "not_sd"
    not_sd.mkdir()
    with pytest.raises(InputError, match="model_index.json is missing"):
        load_attention_model(not_sd, device="cpu")


def test_bad_arguments(model, image):
    with pytest.raises(InputError, match="more than once"):
        model.segment(image, ["sky", "Sky"])
    with pytest.raises(InputError, match="non-empty list"):
        model.segment(image, [])
    with pytest.raises(InputError, match="empty class name"):
        model.segment(image, ["sky", "  "])
    with pytest.raises(InputError, match="RGB image"):
        model.segment(image[..., 0], ["sky"])
    with pytest.raises(InputError, match="threshold"):
        model.segment(image, ["sky"], threshold=1.5)
    with pytest.raises(InputError, match="timestep"):
        model.segment(image, ["sky"], timestep=1000)
    with pytest.raises(InputError, match="multiple of 4"):
        model.segment(image, ["sky"], resolution=30)
    with pytest.raises(InputError, match="longer than"):
        model.segment(image, [f"sky{'a' * i}" for i in range(1, 20)])


def test_attention_segment_command_writes_labels_and_probabilities(run_cli, sd_folder, image,
                                                                  tmp_path):  # fmt: skip
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(image).save(folder / "a.png")
    code, out, err = run_cli("attention-segment", "--attention-model", sd_folder, "--classes",
                             "horse,traffic light", "--images", folder, "--out",
                             tmp_path / "out", "--resolution", "64", "--device", "cpu", "-q")
    assert code == 0, err
    assert "Loading" not in err and "%|" not in err, err  # -q: no progress bars at all
    labels = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    probs = np.load(tmp_path / "out" / "a.npy")
    assert labels.shape == image.shape[:2] and probs.shape[1:] == image.shape[:2]
    names = (tmp_path / "out" / "classes.txt").read_text().split("\n")[:-1]
    assert names == ["background", "horse", "traffic light"] and probs.shape[0] == 3
    code, _, err = run_cli("attention-segment", "--attention-model", tmp_path / "nowhere",
                           "--classes", "horse", "--images", folder, "--out", tmp_path / "o2")
    assert code == 2 and "nowhere" in err and not (tmp_path / "o2").exists()


def test_attention_masks_become_pseudo_masks(run_cli, sd_folder, tmp_path, synthetic_root):
    """StableSeg+: the attention segmentation of the dataset's class names, as a dataset root
    train-segmenter takes (quality is meaningless on a random model; the layout is the test)."""
    import json

    out = tmp_path / "pseudo"
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "attention",
                           "--attention-model", sd_folder, "--out", out, "-q")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "pseudo.json").read_text())
    assert report["method"] == "stableseg" and report["num_images"] == 16
    assert len(list((out / "masks" / "train").iterdir())) == 16
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "attention",
                           "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "--attention-model" in err
