"""The refiner's commands: train-refiner, refine (any model's probabilities) and benchmark."""

from __future__ import annotations

import json

import numpy as np
from refiner_helpers import tiny_config

from segrefine.diffusion import (
    train_refiner,
)

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


def test_train_refiner_cli_checks_the_native_shares_before_any_work(run_cli, tmp_path,
                                                                     synthetic_root):
    for option, value in (("--native-share", "1.5"), ("--truth-share", "-0.1")):
        code, _, err = run_cli("train-refiner", "--data", synthetic_root, "--native", option,
                               value, "--out", tmp_path / "run", "-q")  # fmt: skip
        assert code == 2 and "share (must be in [0, 1])" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "run").exists()


def test_refine_cli_native_or_not_reaches_the_refiner(run_cli, monkeypatch, tmp_path,
                                                      synthetic_root, trained_run,
                                                      trained_refiner):  # fmt: skip
    import segrefine.refine as refine_module

    seen, real = [], refine_module.segment_and_refine

    def spy(*args, **kwargs):
        seen.append(kwargs.get("native"))
        return real(*args, **kwargs)

    monkeypatch.setattr(refine_module, "segment_and_refine", spy)
    import dataclasses

    from segrefine.diffusion import Refiner

    plain = Refiner.load(trained_refiner[0], "cpu")  # the same network, marked native
    native = Refiner(plain.net, dataclasses.replace(plain.spec, inference={
        **plain.spec.inference, "native": True}), plain.device)  # fmt: skip
    native.save_pretrained(tmp_path / "native")
    for flag, expected in ((), None), (("--no-native",), False), (("--native",), True):
        code, _, err = run_cli("refine", "--refiner", tmp_path / "native", "--segmenter",
                               trained_run, "--images", synthetic_root, "--out",
                               tmp_path / f"out{expected}", "--device", "cpu", "-q",
                               *flag)  # fmt: skip
        assert code == 0, err
        assert seen and set(seen) == {expected}
        seen.clear()
    code, _, err = run_cli("refine", "--refiner", trained_refiner[0], "--segmenter", trained_run,
                           "--images", synthetic_root, "--out", tmp_path / "bad", "--native",
                           "--device", "cpu", "-q")  # fmt: skip
    assert code == 2 and "trained without --native" in err and not (tmp_path / "bad").exists()


def test_refine_cli_says_once_what_the_refiner_is_unless_quiet(run_cli, tmp_path, synthetic_root,
                                                                trained_run, trained_refiner):
    image = sorted((synthetic_root / "images" / "val").iterdir())[0]
    common = ("refine", "--refiner", trained_refiner[0], "--segmenter", trained_run, "--images",
              image, "--device", "cpu")  # fmt: skip
    code, _, err = run_cli(*common, "--out", tmp_path / "said")
    said = [line for line in err.splitlines() if line.startswith("refiner: ")]
    assert code == 0 and len(said) == 1, err
    assert str(trained_refiner[0]) in said[0] and "5 classes (background, " in said[0]
    assert "working size 32 px" in said[0] and "not native" in said[0]  # trained without
    code, _, err = run_cli(*common, "-q", "--out", tmp_path / "quiet")
    assert code == 0 and "refiner: " not in err


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
        "--segmenter",
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
        "--masks",
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
    common = ("refine", "--refiner", ref, "--images", synthetic_root, "--device", "cpu", "-q")
    for bad, says in ((("--masks", probs, "--input-size", "0"), "positive"),
                      (("--masks", probs, "--input-size", "16"), "tells a native refiner"),
                      (("--segmenter", trained_run, "--input-size", "16"), "--input-size is for")):
        code, _, err = run_cli(*common, *bad, "--out", tmp_path / "bad")
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()
    victim = sorted(probs.glob("*.npy"))[0]
    np.save(victim, np.full((5, 32, 32), 0.5, np.float16))  # does not sum to 1
    code, _, err = run_cli(
        "refine",
        "--refiner",
        ref,
        "--masks",
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
        "--masks",
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
        "--other-segmenter",
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
    assert set(results["uncertainty"]) == {"baseline", "refined"}
    assert "ECE" in (out / "report.md").read_text()


def test_native_benchmark_scores_every_row_at_the_images_own_size(
    run_cli, tmp_path, synthetic_root, trained_run, trained_refiner
):
    from PIL import Image

    # the fixture's val scenes stretched to 48 x 32: not the refiner's square
    wide = tmp_path / "wide"
    for kind in ("images", "masks"):
        (wide / kind / "val").mkdir(parents=True)
        for path in sorted((synthetic_root / kind / "val").iterdir()):
            resample = Image.BILINEAR if kind == "images" else Image.NEAREST
            Image.open(path).resize((48, 32), resample).save(wide / kind / "val" / path.name)
    (wide / "classes.txt").write_text((synthetic_root / "classes.txt").read_text())
    out = tmp_path / "native"
    code, stdout, err = run_cli("benchmark", "--native", "--data", wide, "--segmenter",
                                trained_run, "--refiner", trained_refiner[0], "--out", out, "-q")
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["megapixels"] == round(8 * 32 * 48 / 1e6, 3)
    assert list(results["rows"]) == ["segmenter", "refined", "refined_128", "refined_truth"]
    for name, row in results["rows"].items():
        trust = {"uncertainty"} if name in ("segmenter", "refined") else set()
        assert set(row) == {"mean_image_iou", "miou", "boundary_iou", "boundary_f", "mba",
                            "seconds_per_megapixel"} | trust
    for name in ("segmenter", "refined"):  # the same scores of both, by the same code
        assert set(results["rows"][name]["uncertainty"]) == {"error_auroc", "ece",
                                                             "errors_in_top10"}
        assert 0 <= results["rows"][name]["uncertainty"]["ece"] <= 1
        assert 0 <= row["mean_image_iou"] <= 100 and row["seconds_per_megapixel"] > 0
    per_image = json.loads((out / "per_image.json").read_text())
    assert len(per_image) == 8 and "mba" in per_image[0]["refined_truth"]
    assert (out / "boundaries.png").exists() and "mBA" in (out / "report.md").read_text()
