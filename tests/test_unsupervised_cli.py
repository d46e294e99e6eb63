"""`segrefine cluster` / `cluster-benchmark`: outputs, bad inputs, and a BSDS500 smoke run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segrefine.errors import InputError
from segrefine.unsupervised.bsds import list_bsds, load_bsds_sample
from segrefine.unsupervised.run import read_scribbles

torch.set_num_threads(1)
BSDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500"


@pytest.fixture()
def cli(run_cli):
    return run_cli


def write_bands(path: Path, seed: int, size: tuple[int, int] = (24, 32)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = size
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2 :] = 200
    image = np.clip(image + rng.normal(0, 5, image.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image


def test_cluster_folder_writes_outputs_named_after_inputs(cli, tmp_path):
    write_bands(tmp_path / "in" / "a.png", 0)
    write_bands(tmp_path / "in" / "b.jpg", 1)
    code, out, err = cli(
        "cluster", "--images", tmp_path / "in", "--out", tmp_path / "out", "-q", "--max-iter", "5"
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["a.png", "a_labels.png", "b.png", "b_labels.png"]
    ids = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    assert ids.shape == (24, 32) and len(np.unique(ids)) >= 2
    assert Image.open(tmp_path / "out" / "a.png").mode == "RGB"


def test_cluster_with_scribbles_outputs_scribble_labels(cli, tmp_path):
    write_bands(tmp_path / "in" / "a.png", 0)
    scr = np.full((24, 32), 255, np.uint8)
    scr[12, 2:10], scr[12, 20:30] = 3, 5
    (tmp_path / "scr").mkdir()
    Image.fromarray(scr, mode="L").save(tmp_path / "scr" / "a.png")
    code, _, err = cli(
        "cluster",
        "--images",
        tmp_path / "in" / "a.png",
        "--out",
        tmp_path / "out",
        "--scribbles",
        tmp_path / "scr",
        "--quiet",
    )
    assert code == 0, err
    ids = np.asarray(Image.open(tmp_path / "out" / "a_labels.png"))
    assert set(np.unique(ids)) == {3, 5}


def test_scribble_map_of_another_size_names_the_file(cli, tmp_path):
    write_bands(tmp_path / "in" / "a.png", 0)
    (tmp_path / "scr").mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8), mode="L").save(tmp_path / "scr" / "a.png")
    with pytest.raises(InputError, match="a.png: scribble map is 10x10, image is 32x24"):
        read_scribbles(tmp_path / "scr" / "a.png", (24, 32))
    code, out, err = cli(
        "cluster",
        "--images",
        tmp_path / "in",
        "--out",
        tmp_path / "out",
        "--scribbles",
        tmp_path / "scr",
        "--quiet",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "scr/a.png" in err
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_unreadable_image_exits_2_with_one_line(cli, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
    code, _, err = cli("cluster", "--images", tmp_path / "in", "--out", tmp_path / "out", "-q")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "broken.jpg" in err


def test_missing_input_exits_2(cli, tmp_path):
    code, _, err = cli("cluster", "--images", tmp_path / "nope.png", "--out", tmp_path / "out")
    assert code == 2 and "nope.png" in err


def write_fake_bsds(root: Path, n: int = 2) -> Path:
    for i in range(n):
        write_bands(root / "images" / "val" / f"{i:03d}.jpg", i, size=(30, 40))
        truth = np.ones((30, 40), np.uint8)
        truth[:, 20:] = 2
        (root / "segmentations" / "val").mkdir(parents=True, exist_ok=True)
        for k in range(2):
            Image.fromarray(truth, mode="L").save(
                root / "segmentations" / "val" / f"{i:03d}_ann{k}.png"
            )
    return root


def test_cluster_benchmark_writes_results_for_every_method(cli, tmp_path):
    data = write_fake_bsds(tmp_path / "bsds")
    code, out, err = cli(
        "cluster-benchmark",
        "--data",
        data,
        "--split",
        "val",
        "--out",
        tmp_path / "bench",
        "--threads",
        "1",
        "--quiet",
    )
    assert code == 0, err
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert len(results) == 5  # 3 methods, scribbles scored 2 ways
    for scores in results.values():
        assert {"covering", "pri", "voi", "miou", "seconds_per_image"} <= set(scores)
        assert 0.0 <= scores["miou"] <= 1.0
    assert (tmp_path / "bench" / "examples.png").stat().st_size > 0
    assert "best-match mIoU" in (tmp_path / "bench" / "table.md").read_text()


def test_bsds_annotation_of_another_size_names_the_file(tmp_path):
    data = write_fake_bsds(tmp_path / "bsds", n=1)
    bad = data / "segmentations" / "val" / "000_ann1.png"
    Image.fromarray(np.ones((5, 5), np.uint8), mode="L").save(bad)
    with pytest.raises(InputError, match="000_ann1.png"):
        load_bsds_sample(data, "val", "000")


@pytest.mark.skipif(not (BSDS / "images" / "val").is_dir(), reason="BSDS500 not available")
def test_default_method_beats_felzenszwalb_covering_on_a_real_image():
    from segrefine.unsupervised.baselines import felzenszwalb_segment
    from segrefine.unsupervised.cluster import cluster
    from segrefine.unsupervised.metrics import covering

    sample = load_bsds_sample(BSDS, "val", list_bsds(BSDS, "val", 1)[0])
    ours = covering(cluster(sample.image), sample.truths)
    assert ours > covering(felzenszwalb_segment(sample.image), sample.truths)


@pytest.mark.parametrize("option", [["--max-iter", "0"], ["--min-labels", "0"],
                                    ["--merge-threshold", "nan"], ["--max-side", "0"]])  # fmt: skip
def test_bad_cluster_settings_are_one_line_before_any_work(cli, tmp_path, option):
    write_bands(tmp_path / "in" / "a.png", 0)
    code, _, err = cli("cluster", "--images", tmp_path / "in", "--out", tmp_path / "out", "-q",
                       *option)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "clustering settings" in err
    assert not (tmp_path / "out").exists()


def test_a_one_pixel_image_is_one_line(cli, tmp_path):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    code, _, err = cli("cluster", "--images", tmp_path / "dot.png", "--out", tmp_path / "out",
                       "-q")
    assert code == 2 and "at least 4 x 4" in err and len(err.strip().splitlines()) == 1
