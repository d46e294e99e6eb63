"""Starting a run from a trained one (``--init-from RUN|zoo:NAME``): matching tensors copied,
class layers fresh when the classes differ, the start recorded."""

from __future__ import annotations

import json

import pytest
import torch
from refiner_helpers import tiny_config

from segrefine import Refiner, Segmenter
from segrefine.checkpoint import init_from
from segrefine.diffusion import train_refiner
from segrefine.errors import InputError
from segrefine.segmenting.train import TrainConfig, train_segmenter


def test_a_refiner_of_the_same_classes_starts_as_a_copy(trained_refiner):
    run = trained_refiner[0]
    source = Refiner.load(run, "cpu")
    fresh = Refiner.from_spec(source.spec, "cpu")
    started = init_from(fresh.net, run, "refiner")
    assert started["fresh"] == 0 and started["copied"] == len(fresh.net.state_dict())
    for k, v in source.net.state_dict().items():
        assert torch.equal(fresh.net.state_dict()[k], v)


def test_other_classes_keep_fresh_class_layers(binary_refiner, trained_refiner):
    five = Refiner.from_spec(Refiner.load(trained_refiner[0], "cpu").spec, "cpu")
    before = {k: v.clone() for k, v in five.net.state_dict().items()}
    started = init_from(five.net, binary_refiner, "refiner")  # 2 classes into 5
    assert started["copied"] > 0 and started["fresh"] > 0
    changed = {k for k, v in five.net.state_dict().items() if not torch.equal(v, before[k])}
    assert len(changed) <= started["copied"]
    source = Refiner.load(binary_refiner, "cpu").net.state_dict()
    assert all(torch.equal(five.net.state_dict()[k], source[k]) for k in changed)


def test_train_refiner_records_where_it_started(tmp_path, synthetic_root, binary_refiner):
    out = tmp_path / "run"
    cfg = tiny_config(synthetic_root, iterations=2, val_split=None,
                      init_from=str(binary_refiner))  # fmt: skip
    train_refiner(cfg, out, device="cpu", progress=False)
    assert json.loads((out / "config.json").read_text())["train"]["init_from"] == str(
        binary_refiner)


def test_train_segmenter_starts_from_a_run_of_other_classes(tmp_path, synthetic_root,
                                                            trained_run):  # fmt: skip
    out = tmp_path / "seg"
    cfg = TrainConfig(data=str(synthetic_root), classes=["blob"], size=32, width=4, depth=2,
                      epochs=1, batch_size=4, init_from=str(trained_run))  # fmt: skip
    train_segmenter(cfg, out, device="cpu", progress=False)
    assert Segmenter.load(out, "cpu").class_names == ("background", "blob")
    assert json.loads((out / "config.json").read_text())["train"]["init_from"] == str(
        trained_run)


def test_a_bad_start_is_refused_before_anything_is_written(tmp_path, synthetic_root,
                                                           trained_run):  # fmt: skip
    for start, message in ((tmp_path / "nothing", "no such run folder"),
                           (trained_run, "is a segmenter run, expected a refiner run"),
                           ("zoo:nope", "no zoo model zoo:nope")):  # fmt: skip
        cfg = tiny_config(synthetic_root, iterations=2, val_split=None, init_from=str(start))
        with pytest.raises(InputError, match=message):
            train_refiner(cfg, tmp_path / "run", device="cpu", progress=False)
        assert not (tmp_path / "run").exists()
    net = Refiner.from_spec(Refiner.load("zoo:weizmann-horse", "cpu").spec, "cpu").net
    assert init_from(net, "zoo:weizmann-horse", "refiner")["fresh"] == 0
    with pytest.raises(InputError, match="no tensor of zoo:weizmann-horse fits"):
        init_from(torch.nn.Linear(3, 3), "zoo:weizmann-horse", "refiner")
