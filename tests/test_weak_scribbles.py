"""Pseudo-masks from scribbles: class-id strokes guide the clustering method to a full map."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segrefine.data.io import VOID
from segrefine.errors import InputError
from segrefine.weak.scribbles import (
    pseudo_mask_from_scribbles,
    read_scribbles,
    scribbles_from_mask,
)


def _two_regions():
    rng = np.random.default_rng(0)
    image = np.empty((48, 64, 3), np.float64)
    image[:, :32], image[:, 32:] = (40, 90, 200), (230, 200, 30)
    image = (image + rng.normal(0, 6, image.shape)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((48, 64), np.uint8)
    mask[:, 32:] = 1
    return image, mask


def test_simulated_strokes_carry_each_regions_class():
    _, mask = _two_regions()
    marks = scribbles_from_mask(mask)
    assert set(np.unique(marks)) == {0, 1, VOID}
    assert (mask[marks == 0] == 0).all() and (mask[marks == 1] == 1).all()
    assert (marks != VOID).mean() < 0.1  # thin strokes, not the regions


def test_strokes_grow_into_the_regions_they_mark():
    image, mask = _two_regions()
    pseudo = pseudo_mask_from_scribbles(image, scribbles_from_mask(mask))
    assert (pseudo == mask).mean() > 0.95
    assert (pseudo_mask_from_scribbles(image, np.full(mask.shape, VOID, np.uint8))
            == VOID).all()  # no stroke, nothing to learn  # fmt: skip


def test_bad_scribble_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no scribbles for image 'a'"):
        read_scribbles(tmp_path, "a", (4, 4), 2)
    Image.fromarray(np.full((3, 4), 255, np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="scribbles are 4x3 but the image is 4x4"):
        read_scribbles(tmp_path, "a", (4, 4), 2)
    marks = np.full((4, 4), 255, np.uint8)
    marks[0, 0] = 7
    Image.fromarray(marks).save(tmp_path / "a.png")
    with pytest.raises(InputError, match="scribble label 7 is not a class id"):
        read_scribbles(tmp_path, "a", (4, 4), 2)


def test_pseudo_masks_from_simulated_scribbles(run_cli, tmp_path, synthetic_root):
    out = tmp_path / "pseudo"
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "scribbles",
                           "--simulate-from-masks", "--out", out, "-q")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "pseudo.json").read_text())
    assert report["method"] == "clustering with scribbles" and report["quality"]["miou"] > 0
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "scribbles",
                           "--scribbles", tmp_path / "none", "--out", tmp_path / "x")
    assert code == 2 and "no scribbles for image" in err and not (tmp_path / "x").exists()
