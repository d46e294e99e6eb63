"""The model zoo: entries shipped in the package load offline, by name, checksum-verified."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from segrefine import Refiner, Segmenter, zoo
from segrefine.errors import InputError


@pytest.fixture()
def copied_zoo(tmp_path, monkeypatch):
    """A copy of the installed zoo that a test may damage."""
    root = tmp_path / "zoo"
    shutil.copytree(zoo.ROOT, root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(zoo, "ROOT", root)
    monkeypatch.setattr(zoo, "MANIFEST", root / "manifest.json")
    zoo.manifest.cache_clear()
    yield root
    zoo.manifest.cache_clear()


def test_the_weizmann_entry_loads_offline_by_name_and_refines():
    assert "weizmann-horse" in zoo.names()
    seg = Segmenter.load("zoo:weizmann-horse", "cpu")
    ref = Refiner.load("zoo:weizmann-horse", "cpu")
    assert seg.class_names == ref.class_names == ("background", "horse")
    image = np.zeros((60, 90, 3), np.uint8)
    image[20:40, 30:60] = 200
    out = ref.refine(image, seg.predict(image))
    assert out.labels.shape == (60, 90) and np.isfinite(out.probs).all()


def test_all_weights_together_are_at_most_30_mb():
    files = [zoo.ROOT / rel for name in zoo.names() for rel in zoo.entry(name)["files"]]
    assert files and sum(p.stat().st_size for p in files) <= 30e6


def test_every_file_of_an_entry_is_in_its_manifest_and_matches():
    for name in zoo.names():
        record = zoo.entry(name)
        on_disk = {p.relative_to(zoo.ROOT).as_posix()
                   for kind in record["runs"].values() for p in (zoo.ROOT / kind).rglob("*")
                   if p.is_file()}  # fmt: skip
        assert on_disk == set(record["files"])
        zoo.verify(name)
        assert zoo.card(name).is_file()


def test_a_damaged_file_is_refused_naming_it(copied_zoo):
    weights = copied_zoo / "weizmann-horse" / "refiner" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"refiner/model.safetensors: .*does not match its "
                                         r"checksum"):  # fmt: skip
        Refiner.load("zoo:weizmann-horse", "cpu")
    Segmenter.load("zoo:weizmann-horse", "cpu")  # the entry's other run is intact


def test_a_missing_file_or_an_unknown_name_is_one_line(copied_zoo):
    (copied_zoo / "weizmann-horse" / "segmenter" / "config.json").unlink()
    with pytest.raises(InputError, match="incomplete"):
        Segmenter.load("zoo:weizmann-horse", "cpu")
    with pytest.raises(InputError, match=r"no zoo model zoo:nope \(known: .*zoo:weizmann-horse"):
        Refiner.load("zoo:nope", "cpu")
    (copied_zoo / "manifest.json").write_text("{")
    zoo.manifest.cache_clear()
    with pytest.raises(InputError, match="manifest is not valid JSON"):
        zoo.names()


def test_the_web_app_opens_on_the_zoo():
    from segrefine.web.runs import ModelCache, scan_runs

    index = scan_runs(None)
    assert "zoo:weizmann-horse" in index.segmenters and "zoo:weizmann-horse" in index.refiners
    assert json.dumps(index.as_json())  # what /api/runs sends
    ref = ModelCache(index).get("refiner", "zoo:weizmann-horse")
    assert ref.class_names == ("background", "horse")


def test_segrefine_zoo_lists_the_entries_with_their_scores(run_cli):
    code, out, err = run_cli("zoo", "--verify")
    assert code == 0, err
    scores = zoo.entry("weizmann-horse")["scores"]["refined"]
    assert "zoo:weizmann-horse" in out and f"Boundary IoU {scores['boundary_iou']:.2f}" in out
    code, out, _ = run_cli("zoo", "zoo:weizmann-horse")
    assert code == 0 and out.startswith("# zoo:weizmann-horse")
    code, _, err = run_cli("zoo", "nope")
    assert code == 2 and "zoo:weizmann-horse" in err and "known: " in err


def test_refine_takes_zoo_names_for_both_runs(run_cli, tmp_path):
    from PIL import Image

    image = np.zeros((48, 64, 3), np.uint8)
    image[12:36, 16:48] = (150, 90, 60)
    Image.fromarray(image).save(tmp_path / "photo.png")
    code, _, err = run_cli("refine", "--segmenter", "zoo:weizmann-horse", "--refiner",
                           "zoo:weizmann-horse", "--images", tmp_path / "photo.png", "--out",
                           tmp_path / "out", "--device", "cpu", "-q")  # fmt: skip
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "out" / "photo.png")).shape == (48, 64)


def test_the_same_weights_saved_again_are_the_same_bytes(tmp_path):
    # the manifest pins each file's SHA-256, so re-packing unchanged weights must not change
    # it; safetensors alone orders the metadata's keys differently from one save to the next
    from segrefine import checkpoint

    tensors, meta = checkpoint.load_tensors(zoo.ROOT / "weizmann-horse/refiner/model.safetensors")
    files = [tmp_path / f"{i}.safetensors" for i in range(8)]
    for f in files:
        checkpoint.save_tensors(f, tensors, meta)
    assert len({f.read_bytes() for f in files}) == 1
    again, meta_again = checkpoint.load_tensors(files[0])
    assert meta_again == meta and all(torch.equal(again[k], tensors[k]) for k in tensors)
