"""Training a refiner: it learns, its run folder, resuming, the EMA, batches, the encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from refiner_helpers import tiny_config

from segrefine.diffusion import (
    Refiner,
    RefinerConfig,
    train_refiner,
)
from segrefine.diffusion.modes import get_mode
from segrefine.diffusion.sampling import make_scheduler, start_timestep


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
    # the log says what the inputs scored, so a refiner's gain can be read from it
    assert best["val_input"]["mean_image_iou"] == pytest.approx(before, abs=0.006)


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
    from segrefine.segmenting.segmenter import Segmenter

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
