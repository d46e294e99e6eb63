"""Options and inputs the commands must refuse in one line, before any work or output
(issue 31): class lists, thread counts, attention resolutions, output files, clustering
strips, write failures, and messages that must say what is true."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from segrefine import checkpoint
from segrefine.data.datasets import read_class_table
from segrefine.errors import InputError


def _one_line(code: int, err: str) -> bool:
    return code == 2 and len(err.strip().splitlines()) == 1


# -- classes.txt ------------------------------------------------------------------------------


def test_a_class_list_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_bytes(b"background\ncaf\xe9\n")
    with pytest.raises(InputError, match="not UTF-8") as err:
        read_class_table(path)
    assert str(path) in str(err.value)


def test_more_classes_than_label_ids_is_one_line(run_cli, tmp_path, synthetic_root):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root, data)
    (data / "classes.txt").write_text("\n".join(f"c{i}" for i in range(300)) + "\n")
    code, _, err = run_cli("evaluate", "--masks", data / "masks" / "val", "--data", data)
    assert _one_line(code, err) and "300 classes" in err and "classes.txt" in err, err


def test_class_names_with_spaces_keep_their_colour(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background 0 0 0\ntraffic light 250 170 30\npotted  plant 0 64 0\n")
    names, colours = read_class_table(path)
    assert names == ("background", "traffic light", "potted  plant")
    assert colours.tolist() == [[0, 0, 0], [250, 170, 30], [0, 64, 0]]
    path.write_text("background\ntraffic light\n")  # names alone, spaces and all
    assert read_class_table(path) == (("background", "traffic light"), None)


# -- options bounded before any work ----------------------------------------------------------


def test_too_many_threads_is_one_line(run_cli, tmp_path, trained_run, synthetic_root):
    code, _, err = run_cli("predict", "--segmenter", trained_run, "--images",
                           synthetic_root / "images" / "val", "--out", tmp_path / "o",
                           "--threads", "100000")  # fmt: skip
    assert _one_line(code, err) and "--threads" in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bad", [["--resolution", "100000"], ["--resolution", "0"],
                                 ["--threshold", "1.5"]])  # fmt: skip
def test_attention_segment_refuses_options_before_reading_the_model(run_cli, tmp_path, bad):
    """Refused before the model is read (here there is none) and before --out is made."""
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    code, _, err = run_cli("attention-segment", "--attention-model", tmp_path / "no-model",
                           "--classes", "sky", "--images", image, "--out", tmp_path / "out",
                           *bad)  # fmt: skip
    assert _one_line(code, err) and bad[0] in err, err
    assert not (tmp_path / "out").exists()


def test_attention_segment_leaves_no_output_folder_for_a_resolution_the_model_refuses(
    run_cli, tmp_path, sd_folder
):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    code, _, err = run_cli("attention-segment", "--attention-model", sd_folder, "--classes",
                           "sky", "--images", image, "--out", tmp_path / "out",
                           "--resolution", "30", "--device", "cpu", "-q")  # fmt: skip
    assert _one_line(code, err) and "multiple of" in err, err
    assert not (tmp_path / "out").exists()


def test_evaluate_checks_its_json_file_before_scoring(run_cli, tmp_path, synthetic_root):
    folder = tmp_path / "metrics"
    folder.mkdir()
    code, out, err = run_cli("evaluate", "--masks", synthetic_root / "masks" / "val", "--data",
                             synthetic_root, "--json", folder)  # fmt: skip
    assert _one_line(code, err) and "--json" in err and str(folder) in err, err
    assert ".tmp" not in err and out == ""  # nothing scored, no temporary named
    code, _, err = run_cli(
        "evaluate",
        "--masks",
        synthetic_root / "masks" / "val",
        "--data",
        synthetic_root,
        "--json",
        tmp_path / "nowhere" / "m.json",
    )
    assert _one_line(code, err) and "--json" in err, err


# -- messages that say what is true -----------------------------------------------------------


def test_pseudo_masks_lists_the_sources_there_are(run_cli, tmp_path, synthetic_root):
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--out", tmp_path / "o",
                           "--from", "bogus")  # fmt: skip
    assert _one_line(code, err) and "not implemented" not in err, err
    assert all(s in err for s in ("boxes", "tags", "scribbles", "attention"))


def test_no_help_names_a_zoo_entry_that_does_not_ship(run_cli):
    from segrefine import zoo
    from segrefine.cli import app

    entries = set(json.loads(zoo.MANIFEST.read_text())["entries"])
    for name in [c.name for c in app.registered_commands]:
        code, out, _ = run_cli(name, "--help")
        named = set(re.findall(r"zoo:([a-z0-9-]+)", out.replace("\n", " "))) - {"name"}
        assert code == 0 and named <= entries, (name, named)


def test_cluster_states_the_strip_it_refuses_and_why(run_cli, tmp_path):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((4, 4000, 3), np.uint8)).save(strip)
    code, _, err = run_cli("cluster", "--images", strip, "--out", tmp_path / "o")
    assert _one_line(code, err), err
    assert "4000x4" in err and "--max-input-side" in err and "strip.png" in err
    assert "1024x1" not in err.split("would be")[0]  # the image's own size comes first
    assert not (tmp_path / "o").exists()


def test_a_failed_log_write_names_the_log(tmp_path):
    """A full disk (/dev/full) fails a write with an error that names no file."""
    run = tmp_path / "run"
    run.mkdir()
    (run / checkpoint.LOG).symlink_to("/dev/full")
    with pytest.raises(OSError) as err:
        checkpoint.append_log(run, {"epoch": 1})
    assert err.value.filename == str(run / checkpoint.LOG)
