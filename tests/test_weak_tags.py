"""Pseudo-masks from image tags: a classifier's class activation maps, grown to edges."""

from __future__ import annotations

import numpy as np
import pytest

from segrefine.errors import InputError
from segrefine.weak.annotations import read_tags, tags_from_mask
from segrefine.weak.tags import (
    TagSettings,
    boxes_from_cams,
    class_maps,
    pseudo_mask_from_tags,
    train_classifier,
)


def _planted(n: int, seed: int = 0):
    """Textured grey scenes, half of them with a red square planted somewhere."""
    rng = np.random.default_rng(seed)
    images, tags, boxes = [], [], []
    for i in range(n):
        image = rng.normal(128, 25, (64, 64, 3)).clip(0, 255)
        box = None
        if i % 2 == 0:
            y, x = rng.integers(4, 40, size=2)
            image[y : y + 20, x : x + 20] = (220, 30, 30) + rng.normal(0, 8, (20, 20, 3))
            box = (y, x)
        images.append(image.clip(0, 255).astype(np.uint8))
        tags.append({0} if box else set())
        boxes.append(box)
    return images, tags, boxes


def test_a_planted_objects_activation_peaks_inside_it():
    images, tags, boxes = _planted(48)
    settings = TagSettings(size=64, epochs=12, batch_size=16, seed=0)
    net = train_classifier(images, tags, 1, settings)
    test, _, where = _planted(6, seed=1)
    inside = 0
    for image, box in zip(test, where, strict=True):
        if box is None:
            continue
        cam = class_maps(net, image, 64)[0]
        y, x = np.unravel_index(cam.argmax(), cam.shape)
        inside += box[0] - 4 <= y < box[0] + 24 and box[1] - 4 <= x < box[1] + 24
    assert inside == 3  # every planted square, none missed
    y, x = where[0]
    for method in ("grabcut", "random-walker"):
        settings = TagSettings(size=64, method=method)
        mask = pseudo_mask_from_tags(test[0], {0}, class_maps(net, test[0], 64), settings)
        assert mask.shape == (64, 64) and (mask[y + 5 : y + 15, x + 5 : x + 15] == 1).mean() > 0.8
    assert (mask[:, :2] != 1).all() or x < 6  # the square, not the whole image
    assert (pseudo_mask_from_tags(test[1], set(), class_maps(net, test[1], 64), settings)
            == 0).all()  # an untagged image is background  # fmt: skip


def test_tags_simulated_from_a_mask_are_the_classes_it_shows():
    mask = np.zeros((100, 100), np.uint8)
    mask[:20, :20], mask[50, 50], mask[90:, :] = 3, 1, 255
    assert tags_from_mask(mask) == {3}  # one pixel of class 1 is too little to tag


@pytest.mark.parametrize("content, message", [
    ("img1 cat\nimg9 cat\n", "line 2: no image 'img9'"),
    ("img1 cat, dog\n", "line 1: unknown class 'dog'"),
    ("img1 background\n", "line 1: unknown class 'background'"),
])  # fmt: skip
def test_bad_tags_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "tags.txt"
    path.write_text(content)
    with pytest.raises(InputError, match=message) as err:
        read_tags(path, ("background", "cat"), ["img1", "img2"])
    assert str(path) in str(err.value)
    path.write_text("# comment\nimg1 cat  # ok\n\nimg2\n")
    assert read_tags(path, ("background", "cat"), ["img1", "img2"]) == {"img1": {1},
                                                                         "img2": set()}


def test_pseudo_masks_from_simulated_tags(run_cli, tmp_path, synthetic_root):
    out = tmp_path / "pseudo"
    code, stdout, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "tags",
                                "--simulate-from-masks", "--out", out, "-q")  # fmt: skip
    assert code == 0, err
    assert (out / "tags.txt").read_text().count("\n") == 16
    assert len(list((out / "masks" / "train").iterdir())) == 16
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "tags",
                           "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "--tags" in err
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "words",
                           "--simulate-from-masks", "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "--from must be one of" in err
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "tags",
                           "--simulate-from-masks", "--method", "box", "--out", tmp_path / "x")
    assert code == 2 and "--method for tags must be one of grabcut, random-walker" in err
    for bad in (("--tag-box-threshold", "0"), ("--tag-box-pad", "nan")):
        code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "tags",
                               "--simulate-from-masks", *bad, "--out", tmp_path / "x")
        assert code == 2 and "--tag-box-threshold must be in (0, 1]" in err
        assert not (tmp_path / "x").exists()
    code, _, err = run_cli("pseudo-masks", "--data", synthetic_root, "--from", "tags",
                           "--simulate-from-masks", "--tag-box-threshold", "0.45",
                           "--tag-box-pad", "0", "--out", tmp_path / "tight", "-q")
    assert code == 0, err


def test_boxes_around_class_maps_keep_each_real_region_and_drop_specks():
    cams = np.zeros((2, 32, 32), np.float32)
    cams[0, 4:12, 4:12] = 1.0  # tag 0: two objects ...
    cams[0, 20:28, 16:30] = 0.8
    cams[0, 30, 0] = 0.9  # ... and a speck under a quarter of the largest
    cams[1, 0:4, 0:4] = 0.2  # tag 1 never reaches the threshold
    settings = TagSettings(box_threshold=0.3, box_pad=0.0)
    boxes = boxes_from_cams(cams, {0, 1}, (64, 128), settings)  # an image twice the size
    assert sorted((b.label, b.y, b.x, b.h, b.w) for b in boxes) == [
        (1, 8, 16, 16, 32), (1, 40, 64, 16, 56)]  # fmt: skip
    padded = boxes_from_cams(cams, {0}, (64, 128), TagSettings(box_pad=0.25))
    assert sorted((b.y, b.x, b.h, b.w) for b in padded)[0] == (4, 8, 24, 48)


def test_a_tagged_image_whose_maps_find_nothing_is_void():
    image = np.full((32, 32, 3), 128, np.uint8)
    mask = pseudo_mask_from_tags(image, {0}, np.zeros((1, 32, 32), np.float32), TagSettings())
    assert (mask == 255).all()
    with pytest.raises(ValueError, match="method must be one of"):
        TagSettings(method="magic")
