"""The page's "refine my mask": a mask from any tool, uploaded beside the image, is refined
instead of a segmenter's output."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from web_helpers import post, wait

from segrefine.data.coarse import Coarse
from segrefine.data.io import VOC_PALETTE
from segrefine.data.synthetic import generate_scene
from segrefine.errors import InputError
from segrefine.web.pipeline import decode_mask


def _png(array: np.ndarray, palette: bool = False) -> bytes:
    img = Image.fromarray(array)
    if palette:
        img = img.convert("P")
        img.putpalette(VOC_PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class _Refiner:  # what decode_mask asks of a refiner
    def __init__(self, classes: int | None):
        self.spec = type("Spec", (), {"class_agnostic": classes is None})
        self.num_classes = classes or 2
        self.class_names = ("background", *(f"c{k}" for k in range(1, self.num_classes)))


def test_masks_are_read_as_other_tools_write_them():
    ids = np.zeros((20, 30), np.uint8)
    ids[5:15, 5:20] = 2
    three, two = _Refiner(3), _Refiner(2)
    assert np.array_equal(decode_mask(_png(ids), "ids.png", (20, 30), three).labels, ids)
    binary = np.where(ids > 0, 255, 0).astype(np.uint8)  # rembg, SAM, a threshold
    read = decode_mask(_png(binary), "sam.png", (20, 30), two)
    assert np.array_equal(read.labels, ids > 0) and "two-valued" in read.note
    colours = np.asarray(VOC_PALETTE, np.uint8).reshape(256, 3)[ids]  # VOC colours, RGB
    assert np.array_equal(decode_mask(_png(colours), "rgb.png", (20, 30), three).labels, ids)
    small = decode_mask(_png(ids[::2, ::2]), "half.png", (20, 30), three)
    assert small.shape == (10, 15)  # upsampled later, with the image
    for data, name, message in (
        (_png(ids), "big.png", "mask is 30x20, larger than its 20x10 image"),
        (b"not a png", "notes.txt", "is not an image"),
        (b"", "empty.png", "file is empty"),
        (_png(np.arange(600, dtype=np.uint8).reshape(20, 30) % 40), "many.png",
         "values up to 39 .* knows 3 classes"),
        (_png(ids[:, :20]), "narrow.png", "same aspect ratio"),
    ):  # fmt: skip
        shape = (10, 20) if name == "big.png" else (20, 30)
        with pytest.raises(InputError, match=message):
            decode_mask(data, name, shape, three)


def test_an_uploaded_mask_is_refined_in_place_of_the_segmenter(server):
    image, truth = generate_scene(9, 40)
    code, body = post(f"{server}/api/segment", {"refiner": "tiny_refiner"},
                       {"file": ("scene.png", _png(image)),
                        "mask": ("mask.png", _png(truth))})  # fmt: skip
    assert code == 200, body
    status = wait(server, body["job"])
    assert status["state"] == "done", status
    assert status["info"]["coarse"] == "mask" and "segment_s" not in status["timings"]
    assert status["info"]["classes"][0] == "background" and status["timings"]["refine_s"] > 0
    bad = truth.copy()
    bad[0, 0] = 9  # the tiny refiner knows 5 classes
    code, body = post(f"{server}/api/segment", {"refiner": "tiny_refiner"},
                       {"file": ("scene.png", _png(image)), "mask": ("mask.png", _png(bad))})
    assert code == 400 and "values up to 9 (4 distinct) but the refiner knows 5" in body["error"]
    code, body = post(f"{server}/api/segment", {},
                       {"file": ("scene.png", _png(image)), "mask": ("mask.png", _png(truth))})
    assert code == 400 and "choose a refiner run to refine your mask" in body["error"]


def test_the_short_side_an_upsampled_mask_was_predicted_at_reaches_the_refiner(monkeypatch):
    import segrefine.web.pipeline as web_pipeline
    from segrefine.pipeline import Segmentation

    seen = []

    def spy(images, segmenter=None, refiner=None, **kwargs):
        seen.append(kwargs.get("input_size"))
        labels = kwargs["labels"][0].labels
        done = Segmentation(None, labels)
        done.refined = Segmentation(np.ones((2, *labels.shape), np.float32) / 2, labels)
        done.refined.uncertainty, done.refined.nfe = np.zeros(labels.shape, np.float32), 1
        return [done]

    class Agnostic:  # what the page asks of a class-agnostic refiner
        spec = type("Spec", (), {"class_agnostic": True})
        class_names = ("background", "object")

    monkeypatch.setattr(web_pipeline, "run_pipeline", spy)
    image, truth = generate_scene(9, 40)
    mask = Coarse(labels=(truth > 0).astype(np.uint8))
    web_pipeline.segment_and_refine(image, None, Agnostic(), mask=mask, input_size=10)
    web_pipeline.segment_and_refine(image, None, Agnostic(), mask=mask)
    assert seen == [10, None]


def test_a_bad_predicted_at_size_is_refused(server):
    image, truth = generate_scene(9, 40)
    for raw, message in (("0", "between 1 and 40"), ("41", "between 1 and 40"),
                         ("ten", "must be a number")):  # fmt: skip
        code, body = post(f"{server}/api/segment", {"refiner": "tiny_refiner", "input_size": raw},
                          {"file": ("scene.png", _png(image)),
                           "mask": ("mask.png", _png(truth))})  # fmt: skip
        assert code == 400 and message in body["error"], body
