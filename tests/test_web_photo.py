"""The web app with real phone photos (issue 29): a 12 MP photo is taken by default and its
full-size outputs are made a strip at a time; how an uploaded mask was read is told; downloads
are named by their source; the page forgets the previous image's mask and never shows an
error beside a finished progress bar."""

from __future__ import annotations

import inspect
import io
import json
import shutil
import tracemalloc
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from web_helpers import BROWSER_ARGS, CHROMIUM, chromium_api, get, post, running, wait

from segrefine.data.synthetic import generate_scene
from segrefine.data.transforms import resize_probs
from segrefine.web.fullsize import label_map_and_file, probs_in_strips
from segrefine.web.inputs import DEFAULT_MAX_MEGAPIXELS, decode_upload

PHONE = (4032, 3024)  # a 12 MP phone photo, W x H


def _encoded(array: np.ndarray, fmt: str = "PNG", size: tuple[int, int] | None = None) -> bytes:
    img = Image.fromarray(array)
    if size is not None:
        img = img.resize(size, Image.BILINEAR if array.ndim == 3 else Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_server(tmp_path_factory, trained_run, binary_refiner):
    """The app with its default limits, a 5-class segmenter and a refiner with one object
    class (a 0/255 mask is read as background/object for it)."""
    root = tmp_path_factory.mktemp("photoruns")
    shutil.copytree(trained_run, root / "tiny_unet")
    shutil.copytree(binary_refiner, root / "blob_refiner")
    from segrefine.web import create_app

    with running(create_app(root)) as url:
        yield url


# --- the full-size stages, a strip at a time --------------------------------------------------


@pytest.mark.parametrize("small, shape", [((96, 128), (3000, 4000)), ((7, 5), (61, 40)),
                                          ((20, 30), (20, 30))])  # fmt: skip
def test_strips_match_resizing_the_whole_map(small, shape):
    rng = np.random.default_rng(0)
    probs = rng.random((3, *small)).astype(np.float32)
    probs /= probs.sum(0)
    whole = resize_probs(torch.from_numpy(probs), shape).numpy()
    strips = list(probs_in_strips(probs, shape, rows=97))
    assert [r.start for r, _ in strips] == list(range(0, shape[0], 97))
    np.testing.assert_allclose(np.concatenate([s for _, s in strips], 1), whole, atol=1e-6)


def test_label_map_and_file_hold_no_full_size_float32_map():
    probs = np.zeros((2, 96, 128), np.float32)
    probs[1, 20:70, 30:90] = 1.0
    probs[0] = 1 - probs[1]
    shape = (1500, 2000)
    tracemalloc.start()
    labels, data, shares = label_map_and_file(probs, shape)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the label map (3 MB), the float16 file (12 MB) and a strip's temporaries: no float32
    # map of the image (24 MB), no int64 argmax of it (24 MB), no second copy of the file
    assert peak < 3e6 + 12e6 + 12e6, peak
    saved = np.load(io.BytesIO(data))
    assert saved.dtype == np.float16 and saved.shape == (2, *shape)
    assert np.array_equal(labels, saved.astype(np.float32).argmax(0))
    assert shares.sum() == pytest.approx(1) and shares[1] == pytest.approx((labels == 1).mean())


def test_the_segmenter_hands_the_refiner_its_maps_at_its_working_size(monkeypatch):
    import segrefine.web.pipeline as web_pipeline
    from segrefine.pipeline import Segmentation

    calls = []

    class Stub:  # what the page asks of a segmenter (and of a refiner: its classes)
        class_names, size = ("background", "blob"), 32
        spec = type("Spec", (), {"class_agnostic": False})

        def working_size(self, shape):
            return (32, round(32 * shape[1] / shape[0]))

    def spy(images, segmenter=None, refiner=None, **kwargs):
        calls.append((images[0].shape, kwargs))
        if segmenter is not None:
            h, w = images[0].shape[:2]
            p = np.zeros((2, h, w), np.float32)
            p[0, :, : w // 2], p[1, :, w // 2 :] = 1, 1
            return [Segmentation(p, p.argmax(0).astype(np.uint8))]
        probs = resize_probs(torch.from_numpy(kwargs["probs"][0]), images[0].shape[:2]).numpy()
        done = Segmentation(kwargs["probs"][0], None)
        done.refined = Segmentation(probs, probs.argmax(0).astype(np.uint8))
        done.refined.uncertainty, done.refined.nfe = np.zeros(probs.shape[1:], np.float32), 1
        return [done]

    monkeypatch.setattr(web_pipeline, "run_pipeline", spy)
    image = np.zeros((300, 400, 3), np.uint8)
    out = web_pipeline.segment_and_refine(image, Stub(), refiner=Stub())
    (seen, _), (whole, refine) = calls
    assert seen == (32, 43, 3) and whole == image.shape  # segmented small, refined whole
    assert refine["probs"][0].shape == (2, 32, 43) and refine["input_size"] == 32
    assert out.info["changed_fraction"] == 0  # the files' labels are the refiner's prior's
    assert out.info["segmenter_class_fractions"]["blob"] == pytest.approx(22 / 43, abs=0.01)


# --- a phone photo over HTTP ------------------------------------------------------------------


def test_a_12_mp_phone_photo_is_taken_by_default(photo_server):
    from segrefine.cli.serve import serve_cmd

    default = inspect.signature(serve_cmd).parameters["max_megapixels"].default
    assert default == DEFAULT_MAX_MEGAPIXELS >= PHONE[0] * PHONE[1] / 1e6
    photo = _encoded(generate_scene(3, 96)[0], "JPEG", PHONE)
    assert decode_upload(photo, "phone.jpg").shape == (PHONE[1], PHONE[0], 3)
    code, runs = get(f"{photo_server}/api/runs")
    assert json.loads(runs)["max_megapixels"] == DEFAULT_MAX_MEGAPIXELS
    code, body = post(f"{photo_server}/api/segment", {"segmenter": "tiny_unet"},
                      {"file": ("phone.jpg", photo)})  # fmt: skip
    assert code == 200, body
    status = wait(photo_server, body["job"])
    assert status["state"] == "done", status
    assert (status["info"]["width"], status["info"]["height"]) == PHONE
    code, data = get(photo_server + status["files"]["segmenter_labels.png"])
    assert code == 200 and Image.open(io.BytesIO(data)).size == PHONE


def test_the_mask_note_and_the_download_names_follow_the_mask(photo_server):
    image, truth = generate_scene(9, 40)
    binary = np.where(truth > 0, 255, 0).astype(np.uint8)  # as rembg or SAM write it
    files = {"file": ("scene.png", _encoded(image)), "mask": ("mask.png", _encoded(binary))}
    code, body = post(f"{photo_server}/api/segment", {"refiner": "blob_refiner"}, files)
    assert code == 200, body
    status = wait(photo_server, body["job"])
    assert status["state"] == "done", status
    assert status["info"]["mask_note"] == ("your mask was read as a two-valued mask: "
                                           "0 = background, 255 = object")  # fmt: skip
    url = photo_server + status["files"]["segmenter_labels.png"] + "?download=1"
    with urllib.request.urlopen(url) as r:
        assert 'filename="scene_mask_labels.png"' in r.headers["Content-Disposition"]
    url = photo_server + status["files"]["refined_labels.png"] + "?download=1"
    with urllib.request.urlopen(url) as r:
        assert 'filename="scene_refined_labels.png"' in r.headers["Content-Disposition"]
    files["mask"] = ("empty.png", _encoded(np.zeros_like(binary)))
    code, body = post(f"{photo_server}/api/segment", {"refiner": "blob_refiner"}, files)
    status = wait(photo_server, body["job"])
    assert "holds one class only" in status["info"]["mask_note"], status


# --- the page ---------------------------------------------------------------------------------


def test_page_shows_the_note_names_downloads_and_forgets_the_old_image(photo_server, tmp_path):
    sync_api = chromium_api()
    image, truth = generate_scene(9, 64)
    Image.fromarray(image).save(tmp_path / "scene.png")
    Image.fromarray(generate_scene(2, 48)[0]).save(tmp_path / "other.png")
    Image.fromarray(np.where(truth > 0, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    Image.fromarray(np.zeros((80, 80), np.uint8)).save(tmp_path / "too_big.png")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
        page.goto(photo_server)
        page.wait_for_selector("#segmenter option", state="attached")
        assert f"{DEFAULT_MAX_MEGAPIXELS:g} megapixels" in page.inner_text("#input-panel")
        page.set_input_files("#file", str(tmp_path / "scene.png"))
        page.set_input_files("#mask", str(tmp_path / "mask.png"))
        page.select_option("#refiner", "blob_refiner")
        page.click("#run-segment")
        page.wait_for_selector("#results:not([hidden])", timeout=60_000)
        assert "two-valued mask: 0 = background, 255 = object" in page.inner_text("#notice")
        links = page.locator("#downloads a").all_inner_texts()
        assert "your mask's labels (PNG)" in links and "refined labels (PNG)" in links
        assert not any("segmenter" in text for text in links), links
        assert page.is_hidden("#progress-wrap")  # no bar reading "done" once it is done

        # a mask larger than its image: the error stands alone
        page.set_input_files("#mask", str(tmp_path / "too_big.png"))
        page.click("#run-segment")
        page.wait_for_selector("#error:not([hidden])", timeout=10_000)
        assert "larger than its 64x64 image" in page.inner_text("#error")
        assert page.is_hidden("#progress-wrap") and page.inner_text("#stage") == ""

        # a new image: the old one's mask, results and error go with it
        page.set_input_files("#file", str(tmp_path / "other.png"))
        page.wait_for_function("document.querySelector('#preview').naturalWidth === 48")
        assert page.evaluate("document.querySelector('#mask').files.length") == 0
        assert page.is_hidden("#mask-note") and not page.is_disabled("#segmenter")
        assert page.is_hidden("#results") and page.is_hidden("#error")
        page.click("#run-segment")  # the segmenter's labels again, named so
        page.wait_for_selector("#results:not([hidden])", timeout=60_000)
        assert page.is_hidden("#notice")
        assert "segmenter labels (PNG)" in page.locator("#downloads a").all_inner_texts()
        browser.close()
