"""The web app: its pipeline without a server and its API over HTTP (the page in Chromium is
tests/test_web_page.py; the server's defences tests/test_web_security.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image
from web_helpers import get, post, wait

from segrefine.data.synthetic import generate_scene
from segrefine.errors import InputError
from segrefine.web.jobs import JobQueue
from segrefine.web.pipeline import (
    cluster_figures,
    decode_upload,
    instances,
    rasterize_scribbles,
    segment_and_refine,
)
from segrefine.web.runs import ModelCache, scan_runs


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# --- pipeline, no server ----------------------------------------------------------------------


def test_decode_upload_reads_images_and_names_bad_files():
    image = generate_scene(1, size=32)[0]
    assert np.array_equal(decode_upload(_png(image), "a.png"), image)
    with pytest.raises(InputError, match=r"^notes\.txt: is not an image"):
        decode_upload(b"just some text\n", "notes.txt")
    with pytest.raises(InputError, match=r"^empty\.png: file is empty"):
        decode_upload(b"", "empty.png")
    with pytest.raises(InputError, match=r"^cut\.png: cannot decode image, truncated"):
        decode_upload(_png(image)[:200], "cut.png")
    with pytest.raises(InputError, match=r"^big\.png: image is 32x32 .* over the server's limit"):
        decode_upload(_png(image), "big.png", max_megapixels=0.001)
    # a header claiming 40000 x 40000 trips Pillow's own bomb guard while opening: still ours
    with pytest.raises(InputError, match=r"^bomb\.png: image is 40000x40000 = 1600\.0 MP"):
        decode_upload(_png_header(40000, 40000), "bomb.png")


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (greyscale) and holds no pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))  # fmt: skip

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_instances_count_connected_components_per_class():
    labels = np.zeros((20, 20), np.uint8)
    labels[1:4, 1:4] = 1
    labels[10:14, 10:14] = 1
    labels[5:7, 15:18] = 2
    image = np.full((20, 20, 3), 128, np.uint8)
    fig, rows = instances(image, labels, ("background", "cat", "dog", "bird"))
    assert rows == [
        {"class": "cat", "instances": 2, "pixels": 25},
        {"class": "dog", "instances": 1, "pixels": 6},
        {"class": "bird", "instances": 0, "pixels": 0},
    ]
    # the two cats differ in colour from each other and from the dimmed background
    assert fig.shape == (20, 20, 3)
    assert len({tuple(fig[2, 2]), tuple(fig[12, 12]), tuple(fig[0, 0])}) == 3


def test_rasterize_scribbles_draws_strokes_and_rejects_bad_labels():
    strokes = [
        {"label": 0, "width": 1, "points": [[2, 2], [8, 2]]},
        {"label": 3, "width": 3, "points": [[5, 10]]},
    ]
    out = rasterize_scribbles(strokes, (16, 16))
    assert out.dtype == np.uint8
    assert (out[2, 2:9] == 0).all() and out[3, 5] == 255
    assert out[10, 5] == 3 and out[9, 5] == 3 and out[10, 4] == 3  # a 3-pixel dot
    assert ((out != 255).sum()) == 7 + (out == 3).sum()
    with pytest.raises(InputError, match="stroke 0 has label 255"):
        rasterize_scribbles([{"label": 255, "points": [[0, 0]]}], (4, 4))
    with pytest.raises(InputError, match="stroke 0 is malformed"):
        rasterize_scribbles([{"points": [[0, 0]]}], (4, 4))


def test_segment_and_refine_times_each_stage_and_keeps_image_size(trained_run, trained_refiner):
    from segrefine.diffusion import Refiner
    from segrefine.segmenting.segmenter import Segmenter

    seg, ref = Segmenter.load(trained_run, "cpu"), Refiner.load(trained_refiner[0], "cpu")
    image = np.asarray(Image.fromarray(generate_scene(5, size=48)[0]).resize((60, 40)))
    stages = []
    out = segment_and_refine(image, seg, ref, steps=1, samples=2,
                             progress=lambda s, f: stages.append(s))  # fmt: skip
    assert stages == ["segmenting", "refining", "drawing"]
    assert set(out.timings) == {"segment_s", "refine_s"} and min(out.timings.values()) > 0
    assert out.info["nfe"] == 2 and (out.info["width"], out.info["height"]) == (60, 40)
    probs = np.load(io.BytesIO(out.files["refined_probs.npy"][0]))
    assert probs.shape == (len(seg.class_names), 40, 60)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=1e-2)
    labels = Image.open(io.BytesIO(out.files["refined_labels.png"][0]))
    assert labels.mode == "P" and labels.size == (60, 40)
    assert np.array_equal(np.asarray(labels), probs.astype(np.float32).argmax(0))
    layer = np.asarray(Image.open(io.BytesIO(out.files["refined_layer.png"][0])))
    assert layer.shape == (40, 60, 4)  # display size (the image is small) with an alpha
    background = seg.class_names.index("background")
    assert np.array_equal(layer[..., 3] > 0, np.asarray(labels) != background)


def test_segment_and_refine_refuses_a_refiner_of_other_classes(trained_run):
    from segrefine.segmenting.segmenter import Segmenter

    class Other:
        num_classes, class_names = 3, ("x", "y", "z")

    with pytest.raises(InputError, match="the segmenter has 5 classes .* refiner has 3"):
        segment_and_refine(generate_scene(0, 32)[0], Segmenter.load(trained_run, "cpu"), Other())


def test_cluster_figures_follow_the_scribbles():
    image = np.zeros((40, 40, 3), np.uint8)
    image[:, 20:] = (230, 40, 40)
    image[:, :20] = (30, 60, 200)
    strokes = [{"label": 0, "width": 3, "points": [[5, 5], [5, 35]]},
               {"label": 1, "width": 3, "points": [[30, 5], [30, 35]]}]  # fmt: skip
    out = cluster_figures(image, strokes, max_iter=10)
    ids = np.asarray(Image.open(io.BytesIO(out.files["cluster_labels.png"][0])))
    assert ids.shape == (40, 40) and out.info["scribble_labels"] == 2
    assert ids[20, 5] != ids[20, 30]
    assert "scribbles.png" in out.files and out.timings["cluster_s"] > 0
    legend = out.info["legend"]  # each segment's colour and share, largest first
    assert sorted(seg["id"] for seg in legend) == sorted(np.unique(ids).tolist())
    assert abs(sum(seg["fraction"] for seg in legend) - 1) < 1e-6
    shown = np.asarray(Image.open(io.BytesIO(out.files["clusters.png"][0])))
    assert all(len(seg["colour"]) == 3 for seg in legend) and shown.shape == (40, 40, 3)


def test_scan_runs_lists_runs_and_explains_folders_that_are_not(tmp_path, trained_run,
                                                                trained_refiner):
    shutil.copytree(trained_run, tmp_path / "seg")
    shutil.copytree(trained_refiner[0], tmp_path / "group" / "ref")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"hello": 1}')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    index = scan_runs(tmp_path)
    own = [n for n in index.segmenters if not n.startswith("zoo:")]
    assert own == ["seg"] and [n for n in index.refiners if not n.startswith("zoo:")] == [
        "group/ref"]  # and the zoo's after them
    assert index.refiners["group/ref"]["defaults"]["samples"] >= 1
    notes = " | ".join(index.notes)
    assert "junk: not a usable segrefine run" in notes and "broken: not a usable" in notes
    with pytest.raises(InputError, match="no segmenter run called 'nope'"):
        ModelCache(index).get("segmenter", "nope")
    assert "does not exist" in scan_runs(tmp_path / "missing").notes[0]


def test_job_queue_reports_errors_and_keeps_working():
    queue = JobQueue()

    def bad(progress):
        raise InputError("this file is wrong", "x.png")

    def crash(progress):
        raise RuntimeError("boom")

    def good(value, progress):
        progress("working", 0.5)
        return value * 2

    jobs = [queue.submit("t", "a", bad), queue.submit("t", "b", crash),
            queue.submit("t", "c", good, 21)]  # fmt: skip
    deadline = time.time() + 10
    while any(j.state in ("queued", "running") for j in jobs) and time.time() < deadline:
        time.sleep(0.01)
    assert [j.state for j in jobs] == ["error", "error", "done"]
    assert jobs[0].error == "x.png: this file is wrong"
    assert jobs[1].error == "internal error: RuntimeError: boom"
    assert jobs[2].result == 42
    queue.shutdown()


def test_job_queue_drops_old_results_over_its_memory_budget():
    from segrefine.web.pipeline import Figures

    queue = JobQueue(max_bytes=250)

    def make(n, progress):
        return Figures(files={"a.npy": (b"x" * n, "application/octet-stream")})

    jobs = [queue.submit("t", str(i), make, 100) for i in range(4)]
    deadline = time.time() + 10
    while jobs[-1].state != "done" and time.time() < deadline:
        time.sleep(0.01)
    kept = [j.id for j in jobs if queue.get(j.id) is not None]
    assert kept == [jobs[2].id, jobs[3].id]  # 2 x 100 bytes fit in 250, 3 do not
    queue.shutdown()


# --- the server over HTTP -----------------------------------------------------------------------


@pytest.mark.skipif("SEGREFINE_WEB_RUNS" in os.environ, reason="checks the fixture runs")
def test_api_segment_refine_and_download(server):
    code, runs = get(f"{server}/api/runs")
    runs = json.loads(runs)
    assert [s["name"] for s in runs["segmenters"]][:1] == ["tiny_unet"]
    assert [r["name"] for r in runs["refiners"]][:1] == ["tiny_refiner"]
    assert any("not_a_run: not a usable segrefine run" in n for n in runs["notes"])
    code, body = post(f"{server}/api/segment",
                       {"segmenter": "tiny_unet", "refiner": "tiny_refiner", "samples": "2"},
                       {"file": ("scene.png", _png(generate_scene(9, 40)[0]))})  # fmt: skip
    assert code == 200, body
    status = wait(server, body["job"])
    assert status["state"] == "done", status
    assert status["info"]["nfe"] == 2 and status["timings"]["refine_s"] > 0
    code, data = get(server + status["files"]["refined_probs.npy"] + "?download=1")
    assert code == 200 and np.load(io.BytesIO(data)).shape == (5, 40, 40)
    zoom = f"{server}/api/jobs/{body['job']}/zoom"
    code, data = get(f"{zoom}?x=20&y=5&side=32")
    strip = np.asarray(Image.open(io.BytesIO(data)))
    assert code == 200 and strip.shape == (256, 3 * 256 + 2 * 6, 3)  # image | segmenter | refined
    for bad, message in (("x=99&y=5", "outside the 40x40 image"), ("x=1&y=1&side=33", "one of"),
                         ("x=a&y=1", "integer")):  # fmt: skip
        code, data = get(f"{zoom}?{bad}")
        assert code == 400 and message in json.loads(data)["error"]
    code, body = post(f"{server}/api/segment",
                       {"segmenter": "tiny_unet", "refiner": "tiny_refiner", "example": "1",
                        "samples": "2", "flip": "1"})  # fmt: skip
    assert code == 200, body
    status = wait(server, body["job"])
    assert status["state"] == "done" and status["info"]["nfe"] == 2, status


def test_runs_carry_example_images_from_their_validation_split(server):
    code, data = get(f"{server}/api/examples")
    listed = json.loads(data)
    from_runs = [ex for ex in listed if ex["id"].startswith("run:")]
    assert code == 200 and from_runs and len(listed) == len(from_runs) + 4  # + synthetic
    assert from_runs[0]["id"].startswith("run:tiny_unet:val_")
    code, data = get(server + from_runs[0]["url"])
    image = Image.open(io.BytesIO(data))
    assert code == 200 and image.format == "JPEG" and max(image.size) <= 256
    code, body = post(f"{server}/api/segment", {"segmenter": "tiny_unet",
                                                 "example": from_runs[0]["id"]})  # fmt: skip
    assert code == 200 and wait(server, body["job"])["state"] == "done"
    for forged in ("run:tiny_unet:../config.json", "run:tiny_unet:model.safetensors",
                   "run:elsewhere:val_0000.jpg"):  # only files a run lists  # fmt: skip
        code, data = get(f"{server}/api/example?id={urllib.parse.quote(forged)}")
        assert code == 404 and "no example" in json.loads(data)["error"]
        code, body = post(f"{server}/api/segment", {"segmenter": "tiny_unet", "example": forged})
        assert code == 400 and "no example" in body["error"]


@pytest.mark.parametrize(
    "fields, files, message",
    [
        ({"segmenter": "tiny_unet"}, {"file": ("notes.txt", b"hello")},
         "notes.txt: is not an image"),
        ({"segmenter": "tiny_unet"}, {"file": ("huge.png", None)}, "over the server's limit"),
        ({"segmenter": "not_a_run", "example": "0"}, None, "no segmenter run called 'not_a_run'"),
        ({"segmenter": "tiny_unet", "example": "0", "steps": "many"}, None,
         "steps must be a number"),
        ({"segmenter": "tiny_unet"}, None, "choose an image"),
        ({"segmenter": "tiny_unet", "refiner": "tiny_refiner", "example": "0", "samples": "1",
          "flip": "1"}, None, "needs samples >= 2"),
    ],
)
def test_api_bad_input_is_one_readable_message(server, fields, files, message):
    if files and files["file"][1] is None:  # a 1.2 MP image against the 1 MP test limit
        files = {"file": ("huge.png", _png(np.zeros((1000, 1200, 3), np.uint8)))}
    code, body = post(f"{server}/api/segment", fields, files)
    assert code == 400 and message in body["error"] and "\n" not in body["error"]
    assert get(f"{server}/api/runs")[0] == 200  # and the server keeps serving


def test_a_malformed_run_is_listed_as_unusable_and_the_rest_still_served(tmp_path,
                                                                          trained_refiner):
    import json
    import shutil

    from segrefine.web.runs import scan_runs

    good = shutil.copytree(trained_refiner[0], tmp_path / "runs" / "good")
    bad = shutil.copytree(trained_refiner[0], tmp_path / "runs" / "bad")
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "inference": [1, 2]}))
    index = scan_runs(tmp_path / "runs")
    assert "good" in index.refiners and "bad" not in index.refiners and good.is_dir()
    assert any(n.startswith("bad: not a usable segrefine run") for n in index.notes)
