"""Masks as they come: every form the coarse reader accepts reads to the same probabilities in
the CLI's folder reader, the Python API, the web app and ``evaluate``."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from segrefine import Refiner
from segrefine.data.coarse import interpret_array, read_coarse
from segrefine.data.io import read_image, read_mask
from segrefine.data.mask_folder import MaskFolder
from segrefine.diffusion.onehot import prior_for_image
from segrefine.errors import InputError
from segrefine.evaluate import predicted_labels
from segrefine.refine import BadInputs, refine_to_folder
from segrefine.web.inputs import decode_mask

H, W = 24, 36


def _object() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((yy - 12) ** 2 / 64 + (xx - 18) ** 2 / 144 < 1).astype(np.uint8)


def _soft() -> np.ndarray:
    return ndimage.gaussian_filter(_object().astype(float), 1.5)


def _save(array, path, **kw):
    Image.fromarray(array).save(path, **kw)


FORMS = {  # name -> (file name, writer, the kind it reads as)
    "class ids": ("x.png", lambda p: _save(_object(), p), "class ids"),
    "0/255": ("x.png", lambda p: _save(_object() * 255, p), "two-valued"),
    "two grey levels": ("x.png", lambda p: _save(30 + _object() * 170, p), "two-valued"),
    "red on black": ("x.png", lambda p: _save(np.stack([_object() * 255, 0 * _object(),
                                                        0 * _object()], -1), p),
                     "two colours"),
    "soft 8-bit": ("x.png", lambda p: _save((_soft() * 255).round().astype(np.uint8), p),
                   "soft"),
    "soft 16-bit": ("x.png", lambda p: Image.fromarray(
        (_soft() * 65535).round().astype(np.uint16)).save(p), "soft"),
    "JPEG": ("x.jpg", lambda p: _save(_object() * 255, p, quality=70), "soft"),
    "RGBA cutout": ("x.png", lambda p: _save(np.dstack([np.full((H, W, 3), 90, np.uint8),
                                                        (_soft() * 255).astype(np.uint8)]), p),
                    "alpha"),
    "H x W map": ("x.npy", lambda p: np.save(p, _soft().astype(np.float32)),
                  "probability of the object"),
    "C x H x W map": ("x.npy", lambda p: np.save(p, np.stack([1 - _soft(), _soft()])
                                                 .astype(np.float16)), "probability map"),
    "float TIFF": ("x.tif", lambda p: Image.fromarray(_soft().astype(np.float32)).save(p),
                   "probability of the object"),
    "half size": ("x.png", lambda p: _save(_object()[::2, ::2] * 255, p), "two-valued"),
    "_mask name": ("x_mask.png", lambda p: _save(_object() * 255, p), "two-valued"),
    "-mask name": ("x-mask.png", lambda p: _save(_object() * 255, p), "two-valued"),
}


@pytest.fixture(scope="module")
def refiner(binary_refiner):
    return Refiner.load(binary_refiner, "cpu")


@pytest.mark.parametrize("form", list(FORMS))
def test_every_face_reads_a_form_to_the_same_probabilities(tmp_path, refiner, form):
    name, write, kind = FORMS[form]
    path = tmp_path / name
    write(path)
    cli = MaskFolder(tmp_path, 2).read("x")  # refine --masks, evaluate --masks / --truth
    api = refiner.read_coarse(path)
    assert cli.kind == api.kind == kind
    reference = prior_for_image((H, W), 2, cli.probs, cli.labels)
    assert np.array_equal(prior_for_image((H, W), 2, api.probs, api.labels), reference)
    if path.suffix != ".npy":
        web = decode_mask(path.read_bytes(), name, (H, W), refiner)
        assert np.array_equal(prior_for_image((H, W), 2, web.probs, web.labels), reference)
    labels, protocol = predicted_labels(cli, (H, W), 2)
    assert not protocol and np.array_equal(labels, reference.argmax(0))
    if kind in ("class ids", "two-valued", "soft") and path.suffix == ".png":
        # an array read by hand and passed to the API reads the same way
        given = interpret_array(np.asarray(Image.open(path)), 2)
        assert np.array_equal(prior_for_image((H, W), 2, given.probs, given.labels), reference)
    assert (reference.argmax(0) == _object()).mean() > 0.9  # the object, not void or noise


def test_the_readmes_api_snippet_and_the_cli_give_identical_labels_on_a_0_255_mask(
    run_cli, tmp_path, synthetic_root, refiner, binary_refiner
):
    images, masks, ids = _object_masks(tmp_path, synthetic_root, 2)
    code, _, err = run_cli("refine", "--refiner", binary_refiner, "--masks", masks, "--images",
                           images, "--out", tmp_path / "out", "--device", "cpu", "-q")
    assert code == 0, err
    for item_id in ids:
        with pytest.warns(UserWarning, match="two-valued"):
            api = refiner.refine(read_image(images / f"{item_id}.png"),
                                 labels=read_mask(masks / f"{item_id}.png"))
        cli = np.asarray(Image.open(tmp_path / "out" / f"{item_id}.png"))
        assert np.array_equal(api.labels, cli)


def test_evaluate_scores_masks_as_refine_reads_them(run_cli, tmp_path):
    truth, preds = tmp_path / "truth", tmp_path / "preds"
    truth.mkdir(), preds.mkdir()
    for k in range(3):
        _save(_object() * 255, truth / f"im{k}.png")  # the truth as 0/255 masks...
        _save(np.roll(_object(), k, 1)[::2, ::2], preds / f"im{k}_mask.png")  # ids, half size
    code, out, err = run_cli("evaluate", "--masks", preds, "--truth", truth)
    assert code == 0, err
    first = predicted_labels(read_coarse(preds / "im0_mask.png", 2), (H, W), 2)[0]
    assert np.array_equal(first, prior_for_image((H, W), 2, labels=_object()[::2, ::2]
                                                 ).argmax(0))  # fmt: skip
    assert "mIoU" in out


@pytest.mark.parametrize("write, message", [
    (lambda p: _save(np.stack([_object() * 255, _object() * 80, _object()], -1)
                     | np.uint8(7), p), "not in the VOC palette: add a classes.txt"),
    (lambda p: _save((np.arange(H * W).reshape(H, W) % 40).astype(np.uint8), p),
     "knows 3 classes"),
    (lambda p: np.save(p.with_suffix(".npy"), np.full((H, W), 2.0, np.float32)),
     r"probability in \[0, 1\]"),
])  # fmt: skip
def test_what_the_reader_refuses_says_what_to_do(tmp_path, write, message):
    write(tmp_path / "x.png")
    with pytest.raises(InputError, match=message):
        MaskFolder(tmp_path, 3).read("x")


def test_two_different_masks_for_one_image_are_an_error_naming_both(tmp_path):
    _save(np.roll(_object(), 3, 1), tmp_path / "x.png")
    np.save(tmp_path / "x.npy", np.stack([1 - _soft(), _soft()]).astype(np.float32))
    with pytest.raises(InputError, match="x.npy and x.png are both masks for image 'x'"):
        MaskFolder(tmp_path, 2).read("x")
    assert MaskFolder(tmp_path, 2, "{id}.npy").read("x").kind == "probability map"
    _save(np.stack([1 - _soft(), _soft()]).argmax(0).astype(np.uint8), tmp_path / "x.png")
    # labels beside the map they came from, as predict --save-probs writes them
    assert MaskFolder(tmp_path, 2).read("x").kind == "probability map"
    assert MaskFolder(tmp_path, 2, labels_first=True).read("x").kind == "class ids"
    _save(_object(), tmp_path / "x_mask.png")
    with pytest.raises(InputError, match="are both masks"):
        MaskFolder(tmp_path, 2).read("x")
    for bad in ("{id}/../x.png", "mask.png", "{id}{other}.png"):
        with pytest.raises(InputError, match="--mask-pattern"):
            MaskFolder(tmp_path, 2, bad)


def _object_masks(tmp_path, synthetic_root, n: int):
    """``n`` synthetic val images and 0/255 masks of their objects, in two folders."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    src = sorted((synthetic_root / "images" / "val").iterdir())[:n]
    for path in src:
        Image.open(path).save(images / path.name)
        truth = read_mask(synthetic_root / "masks" / "val" / f"{path.stem}.png")
        _save(((truth > 0) * 255).astype(np.uint8), masks / f"{path.stem}.png")
    return images, masks, [p.stem for p in src]


def _folder_with_one_bad_mask(tmp_path, synthetic_root):
    images, masks, ids = _object_masks(tmp_path, synthetic_root, 3)
    (masks / f"{ids[-1]}.png").write_bytes(b"not a png")  # the last one is broken
    return images, masks, ids


def test_a_folder_with_one_bad_mask_writes_nothing(tmp_path, synthetic_root, refiner):
    images, masks, ids = _folder_with_one_bad_mask(tmp_path, synthetic_root)
    with pytest.raises(InputError, match=f"{ids[-1]}.png: cannot read image.*nothing was"):
        refine_to_folder(refiner, images, tmp_path / "out", probs_dir=masks, progress=False,
                         notice=lambda m: None)  # fmt: skip
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadInputs) as caught:
        refine_to_folder(refiner, images, tmp_path / "out", probs_dir=masks, progress=False,
                         notice=lambda m: None, skip_bad=True)  # fmt: skip
    assert caught.value.written == ids[:2] and list(caught.value.bad) == [ids[-1]]
    assert sorted(p.stem for p in (tmp_path / "out").glob("*.npy")) == ids[:2]
    assert "refined 2 images, skipped 1 bad inputs" in str(caught.value)


def test_an_empty_mask_is_refined_with_a_warning(tmp_path, synthetic_root, refiner):
    images, masks, ids = _folder_with_one_bad_mask(tmp_path, synthetic_root)
    _save(np.zeros(read_image(images / f"{ids[-1]}.png").shape[:2], np.uint8),
          masks / f"{ids[-1]}.png")
    said = []
    refine_to_folder(refiner, images, tmp_path / "out", probs_dir=masks, progress=False,
                     notice=said.append)  # fmt: skip
    assert sum("holds one class only" in m for m in said) == 1


def test_a_png_of_a_pillow_image_in_memory_is_read_like_the_file(refiner):
    buf = io.BytesIO()
    _save(_object() * 255, buf, format="PNG")
    web = decode_mask(buf.getvalue(), "m.png", (H, W), refiner)
    assert web.kind == "two-valued" and np.array_equal(web.labels, _object())


def test_evaluate_suggests_classes_for_object_masks_against_voc_truth(run_cli, tmp_path,
                                                                      voc_root):  # fmt: skip
    preds = tmp_path / "preds"
    preds.mkdir()
    for sid in (voc_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split():
        truth = read_mask(voc_root / "SegmentationClass" / f"{sid}.png")
        _save((((truth > 0) & (truth < 255)) * 255).astype(np.uint8), preds / f"{sid}.png")
    code, _, err = run_cli("evaluate", "--masks", preds, "--data", voc_root)
    assert code == 2 and "pass --classes" in err and "21 classes" in err
    code, out, err = run_cli("evaluate", "--masks", preds, "--data", voc_root, "--classes",
                             "bird,cat,dog,horse,sheep")  # fmt: skip
    assert code == 2 and "pass --classes" in err  # still not one class against the rest
    (preds / "classes.txt").write_text("background\nhorse\n")
    code, _, err = run_cli("evaluate", "--masks", preds, "--data", voc_root)
    assert code == 2 and "pass --classes horse" in err
