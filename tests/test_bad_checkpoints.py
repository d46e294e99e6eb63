"""A checkpoint is input too (run folders are shared and files get damaged): a flipped bit in
the weights or an edited training state is one line naming the file, exit 2."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch

from segrefine import checkpoint


def _one_line(code: int, err: str, name) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert str(name) in lines[0]
    return lines[0]


def test_a_flipped_bit_in_the_weights_breaks_the_checksum(run_cli, tmp_path, trained_run,
                                                         synthetic_root):  # fmt: skip
    run = shutil.copytree(trained_run, tmp_path / "run")
    path = run / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-4] ^= 0x01  # the lowest mantissa bit of the last float: a finite, plausible value
    path.write_bytes(bytes(data))
    code, _, err = run_cli("predict", "--segmenter", run, "--images", synthetic_root,
                           "--out", tmp_path / "pred")  # fmt: skip
    assert "checksum" in _one_line(code, err, path)
    assert not (tmp_path / "pred").exists()


def test_weights_written_before_checksums_existed_still_load(tmp_path, trained_run):
    from safetensors.torch import save_file

    from segrefine.segmenting.segmenter import Segmenter

    run = shutil.copytree(trained_run, tmp_path / "run")
    tensors, _ = checkpoint.load_tensors(run / "model.safetensors")
    save_file(tensors, str(run / "model.safetensors"), metadata={"segrefine": "{}"})
    with pytest.warns(checkpoint.UncheckedWeightsWarning, match="no checksum"):
        assert Segmenter.load(run, "cpu").spec.class_names  # no checksum: read, with a warning


def _edit_state(path, change) -> None:
    """Rewrite ``last.safetensors`` with ``change(tensors, meta)`` applied, checksum renewed
    (an edit made with our own writer, so only the content can be wrong)."""
    tensors, meta = checkpoint.load_tensors(path)
    change(tensors, meta)
    checkpoint.save_tensors(path, tensors, meta)


def _drop_optimizer(tensors, meta):
    del meta["optimizer"]


def _negative_epoch(tensors, meta):
    meta["epoch"] = -3


def _epoch_as_text(tensors, meta):
    meta["epoch"] = "five"


def _history_not_a_list(tensors, meta):
    meta["history"] = {"epoch": 1}


def _best_without_score(tensors, meta):
    meta["best"] = {"epoch": 1}


def _wrong_shape(tensors, meta):
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].ndim == 4)
    tensors[name] = torch.zeros(1, 1, 1, 1)


def _nan_weight(tensors, meta):
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[name] = tensors[name].clone().fill_(float("nan"))


def _optimizer_tensor_missing(tensors, meta):
    del tensors[next(k for k in tensors if k.startswith("optim."))]


def _param_groups_broken(tensors, meta):
    meta["optimizer"]["param_groups"] = [{"params": [0, 1]}]


@pytest.mark.parametrize("change", [_drop_optimizer, _negative_epoch, _epoch_as_text,
                                    _history_not_a_list, _best_without_score, _wrong_shape,
                                    _nan_weight, _optimizer_tensor_missing,
                                    _param_groups_broken])  # fmt: skip
def test_an_edited_training_state_cannot_be_resumed(run_cli, tmp_path, trained_run, change):
    run = shutil.copytree(trained_run, tmp_path / "run")
    _edit_state(run / "last.safetensors", change)
    before = (run / "model.safetensors").read_bytes()
    code, _, err = run_cli("train-segmenter", "--out", run, "--resume", "--device", "cpu", "-q")
    _one_line(code, err, run / "last.safetensors")
    assert (run / "model.safetensors").read_bytes() == before  # nothing was overwritten


def test_a_metadata_header_that_is_not_an_object_is_refused(tmp_path, trained_run):
    from segrefine.errors import InputError

    path = tmp_path / "model.safetensors"
    raw = (trained_run / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = {"segrefine": "[1, 2]"}
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + n :])
    with pytest.raises(InputError, match="metadata"):
        checkpoint.load_tensors(path)


def _nested(config):
    return "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("edit, says", [
    (lambda c: {**c, "format_version": None}, "format_version must be a whole number"),
    (lambda c: {**c, "format_version": "1"}, "format_version must be a whole number"),
    (_nested, "nested too deeply"),
    (lambda c: {**c, "beta_schedule": "bogus"}, "beta_schedule must be one of"),
    (lambda c: {**c, "inference": [1, 2]}, "inference and calibration must be mappings"),
    (lambda c: {**c, "class_names": c["class_names"][:1] * 2}, "duplicates"),
    (lambda c: {**c, "class_names": "background"}, "class_names must be a list"),
])  # fmt: skip
def test_a_malformed_refiner_config_is_one_line(run_cli, tmp_path, trained_refiner,
                                                trained_run, synthetic_root, edit, says):
    run = shutil.copytree(trained_refiner[0], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    edited = edit(config)
    (run / "config.json").write_text(edited if isinstance(edited, str) else json.dumps(edited))
    code, _, err = run_cli("refine", "--refiner", run, "--segmenter", trained_run, "--images",
                           synthetic_root, "--out", tmp_path / "out", "--device", "cpu")
    assert says in _one_line(code, err, run)
    assert not (tmp_path / "out").exists()
