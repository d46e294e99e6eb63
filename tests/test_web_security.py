"""The web server trusts no other site: Host allow-list, same origin for anything that starts
work, bounded bodies, queue and scribbles, unguessable job ids, protective headers."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from web_helpers import raw_request, running

from segrefine.errors import InputError
from segrefine.web import create_app
from segrefine.web.jobs import JobQueue, QueueFull
from segrefine.web.pipeline import rasterize_scribbles
from segrefine.web.security import CSP, default_hosts


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("noruns")
    with running(create_app(runs, max_upload_mb=0.05)) as url:
        yield url


def _post(base, path, fields, headers=None):
    boundary = "b0undary"
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
                   for k, v in fields.items()) + f"--{boundary}--\r\n"  # fmt: skip
    port = base.rsplit(":", 1)[1]
    h = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        **(headers or {}),
    }
    return raw_request(base, "POST", path, h, body.encode())


def test_only_the_servers_own_names_are_answered(server):
    port = server.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert raw_request(server, "GET", "/api/runs", {"Host": host})[0] == 200
    code, _, body = raw_request(server, "GET", "/api/runs", {"Host": "evil.example"})
    assert code == 400 and "is not served here" in json.loads(body)["error"]
    assert default_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}
    assert "my-box.lan" in default_hosts("my-box.lan")


def test_another_sites_page_cannot_start_work(server):
    fields = {"segmenter": "x", "example": "0"}
    code, _, body = _post(server, "/api/segment", fields, {"Origin": "http://evil.example"})
    assert code == 403 and "other sites" in json.loads(body)["error"]
    code, _, _ = _post(server, "/api/segment", fields, {"Sec-Fetch-Site": "cross-site"})
    assert code == 403
    port = server.rsplit(":", 1)[1]
    code, _, body = _post(server, "/api/segment", fields, {"Origin": f"http://127.0.0.1:{port}"})
    assert code == 400 and "no segmenter run" in json.loads(body)["error"]  # got through


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(server):
    code, _, body = _post(server, "/api/cluster", {"example": "0", "scribbles": "x" * 60_000})
    assert code == 413 and "--max-upload-mb" in json.loads(body)["error"]


def test_responses_carry_protective_headers(server):
    port = server.rsplit(":", 1)[1]
    code, headers, _ = raw_request(server, "GET", "/", {"Host": f"127.0.0.1:{port}"})
    assert code == 200 and headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"] == CSP and "script-src 'self'" in CSP
    assert raw_request(server, "GET", "/static/favicon.svg", {"Host": f"127.0.0.1:{port}"})[0] \
        == 200  # fmt: skip


def test_every_script_the_page_loads_is_served(server):
    import re

    port = server.rsplit(":", 1)[1]
    host = {"Host": f"127.0.0.1:{port}"}
    _, _, page = raw_request(server, "GET", "/", host)
    scripts = re.findall(r'<script src="([^"]+)"', page.decode())
    assert len(scripts) >= 2  # the page's code is split in parts, each must come
    for src in scripts:
        code, headers, body = raw_request(server, "GET", src, host)
        assert code == 200 and "javascript" in headers["content-type"] and len(body) > 1000, src


def test_deeply_nested_scribbles_are_a_400_not_a_500(server):
    code, _, body = _post(server, "/api/cluster", {"example": "0", "scribbles": "[" * 20_000})
    assert code == 400 and "not valid JSON" in json.loads(body)["error"]


@pytest.mark.parametrize("stroke, message", [
    ({"label": 1, "width": 500, "points": [[1, 1]]}, "width"),
    ({"label": 1, "width": float("nan"), "points": [[1, 1]]}, "width"),
    ({"label": 1, "points": [[1e15, 3]]}, "far outside"),
    ({"label": 1, "points": [[float("inf"), 3]]}, "far outside"),
    ({"label": 1, "points": [[0, 0], [19, 0]] * 1000}, "longer than"),
])  # fmt: skip
def test_scribbles_are_bounded(stroke, message):
    with pytest.raises(InputError, match=message):
        rasterize_scribbles([stroke], (20, 20))
    with pytest.raises(InputError, match="at most 256"):
        rasterize_scribbles([{"label": 1, "points": [[1, 1]]}] * 300, (20, 20))


def test_a_wide_stroke_is_drawn_as_before_but_only_where_it_is():
    from scipy import ndimage
    from skimage.draw import line

    from segrefine.web.scribbles import _disk

    stroke = {"label": 2, "width": 20, "points": [[5, 8], [120, 40], [60, 90]]}
    mask = np.zeros((100, 150), bool)  # the whole-image dilation it replaces
    for (x0, y0), (x1, y1) in ((stroke["points"][0], stroke["points"][1]),
                               (stroke["points"][1], stroke["points"][2])):  # fmt: skip
        mask[line(y0, x0, y1, x1)] = True
    want = ndimage.binary_dilation(mask, _disk(10.0))
    assert np.array_equal(rasterize_scribbles([stroke], (100, 150)) == 2, want)
    t0 = time.perf_counter()
    out = rasterize_scribbles([{"label": 2, "width": 64, "points": [[10, 10], [200, 10]]}],
                              (4000, 4000))  # fmt: skip
    assert time.perf_counter() - t0 < 2.0  # the thickening stays inside the stroke's box
    assert (out[:40, 10:200] == 2).all() and (out[100:] == 255).all()


def test_the_queue_is_bounded_never_drops_pending_jobs_and_ids_are_unguessable():
    queue = JobQueue(keep=2, max_pending=3)
    gate = threading.Event()

    def slow(progress):
        gate.wait(10)

    jobs = [queue.submit("t", str(i), slow) for i in range(3)]
    with pytest.raises(QueueFull, match="busy"):
        queue.submit("t", "x", slow)
    assert all(queue.get(j.id) is not None for j in jobs)  # over keep=2, none dropped
    assert len({j.id for j in jobs}) == 3 and all(len(j.id) >= 16 for j in jobs)
    gate.set()
    deadline = time.time() + 10
    while any(j.state != "done" for j in jobs) and time.time() < deadline:
        time.sleep(0.01)
    queue.submit("t", "y", lambda progress: None)  # finished jobs make room again
    queue.shutdown()
    assert np.sum([queue.get(j.id) is not None for j in jobs]) <= 2


def test_a_link_out_of_a_run_is_neither_listed_nor_served(tmp_path, trained_run):
    import shutil
    import urllib.parse

    from PIL import Image

    outside = tmp_path / "private"
    outside.mkdir()
    Image.new("RGB", (8, 8), "red").save(outside / "secret.jpg")
    runs = tmp_path / "runs"
    run = shutil.copytree(trained_run, runs / "shared")
    (run / "examples" / "zz_link.jpg").symlink_to(outside / "secret.jpg")
    elsewhere = shutil.copytree(trained_run, runs / "elsewhere")  # its whole examples/ a link
    shutil.rmtree(elsewhere / "examples")
    (elsewhere / "examples").symlink_to(outside, target_is_directory=True)
    with running(create_app(runs)) as url:
        port = url.rsplit(":", 1)[1]
        host = {"Host": f"127.0.0.1:{port}"}
        listed = [ex["id"] for ex in json.loads(raw_request(url, "GET", "/api/examples", host)[2])]
        assert any(i.startswith("run:shared:val_") for i in listed)  # its own are still there
        assert not [i for i in listed if "zz_link" in i or i.startswith("run:elsewhere:")]
        for forged in ("run:shared:zz_link.jpg", "run:elsewhere:secret.jpg"):
            path = f"/api/example?id={urllib.parse.quote(forged)}"
            code, headers, body = raw_request(url, "GET", path, host)
            assert code == 404 and "no example" in json.loads(body)["error"]
            code, _, body = _post(url, "/api/segment", {"segmenter": "shared", "example": forged})
            assert code == 400 and "no example" in json.loads(body)["error"]


def test_starlettes_own_refusals_are_json_too(server):
    port = server.rsplit(":", 1)[1]
    host = {"Host": f"127.0.0.1:{port}"}
    malformed = {**host, "Content-Type": "multipart/form-data; boundary=b0undary"}
    for method, path, headers, body, status in (
        ("POST", "/api/segment", malformed, b"--not-the-boundary\r\n\r\n", 400),
        ("POST", "/api/cluster", {**host, "Content-Type": "multipart/form-data"}, b"x", 400),
        ("GET", "/api/nothing-here", host, b"", 404),
        ("PUT", "/api/segment", host, b"", 405),
    ):  # fmt: skip
        code, got, data = raw_request(server, method, path, headers, body)
        assert code == status and got["content-type"] == "application/json", (path, data)
        message = json.loads(data)["error"]
        assert message and "\n" not in message


@pytest.mark.parametrize("points", ["[]", "[[1, 2, 3]]", "[[1, 2], [3]]", '"x"'])
def test_a_bad_scribble_stroke_is_a_400_not_a_failed_job(server, points):
    scribbles = f'[{{"label": 1, "width": 3, "points": {points}}}]'
    code, _, body = _post(server, "/api/cluster", {"example": "0", "scribbles": scribbles})
    assert code == 400 and "scribble stroke 0" in json.loads(body)["error"], body


def test_a_refused_upload_leaves_no_copy_of_itself_behind(tmp_path):
    """The body is held once while a request is answered, and let go with the answer: not
    kept by the refusal's traceback until the garbage collector runs (it is off here)."""
    import gc
    import tracemalloc

    size = 16_000_000
    junk = bytes(range(256)) * (size // 256)  # no image format starts like this
    body = (b'--b0undary\r\nContent-Disposition: form-data; name="segmenter"\r\n\r\nx\r\n'
            b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + junk + b"\r\n--b0undary--\r\n")  # fmt: skip
    with running(create_app(tmp_path)) as url:
        port = url.rsplit(":", 1)[1]
        headers = {"Host": f"127.0.0.1:{port}",
                   "Content-Type": "multipart/form-data; boundary=b0undary"}  # fmt: skip
        raw_request(url, "POST", "/api/segment", headers, body)  # warm up
        gc.collect()
        gc.disable()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(3):
                code, _, answer = raw_request(url, "POST", "/api/segment", headers, body)
                assert code == 400 and "is not an image" in json.loads(answer)["error"]
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            gc.enable()
    assert current - base < 0.25 * size, f"{(current - base) / 1e6:.1f} MB kept"
    # one copy (the buffer grows by an eighth as it fills) and the parser's 1 MB pieces;
    # joined, replayed whole and read again it was two copies at once, and more
    assert peak - base < 1.6 * size, f"{(peak - base) / 1e6:.1f} MB at once"


def _png_with_chunk(size: tuple[int, int], kind: bytes = b"", data: bytes = b"") -> bytes:
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", size).save(buf, format="PNG")
    png = buf.getvalue()
    if not kind:
        return png
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return png[:33] + chunk + png[33:]  # after the header


@pytest.mark.parametrize("make, says", [
    (lambda: _png_with_chunk((1, 1000)), "image is 1x1000: at most 10:1"),
    (lambda: _png_with_chunk((8, 8), b"zTXt", b"c\0\0" + __import__("zlib").compress(
        b"\0" * 5_000_000)), "decompression bomb"),
])  # fmt: skip
def test_an_upload_the_models_cannot_bound_is_a_400_before_any_job(make, says):
    """A 1 x 1000 PNG (299 bytes) was a 128 x 128000 working image in the job (6 GB); a text
    chunk that inflates past Pillow's limit was 'not an image'."""
    from web_helpers import post

    with running(create_app(None)) as url:
        code, body = post(f"{url}/api/segment", {"segmenter": "zoo:weizmann-horse"},
                          {"file": ("upload.png", make())})  # fmt: skip
    assert code == 400 and says in body["error"] and "\n" not in body["error"], body
