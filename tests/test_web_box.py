"""The page's "from a box": a box dragged on the image, GrabCut's mask in it (weak supervision),
refined like an uploaded mask. The API is tested over HTTP; the page in Chromium (skipped, with
the reason, where chromium or playwright is missing, as in test_web_page.py)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from web_helpers import BROWSER_ARGS, CHROMIUM, chromium_api, get, post, wait

from segrefine.errors import InputError
from segrefine.weak.annotations import Box
from segrefine.web import inputs
from segrefine.web.pipeline import mask_from_box, parse_box


def _square(size: int = 64, lo: int = 20, hi: int = 44) -> np.ndarray:
    """A flat yellow square on a flat blue background."""
    image = np.empty((size, size, 3), np.uint8)
    image[:] = (30, 60, 200)
    image[lo:hi, lo:hi] = (230, 200, 40)
    return image


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _box(**kw) -> str:
    return json.dumps({"x": 14, "y": 14, "w": 36, "h": 36, "label": 1, **kw})


def test_grabcut_in_the_box_finds_the_square_and_nothing_outside():
    truth = np.zeros((64, 64), bool)
    truth[20:44, 20:44] = True
    mask = mask_from_box(_square(), Box(2, 14, 14, 36, 36))
    assert mask.shape == (64, 64) and set(np.unique(mask).tolist()) <= {0, 2}
    assert ((mask == 2) == truth).mean() > 0.97
    assert not mask[:14].any() and not mask[:, 50:].any()  # background outside the box


def test_a_large_crop_is_cut_at_a_reduced_scale(monkeypatch):
    monkeypatch.setattr(inputs, "GRABCUT_MAX_PIXELS", 4_000)  # the crop is 240x240 px
    truth = np.zeros((240, 240), bool)
    truth[60:180, 60:180] = True
    mask = mask_from_box(_square(240, 60, 180), Box(1, 40, 40, 160, 160))
    assert mask.shape == (240, 240) and ((mask == 1) == truth).mean() > 0.95
    assert not mask[:40].any() and not mask[:, 200:].any()


class _Refiner:
    num_classes = 5


@pytest.mark.parametrize("raw, message", [
    (_box(x=50), "box (x=50, y=14, w=36, h=36) is outside the 64x64 image"),
    (_box(x=-1), "outside the 64x64 image"),
    (_box(w=-5), "box size -5x36 is not positive"),
    (_box(h=0), "box size 36x0 is not positive"),
    ('{"x": NaN, "y": 1, "w": 2, "h": 2, "label": 1}', "box x must be an integer, got NaN"),
    (_box(y=1e400), "box y must be an integer, got Infinity"),
    (_box(w=2.5), "box w must be an integer, got 2.5"),
    (_box(label=True), "box label must be an integer"),
    (_box(label="1"), "box label must be an integer"),
    (_box(label=0), "box label 0 is the background"),
    (_box(label=9), "box label 9 is not a class of the refiner (1 to 4)"),
    ('{"x": 1}', "box needs x, y, w, h and label"),
    ("[1, 2", "box: not valid JSON"),
    ("[" * 5000, "box: over 1000 characters"),
], ids=lambda v: v[:24])  # fmt: skip
def test_bad_boxes_are_named(raw, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_box(raw, (64, 64), _Refiner())
    assert parse_box(_box(x=14.0), (64, 64), _Refiner()) == Box(1, 14, 14, 36, 36)


def test_a_box_is_cut_by_grabcut_and_refined(server):
    image = _square()
    code, body = post(f"{server}/api/segment", {"refiner": "tiny_refiner", "box": _box()},
                      {"file": ("square.png", _png(image))})  # fmt: skip
    assert code == 200, body
    status = wait(server, body["job"])
    assert status["state"] == "done", status
    info, timings = status["info"], status["timings"]
    assert info["coarse"] == "box" and info["box"] == {"x": 14, "y": 14, "w": 36, "h": 36,
                                                       "label": 1}  # fmt: skip
    assert "segment_s" not in timings and timings["grabcut_s"] > 0 and timings["refine_s"] > 0
    assert info["classes"][1] == "blob" and info["width"] == 64
    # GrabCut's mask is the "segmenter" panel: the square, as class 1
    assert 0.1 < info["segmenter_class_fractions"]["blob"] < 0.18  # 24x24 of 64x64 = 0.14
    assert "refined.png" in status["files"] and "segmenter_labels.png" in status["files"]


def test_bad_box_requests_get_one_line_errors(server):
    image = _png(_square())
    mask = _png(np.zeros((64, 64), np.uint8))
    cases = [
        ({"box": _box(x=60)}, None, "outside the 64x64 image"),
        ({"box": _box(w=-3)}, None, "box size -3x36 is not positive"),
        ({"box": '{"x": NaN, "y": 0, "w": 4, "h": 4, "label": 1}'}, None,
         "box x must be an integer, got NaN"),
        ({"box": _box(label=0)}, None, "box label 0 is the background"),
        ({"box": _box(label=9)}, None, "box label 9 is not a class of the refiner"),
        ({"box": _box()}, ("mask.png", mask), "send a box or a mask to refine, not both"),
        ({"box": _box(), "refiner": ""}, None, "choose a refiner run to refine the mask"),
    ]  # fmt: skip
    for fields, upload, message in cases:
        files = {"file": ("square.png", image)}
        if upload:
            files["mask"] = upload
        code, body = post(f"{server}/api/segment", {"refiner": "tiny_refiner", **fields}, files)
        assert code == 400 and message in body["error"], (fields, body)
        assert "\n" not in body["error"]


def test_the_job_refines_the_uploaded_image_not_the_uploaded_mask(server):
    # the mask's bytes once took the image's place in the queued job (decoded there again)
    image = _square()
    mask = (np.arange(64 * 64).reshape(64, 64) % 2).astype(np.uint8)
    code, body = post(f"{server}/api/segment", {"refiner": "tiny_refiner"},
                      {"file": ("square.png", _png(image)),
                       "mask": ("mask.png", _png(mask))})  # fmt: skip
    assert code == 200, body
    status = wait(server, body["job"])
    code, data = get(server + status["files"]["input.png"])
    shown = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert shown.shape == (64, 64, 3) and np.array_equal(shown, image)






def test_page_refines_a_box_dragged_on_the_image(server, tmp_path):
    sync_api = chromium_api()
    image_path = tmp_path / "square.png"
    Image.fromarray(_square(96, 30, 66)).save(image_path)
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        # the test's polling evaluates strings, which the page's CSP forbids (the CSP itself is
        # checked by test_web_page.py)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.goto(server)
        page.wait_for_selector("#segmenter option", state="attached")
        page.set_input_files("#file", str(image_path))
        page.wait_for_function("document.querySelector('#preview').naturalWidth === 96")
        page.click("#draw-box")
        assert page.is_disabled("#segmenter") and page.is_visible("#box-note")
        labels = page.locator("#box-label option").all_inner_texts()
        assert labels == ["blob", "star", "worm", "ring"]  # the refiner's, not background
        canvas = page.locator("#box-canvas")
        page.wait_for_function("document.querySelector('#box-canvas').width > 0")
        box = canvas.bounding_box()
        # from image pixel 21 to 75 of 96 on both axes: around the square (30 to 66)
        page.mouse.move(box["x"] + box["width"] * 0.22, box["y"] + box["height"] * 0.22)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.78, box["y"] + box["height"] * 0.78,
                        steps=5)  # fmt: skip
        page.mouse.up()
        assert "Box " in page.inner_text("#box-status")
        page.select_option("#box-label", "1")
        page.click("#run-segment")
        page.wait_for_function("document.querySelector('#result-segmenter figcaption')"
                               ".textContent === 'From your box'", timeout=60_000)  # fmt: skip
        assert "GrabCut" in page.inner_text("#timings")
        page.wait_for_function("document.querySelector('#result-refined img').naturalWidth > 0",
                               timeout=10_000)  # fmt: skip
        sent = page.evaluate("state.box")
        assert 19 <= sent["x"] <= 23 and 51 <= sent["w"] <= 56, sent
        page.click("#clear-box")
        assert not page.is_disabled("#segmenter") and page.is_hidden("#box-note")
        assert page.is_hidden("#box-canvas")
        browser.close()
    assert not problems, problems
