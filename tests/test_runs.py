"""Run folders and run specs: settings are checked before anything is written, configs are
read back into typed specs, and bad ones are one-line input errors."""

from __future__ import annotations

import json

import pytest
import torch

from segrefine.diffusion import Refiner, RefinerConfig, RefinerSpec
from segrefine.diffusion.sampling import ddim_schedule, make_scheduler
from segrefine.errors import InputError
from segrefine.segmenting.segmenter import Segmenter, SegmenterSpec
from segrefine.segmenting.train import TrainConfig, train_segmenter


@pytest.mark.parametrize("bad", [{"iterations": 0}, {"batch_size": -1}, {"lr": 0.0},
                                 {"ema_decay": 1.0}, {"oof_folds": 1}, {"band": -2},
                                 {"crop": 0}, {"mode": "fancy"},
                                 {"inference": {"strength": 2.0}}])  # fmt: skip
def test_bad_refiner_settings_are_refused_by_name(bad):
    with pytest.raises(InputError, match="refiner|mode"):
        RefinerConfig(data="x", **bad)


@pytest.mark.parametrize("bad", [{"model": "resnet9000"}, {"epochs": 0}, {"size": 0},
                                 {"lr": -1.0}, {"exclude_fold": [2, 2]}])  # fmt: skip
def test_bad_segmenter_settings_are_refused_by_name(bad):
    with pytest.raises(InputError, match="model|segmenter settings"):
        TrainConfig(data="x", **bad)


def test_a_run_that_cannot_start_leaves_no_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(InputError):
        train_segmenter(TrainConfig(data=str(tmp_path / "missing")), out, device="cpu")
    assert not out.exists()


def test_specs_round_trip_through_config_json():
    seg = json.loads(json.dumps(TrainConfig(data="x", model="fcn").spec(("bg", "horse")).to_json()))
    assert SegmenterSpec.from_json(seg).to_json() == seg
    ref = RefinerConfig(data="x", mode="paper", width=8).spec("abc").to_json()
    ref = json.loads(json.dumps(ref))
    back = RefinerSpec.from_json(ref)
    assert back.to_json() == ref and back.network == {"width": 8, "depth": 4}
    assert back.inference == {"steps": None, "strength": 0.5, "samples": 1}


@pytest.mark.parametrize("edit", [lambda c: c.pop("class_names"),
                                  lambda c: c.update(mode="fancy"),
                                  lambda c: c.update(size=-3),
                                  lambda c: c.update(class_names=[])])  # fmt: skip
def test_a_malformed_run_config_is_an_input_error_naming_it(tmp_path, edit):
    config = RefinerConfig(data="x", width=4, depth=2).spec(("a", "b")).to_json()
    edit(config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError) as err:
        Refiner.load(run, "cpu")
    assert "config.json" in str(err.value)


def test_a_segmenter_run_is_not_loaded_as_a_refiner(tmp_path):
    run = tmp_path / "seg"
    run.mkdir()
    spec = TrainConfig(data="x", width=4, depth=2).spec(("a", "b"))
    (run / "config.json").write_text(json.dumps(spec.to_json()))
    with pytest.raises(InputError, match="is a segmenter run"):
        Refiner.load(run, "cpu")
    assert Segmenter.from_spec(spec).class_names == ("a", "b")


def test_ddim_schedule_starts_at_the_strength_and_steps_by_a_divisor_of_T():
    sched = make_scheduler(1000)
    for t_start in (299, 499, 999, 3):
        for steps in (1, 2, 3, 4, 8, 50):
            ddim, ts = ddim_schedule(sched, t_start, steps)
            stride = 1000 // ddim.num_inference_steps
            assert ts[0] == t_start and len(ts) == min(steps, t_start + 1)
            assert min(ts) >= 0 and all(a - b == stride for a, b in zip(ts, ts[1:], strict=False))


def test_ddim_step_is_the_deterministic_update_from_the_clean_prediction():
    sched = make_scheduler(1000)
    ddim, (t, t_next) = ddim_schedule(sched, 299, 2, prediction_type="sample")
    gen = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    ab, ab_next = sched.alphas_cumprod[t], sched.alphas_cumprod[t_next]
    eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
    want = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
    torch.testing.assert_close(ddim.step(x0, t, x).prev_sample, want)


@pytest.mark.parametrize("edit", [lambda c: c["network"].update(width=10**6),
                                  lambda c: c["network"].update(depth=100),
                                  lambda c: c.update(timesteps=10**12),
                                  lambda c: c["inference"].update(samples=10**6),
                                  lambda c: c["network"].pop("features")])  # fmt: skip
def test_a_shared_run_config_cannot_ask_for_unbounded_memory(tmp_path, edit):
    config = RefinerConfig(data="x", width=4, depth=2).spec(("a", "b")).to_json()
    edit(config)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="config.json: run config is malformed"):
        Refiner.load(run, "cpu")


def test_refinement_settings_are_bounded():
    ref = Refiner.from_spec(RefinerConfig(data="x", width=4, depth=2).spec(("a", "b")))
    with pytest.raises(InputError, match="samples must be in 1..64"):
        ref.settings(samples=5000)
    with pytest.raises(InputError, match="steps must be in 1..1000"):
        ref.settings(steps=0)


def test_export_copies_a_run_without_its_training_state(run_cli, tmp_path, trained_refiner):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_refiner[0], run)
    (run / "oof").mkdir()
    (run / "oof" / "views.safetensors").write_bytes(b"x" * 1000)  # a cache left behind
    code, out, err = run_cli("export", "--run", run, "--out", tmp_path / "shared")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == [
        "config.json", "examples", "log.jsonl", "model.safetensors"]
    examples = sorted(p.name for p in (tmp_path / "shared" / "examples").iterdir())
    assert examples == sorted(p.name for p in (run / "examples").iterdir())
    assert 1 <= len(examples) <= 4 and all(n.endswith(".jpg") for n in examples)
    shared = Refiner.load(tmp_path / "shared", "cpu")
    assert shared.class_names == Refiner.load(run, "cpu").class_names
    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "shared")
    assert code == 2 and "already holds a run" in err
    code, _, err = run_cli("export", "--run", tmp_path / "nothing", "--out", tmp_path / "x")
    assert code == 2 and "no such run folder" in err


def test_save_pretrained_and_from_pretrained_round_trip(tmp_path, trained_run):
    import numpy as np

    seg = Segmenter.load(trained_run, "cpu")
    seg.save_pretrained(tmp_path / "copy")
    again = Segmenter.from_pretrained(tmp_path / "copy", "cpu")
    image = np.random.default_rng(0).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    np.testing.assert_array_equal(again.predict(image), seg.predict(image))
    with pytest.raises(InputError, match="already holds a run"):
        seg.save_pretrained(tmp_path / "copy")
