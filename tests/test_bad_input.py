"""Every kind of bad input: one line naming the file, exit code 2, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segrefine.data import load_split, read_image
from segrefine.errors import InputError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _train_args(data: Path, out: Path) -> list[str]:
    return [
        "train-segmenter",
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        "1",
        "--size",
        "32",
        "--width",
        "4",
        "--depth",
        "2",
        "--batch-size",
        "4",
        "--quiet",
    ]


def _assert_one_line_error(code: int, err: str, names: str | Path) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("segrefine: error:")
    assert str(names) in lines[0]


def test_missing_dataset_folder(run_cli, tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(*_train_args(missing, tmp_path / "run"))
    _assert_one_line_error(code, err, missing)
    assert not (tmp_path / "run").exists()


def test_folder_that_is_not_a_dataset(run_cli, tmp_path):
    (tmp_path / "junk").mkdir()
    code, _, err = run_cli(*_train_args(tmp_path / "junk", tmp_path / "run"))
    _assert_one_line_error(code, err, tmp_path / "junk")
    assert "not a dataset root" in err


@pytest.mark.parametrize("content", [b"", b"this is not a jpeg at all"], ids=["empty", "corrupt"])
def test_zero_byte_or_corrupt_image(run_cli, tmp_path, synthetic_root, content):
    data = _copy(synthetic_root, tmp_path / "data")
    bad = sorted((data / "images" / "train").iterdir())[3]
    bad.write_bytes(content)
    code, _, err = run_cli(*_train_args(data, tmp_path / "run"))
    _assert_one_line_error(code, err, bad)
    assert not (tmp_path / "run").exists()


def test_truncated_image(tmp_path, synthetic_root):
    good = sorted((synthetic_root / "images" / "train").iterdir())[0]
    bad = tmp_path / "truncated.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="truncated.png"):
        read_image(bad)


def test_image_and_mask_of_different_sizes(run_cli, tmp_path, synthetic_root):
    data = _copy(synthetic_root, tmp_path / "data")
    mask = sorted((data / "masks" / "train").iterdir())[2]
    Image.fromarray(np.zeros((20, 30), np.uint8), mode="L").save(mask)
    code, _, err = run_cli(*_train_args(data, tmp_path / "run"))
    _assert_one_line_error(code, err, mask)
    assert "does not match" in err


def test_mask_with_label_ids_outside_the_class_list(run_cli, tmp_path, synthetic_root):
    data = _copy(synthetic_root, tmp_path / "data")
    mask = sorted((data / "masks" / "train").iterdir())[1]
    arr = np.asarray(Image.open(mask)).copy()
    arr[0, 0] = 9  # five classes: 0..4
    Image.fromarray(arr, mode="L").save(mask)
    code, _, err = run_cli(*_train_args(data, tmp_path / "run"))
    _assert_one_line_error(code, err, mask)
    assert "[9]" in err


def test_empty_split(run_cli, tmp_path, voc_root):
    split_file = voc_root / "ImageSets" / "Segmentation" / "train.txt"
    split_file.write_text("\n")
    code, _, err = run_cli(*_train_args(voc_root, tmp_path / "run"))
    _assert_one_line_error(code, err, split_file)
    assert "empty" in err


def test_missing_split(run_cli, tmp_path, synthetic_root):
    code, _, err = run_cli(*_train_args(synthetic_root, tmp_path / "run"), "--split", "test")
    _assert_one_line_error(code, err, synthetic_root / "images" / "test")


def test_grayscale_and_rgba_images_in_a_dataset_are_used(tmp_path, synthetic_root):
    data = _copy(synthetic_root, tmp_path / "data")
    images = sorted((data / "images" / "val").iterdir())
    Image.open(images[0]).convert("L").save(images[0])
    Image.open(images[1]).convert("RGBA").save(images[1])
    split = load_split(data, "val", size=32)
    assert all(it.image.shape == (32, 32, 3) for it in split.items)


def test_checkpoint_of_the_wrong_kind(run_cli, tmp_path, synthetic_root):
    run = tmp_path / "refiner_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "refiner", "format_version": 1}))
    code, _, err = run_cli(
        "predict", "--segmenter", run, "--images", synthetic_root, "--out", tmp_path / "pred"
    )
    _assert_one_line_error(code, err, run)
    assert "expected a segmenter run" in err
    assert not (tmp_path / "pred").exists()


def test_folder_that_is_not_a_run(run_cli, tmp_path, synthetic_root):
    code, _, err = run_cli(
        "predict", "--segmenter", tmp_path, "--images", synthetic_root, "--out", tmp_path / "pred"
    )
    _assert_one_line_error(code, err, tmp_path)
    assert "not a segrefine run" in err


def test_corrupt_weights_file(run_cli, tmp_path, trained_run, synthetic_root):
    run = _copy(trained_run, tmp_path / "run")
    (run / "model.safetensors").write_bytes(b"garbage")
    code, _, err = run_cli(
        "predict", "--segmenter", run, "--images", synthetic_root, "--out", tmp_path / "pred"
    )
    _assert_one_line_error(code, err, run / "model.safetensors")


def test_weights_with_nan_are_refused(run_cli, tmp_path, trained_run, synthetic_root):
    from segrefine import checkpoint

    run = _copy(trained_run, tmp_path / "run")
    tensors, meta = checkpoint.load_tensors(run / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[name][0] = float("nan")  # a bit-flipped exponent reads as this
    checkpoint.save_tensors(run / "model.safetensors", tensors, meta)
    code, _, err = run_cli(
        "predict", "--segmenter", run, "--images", synthetic_root, "--out", tmp_path / "pred"
    )
    _assert_one_line_error(code, err, run / "model.safetensors")
    assert "NaN or infinite" in err


def test_an_output_path_that_is_a_file_is_one_line(run_cli, tmp_path, trained_run,
                                                   synthetic_root):  # fmt: skip
    (tmp_path / "pred").write_text("a file, not a folder")
    code, _, err = run_cli(
        "predict",
        "--segmenter",
        trained_run,
        "--images",
        synthetic_root,
        "--out",
        tmp_path / "pred",
    )
    _assert_one_line_error(code, err, tmp_path / "pred")


def test_corrupt_image_while_predicting_leaves_no_partial_files(
    run_cli, tmp_path, trained_run, synthetic_root
):
    images = tmp_path / "images"
    images.mkdir()
    for i, src in enumerate(sorted((synthetic_root / "images" / "val").iterdir())[:3]):
        shutil.copy(src, images / f"img{i}.png")
    (images / "img1.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "pred"
    code, _, err = run_cli(
        "predict",
        "--segmenter",
        trained_run,
        "--images",
        images,
        "--out",
        out,
        "--save-probs",
        "--quiet",
    )
    _assert_one_line_error(code, err, images / "img1.png")
    leftovers = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert all(not name.startswith(".") for name in leftovers)  # no temp files
    assert not any(name.startswith("img1") for name in leftovers)
    assert leftovers == []  # every input is checked before the first output is written


def test_prediction_missing_for_an_image(run_cli, tmp_path, synthetic_root):
    pred = tmp_path / "pred"
    pred.mkdir()
    code, _, err = run_cli("evaluate", "--masks", pred, "--data", synthetic_root, "--split", "val")
    _assert_one_line_error(code, err, pred)
    assert "no prediction" in err


def test_training_into_an_existing_run_without_resume(
    run_cli, tmp_path, trained_run, synthetic_root
):
    code, _, err = run_cli(*_train_args(synthetic_root, trained_run))
    _assert_one_line_error(code, err, trained_run)
    assert "--resume" in err


def test_unknown_option_is_a_usage_error(run_cli):
    code, _, err = run_cli("predict", "--no-such-option")
    assert code == 2


def test_atomic_writes_follow_the_umask_and_stale_temporaries_are_cleared(tmp_path):
    import os

    from segrefine.data.io import atomic_path, remove_stale_temporaries

    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("done")
    mode = (tmp_path / "out.txt").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
    (tmp_path / ".model.safetensors.abc1_3yz.tmp").write_bytes(b"half")  # a killed write
    assert remove_stale_temporaries(tmp_path) == 1 and not list(tmp_path.glob(".*.tmp"))


def test_resume_works_from_another_folder(run_cli, tmp_path, synthetic_root, monkeypatch):
    import shutil as sh

    data = tmp_path / "data"
    sh.copytree(synthetic_root, data)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("train-segmenter", "--data", "data", "--out", "run", "--size", "32",
                           "--width", "4", "--depth", "2", "--epochs", "1", "--batch-size", "4",
                           "--device", "cpu", "-q")  # fmt: skip
    assert code == 0, err
    monkeypatch.chdir(tmp_path / "run")
    code, _, err = run_cli("train-segmenter", "--out", ".", "--resume", "--device", "cpu", "-q")
    assert code == 0, err


@pytest.mark.parametrize("sid", ["../../../x", "/etc/passwd", "..", "a\\b"])
def test_a_split_list_id_that_is_a_path_is_refused(voc_root, sid):
    from segrefine.data.datasets import open_dataset

    split = voc_root / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text(split.read_text() + f"{sid}\n")
    with pytest.raises(InputError, match="not a plain file name"):
        open_dataset(voc_root, "val")


def test_two_images_of_one_name_are_refused_before_any_output(tmp_path, run_cli, trained_run):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "a.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / name)
    code, _, err = run_cli("predict", "--segmenter", trained_run, "--images", images, "--out",
                           tmp_path / "out", "--device", "cpu", "-q")  # fmt: skip
    assert code == 2 and "a.jpg and a.png would both write 'a' outputs" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train-segmenter", "train-refiner"])
@pytest.mark.parametrize("seed", ["-1", "123456789012345678901"])
def test_a_seed_out_of_range_is_refused_before_the_run_folder(
    run_cli, tmp_path, synthetic_root, command, seed
):
    code, _, err = run_cli(command, "--data", synthetic_root, "--out", tmp_path / "run",
                           "--seed", seed, "-q")  # fmt: skip
    assert code == 2 and "seed" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
