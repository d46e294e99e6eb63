"""Masks as other tools write them: RGB colour masks, 0/255 binary masks, class lists beside
predictions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segrefine.data.io import VOC_PALETTE, read_mask
from segrefine.errors import InputError

PALETTE = np.array(VOC_PALETTE, np.uint8).reshape(256, 3)


def test_rgb_colour_masks_are_read_through_the_voc_palette_or_a_colour_table(tmp_path):
    labels = np.zeros((4, 6), np.uint8)
    labels[1:3, 1:4], labels[0, 0] = 13, 255
    Image.fromarray(PALETTE[labels]).save(tmp_path / "voc.png")
    assert np.array_equal(read_mask(tmp_path / "voc.png"), labels)
    table = np.array([[0, 0, 0], [255, 255, 255]])
    Image.fromarray(table.astype(np.uint8)[np.minimum(labels, 1)]).save(tmp_path / "own.png")
    assert np.array_equal(read_mask(tmp_path / "own.png", table), np.minimum(labels, 1))
    with pytest.raises(InputError, match=r"own\.png: colour mask has colour \(255, 255, 255\)"):
        read_mask(tmp_path / "own.png")  # white is not a VOC colour


def _inputs(root, tmp_path, write):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for path in sorted((root / "images" / "val").iterdir())[:2]:
        Image.open(path).save(images / path.name)
        truth = np.asarray(Image.open(root / "masks" / "val" / f"{path.stem}.png"))
        write(masks / f"{path.stem}.png", truth > 0)  # objects vs the rest
    return images, masks


def test_a_binary_0_255_mask_is_read_as_background_and_object_with_one_notice(
    run_cli, tmp_path, synthetic_root, binary_refiner
):
    images, masks = _inputs(synthetic_root, tmp_path, lambda p, m: Image.fromarray(
        (m * 255).astype(np.uint8)).save(p))  # fmt: skip
    code, _, err = run_cli("refine", "--refiner", binary_refiner, "--masks", masks, "--images",
                           images, "--out", tmp_path / "out", "--device", "cpu", "-q")
    assert code == 0, err
    assert err.count("two-valued mask") == 1 and "0 = background, 255 = blob" in err
    ids01, ids255 = tmp_path / "ids", tmp_path / "out"
    # the same masks written as class ids 0/1 refine identically
    images2, masks01 = _inputs(synthetic_root, tmp_path / "b", lambda p, m: Image.fromarray(
        m.astype(np.uint8)).save(p))  # fmt: skip
    code, _, err = run_cli("refine", "--refiner", binary_refiner, "--masks", masks01,
                           "--images", images2, "--out", ids01, "--device", "cpu", "-q")
    assert code == 0 and "binary" not in err
    for path in ids01.glob("*.png"):
        assert (ids255 / path.name).read_bytes() == path.read_bytes()


def test_a_class_list_that_does_not_match_is_refused(
    run_cli, tmp_path, synthetic_root, binary_refiner, trained_run
):
    images, masks = _inputs(synthetic_root, tmp_path, lambda p, m: Image.fromarray(
        m.astype(np.uint8)).save(p))  # fmt: skip
    (masks / "classes.txt").write_text("background\nhorse\n")
    code, _, err = run_cli("refine", "--refiner", binary_refiner, "--masks", masks, "--images",
                           images, "--out", tmp_path / "out", "--device", "cpu", "-q")
    assert code == 2 and "classes.txt" in err and "horse" in err and "blob" in err
    # evaluate reads the classes.txt that predict writes beside its predictions
    preds = tmp_path / "preds"
    code, _, err = run_cli("predict", "--segmenter", trained_run, "--images", synthetic_root,
                           "--out", preds, "--device", "cpu", "-q")
    assert code == 0, err
    code, _, err = run_cli("evaluate", "--masks", preds, "--data", synthetic_root,
                           "--classes", "blob")
    assert code == 2 and "predictions' classes.txt" in err and "the truth has 2" in err


def test_an_exif_rotated_photo_is_read_upright(tmp_path):
    from segrefine.data.io import read_image

    stored = np.zeros((20, 40, 3), np.uint8)  # landscape pixels...
    stored[:, :10] = 255
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # ...shown rotated 90 degrees clockwise, as phones store portraits
    img.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright = read_image(tmp_path / "phone.jpg")
    assert upright.shape == (40, 20, 3)
    assert upright[:10].mean() > 200 and upright[-10:].mean() < 50  # the white band on top


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "not a readable .npy"),
    (lambda p: np.save(p, np.zeros((2, 3), complex)), "expected real numbers"),
    (lambda p: np.save(p, np.zeros(3, [("a", "f4")])), "expected real numbers"),
    (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + _header((100_000, 100_000, 100))),
     "over 500000000 elements"),
    (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + _header((2, 64, 64))), "truncated"),
])  # fmt: skip
def test_a_hostile_npy_is_refused_from_its_header(tmp_path, make, message):
    from segrefine.data.io import read_npy

    path = tmp_path / "p.npy"
    make(path)
    with pytest.raises(InputError, match=message):
        read_npy(path)
    np.save(path, np.full((2, 4, 4), 0.5, np.float16))
    assert read_npy(path).shape == (2, 4, 4)


def _header(shape) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    pad = 64 - (10 + len(text) + 1) % 64
    body = text + b" " * pad + b"\n"
    return len(body).to_bytes(2, "little") + body
