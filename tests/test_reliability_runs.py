"""Run folders as input and as shared state (issue 31): export copies only the run's own
files, weights without a checksum say so once, one trainer per run at a time, and no run
folder is made for a run that cannot train."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
from safetensors.torch import load_file, save_file

from segrefine import checkpoint
from segrefine.errors import InputError
from segrefine.runs.lock import LOCK, RunLock
from segrefine.segmenting.segmenter import Segmenter
from segrefine.segmenting.train import TrainConfig, train_segmenter


@pytest.fixture()
def run(tmp_path, trained_run):
    """A writable copy of the tiny trained segmenter run."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


# -- export: only the run's own regular files -----------------------------------------------


def test_export_refuses_a_log_that_links_out_of_the_run(run_cli, tmp_path, run):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")
    (run / checkpoint.LOG).unlink()
    (run / checkpoint.LOG).symlink_to(secret)
    code, out, err = run_cli("export", "--run", run, "--out", tmp_path / "shared")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "log.jsonl" in err and "outside the run" in err
    assert not (tmp_path / "shared").exists()  # nothing half-written


def test_export_refuses_an_example_that_links_out_of_the_run(run_cli, tmp_path, run):
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(next((run / "examples").glob("*.jpg")), outside)
    (run / "examples" / "zzz.jpg").symlink_to(outside)
    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "shared")
    # a linked example is no example: listed by nobody, copied by nobody
    assert code == 0, err
    assert not (tmp_path / "shared" / "examples" / "zzz.jpg").exists()
    (run / "examples").rename(tmp_path / "real_examples")
    (run / "examples").symlink_to(tmp_path / "real_examples")
    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "shared2")
    assert code == 2 and "examples" in err and not (tmp_path / "shared2").exists()


def test_export_refuses_a_folder_in_place_of_the_log(run_cli, tmp_path, run):
    (run / checkpoint.LOG).unlink()
    (run / checkpoint.LOG).mkdir()
    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "shared")
    assert code == 2 and "log.jsonl" in err and "not a regular file" in err


# -- weights without a checksum ---------------------------------------------------------------


def _strip_checksum(path) -> None:
    save_file(load_file(str(path)), str(path), metadata={"segrefine": "{}"})


def test_weights_without_a_checksum_warn_once_and_export_adds_one(run_cli, tmp_path, run):
    _strip_checksum(run / checkpoint.WEIGHTS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Segmenter.load(run, "cpu")
        Segmenter.load(run, "cpu")  # once per file, not per load
    unchecked = [w for w in caught if issubclass(w.category, checkpoint.UncheckedWeightsWarning)]
    assert len(unchecked) == 1 and "segrefine export" in str(unchecked[0].message)
    code, _, err = run_cli("export", "--run", run, "--out", tmp_path / "shared", "-q")
    assert code == 0, err
    _, _, checked = checkpoint.read_tensors(tmp_path / "shared" / checkpoint.WEIGHTS)
    assert checked
    with warnings.catch_warnings():
        warnings.simplefilter("error", checkpoint.UncheckedWeightsWarning)
        Segmenter.load(tmp_path / "shared", "cpu")


def test_the_cli_prints_the_missing_checksum_as_one_line(run_cli, tmp_path, run,
                                                         synthetic_root):  # fmt: skip
    _strip_checksum(run / checkpoint.WEIGHTS)
    checkpoint._UNCHECKED_WARNED.clear()
    code, _, err = run_cli(
        "predict",
        "--segmenter",
        run,
        "--images",
        synthetic_root / "images" / "val",
        "--out",
        tmp_path / "p",
        "-q",
    )
    assert code == 0, err
    lines = [line for line in err.splitlines() if "checksum" in line]
    assert len(lines) == 1 and lines[0].startswith("segrefine: warning: "), err
    assert f"segrefine export --run {run}" in lines[0]


# -- one trainer per run -----------------------------------------------------------------------


def _resume_config(run) -> None:
    """Ask the copied run for one more epoch, so that --resume has work to do."""
    config = json.loads((run / checkpoint.CONFIG).read_text())
    config["train"]["epochs"] += 1
    (run / checkpoint.CONFIG).write_text(json.dumps(config))


def test_a_second_trainer_of_a_run_is_refused(run_cli, run):
    _resume_config(run)
    with RunLock(run):  # another trainer holds the run
        code, _, err = run_cli("train-segmenter", "--out", run, "--resume", "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert str(run) in err and f"process {os.getpid()}" in err
    assert len((run / checkpoint.LOG).read_text().splitlines()) == 2  # untouched


def test_a_lock_left_by_a_killed_trainer_is_taken_over(run):
    """A real second process holds the lock, is refused to us while alive, and its lock is
    free once it is killed with SIGKILL (the file it leaves behind names a dead pid)."""
    code = (
        "import sys, time; from segrefine.runs.lock import RunLock; "
        f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError, match=f"process {holder.pid} on "):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert (run / LOCK).exists()  # left behind, stale
    _resume_config(run)
    train_segmenter(None, run, resume=True, device="cpu", progress=False)
    assert len((run / checkpoint.LOG).read_text().splitlines()) == 3
    assert not (run / LOCK).exists()  # a finished run carries no lock


def test_a_fresh_run_holds_its_lock_while_it_trains(tmp_path, synthetic_root):
    out = tmp_path / "fresh"
    seen = []

    def during(record):
        with pytest.raises(InputError, match="is being trained by"):
            RunLock(out).acquire()
        seen.append(record["epoch"])

    cfg = TrainConfig(data=str(synthetic_root), size=32, width=4, depth=2, epochs=1,
                      batch_size=8, val_split=None)  # fmt: skip
    train_segmenter(cfg, out, device="cpu", progress=False, on_epoch_end=during)
    assert seen == [1] and not (out / LOCK).exists()


# -- every check before the run folder is made -------------------------------------------------


@pytest.mark.parametrize("command", ["train-segmenter", "train-refiner"])
@pytest.mark.parametrize("seed", ["-1", "12345678901234567890", str(2**32)])
def test_a_seed_out_of_range_makes_no_run_folder(run_cli, tmp_path, synthetic_root, command,
                                                 seed):  # fmt: skip
    code, _, err = run_cli(command, "--data", synthetic_root, "--out", tmp_path / "r",
                           "--seed", seed, "--device", "cpu")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "seed" in err, err
    assert not (tmp_path / "r").exists()


def test_data_too_small_for_the_out_of_fold_batches_makes_no_run_folder(
    run_cli, tmp_path, run, synthetic_root
):
    # the segmenter trained with batches of 12: two folds of the 16 images leave 8 each
    config = json.loads((run / checkpoint.CONFIG).read_text())
    config["train"]["batch_size"] = 12
    (run / checkpoint.CONFIG).write_text(json.dumps(config))
    code, _, err = run_cli(
        "train-refiner",
        "--data",
        synthetic_root,
        "--segmenter",
        run,
        "--out",
        tmp_path / "r",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "batch size (12)" in err and "as few as 8" in err and "--oof-folds" in err
    assert not (tmp_path / "r").exists()


def test_a_missing_start_of_the_fold_segmenters_makes_no_run_folder(
    run_cli, tmp_path, run, synthetic_root
):
    config = json.loads((run / checkpoint.CONFIG).read_text())
    config["train"]["init_from"] = str(tmp_path / "gone")
    (run / checkpoint.CONFIG).write_text(json.dumps(config))
    code, _, err = run_cli(
        "train-refiner",
        "--data",
        synthetic_root,
        "--segmenter",
        run,
        "--out",
        tmp_path / "r",
        "--device",
        "cpu",
    )
    assert code == 2 and "gone" in err and not (tmp_path / "r").exists()


def test_a_segmenter_without_weights_makes_no_refiner_run_folder(run_cli, tmp_path, run,
                                                                 synthetic_root):  # fmt: skip
    """The encoder's start and the validation inputs need the segmenter's weights: read
    before the folder is made (they used to be read after, once the out-of-fold segmenters
    had trained for minutes)."""
    (run / checkpoint.WEIGHTS).unlink()
    code, _, err = run_cli(
        "train-refiner",
        "--data",
        synthetic_root,
        "--segmenter",
        run,
        "--out",
        tmp_path / "r",
        "--device",
        "cpu",
    )
    assert code == 2 and "model.safetensors" in err, err
    assert not (tmp_path / "r").exists()


def test_fold_seeds_stay_in_the_seed_range():
    from segrefine.diffusion.oof import fold_seed

    assert fold_seed(0, 1) == 2 and fold_seed(2**32 - 1, 0) == 0
