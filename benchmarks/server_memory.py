"""The web server's peak memory under hostile requests (the limit: 1 GB).

Starts `segrefine serve` in a subprocess (one thread) on the runs given, sends what an attacker
or a careless user would -- a decompression bomb (40000 x 40000 PNG of a few hundred kB), a
13000 x 13000 image in a small file, a 1 x 1000 PNG (a strip the models would work on at
128 x 128000), a 200 MB body, JSON nested 100k deep, scribbles at every bound, twenty uploads
of 63 MB (just under the body limit) that are not images, then a burst of large jobs
(``--side`` px square) beyond the queue -- and reads the server's peak resident memory
(VmHWM) and its current one (VmRSS) from /proc. Prints each request's status and the memory:

    python benchmarks/server_memory.py --runs EMPTY --segmenter zoo:weizmann-horse \\
        --refiner zoo:weizmann-horse --side 3490 --watch 300
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _bomb(side: int) -> bytes:
    """A flat side x side greyscale PNG: a few hundred kB that decode to side^2 bytes."""
    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "hostile0boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]  # fmt: skip
    for k, (name, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; '
                     f'filename="{name}"\r\nContent-Type: image/png\r\n\r\n'.encode()
                     + data + b"\r\n")  # fmt: skip
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _post(port: int, path: str, body: bytes, ctype: str, announced: int | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {
        "Content-Type": ctype,
        "Host": f"127.0.0.1:{port}",
        "Content-Length": str(announced if announced is not None else len(body)),
    }
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()[:120]
    except OSError as err:  # the server may close a connection it refused mid-body
        return "closed", str(err).encode()
    finally:
        conn.close()


def _peak_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory(pid: int) -> str:
    return f"now {_peak_mb(pid, 'VmRSS'):.0f} MB, peak {_peak_mb(pid):.0f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--segmenter", required=True)
    p.add_argument("--refiner", default="")
    p.add_argument("--watch", type=int, default=120, help="seconds to watch the queued jobs")
    p.add_argument("--side", type=int, default=3490, help="side of the burst's square photos "
                   "(3490: 12.2 MP, under serve's 13 MP limit)")  # fmt: skip
    p.add_argument("--large", type=int, default=20, help="refused uploads of 63 MB to send")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="the server's limit (default: serve's)")  # fmt: skip
    args = p.parse_args()
    limit = [] if args.max_megapixels is None else ["--max-megapixels", str(args.max_megapixels)]
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "segrefine.cli", "serve", "--runs",
                               str(args.runs), "--port", str(port), "--device", "cpu",
                               *limit],
                              env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        for _ in range(120):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        print(f"idle: {_memory(server.pid)}")
        seg = {"segmenter": args.segmenter, "refiner": args.refiner}
        cases = [
            ("PNG bomb 40000 x 40000", *_multipart(seg, {"file": ("bomb.png", _bomb(40000))})),
            ("13000 x 13000 in a small file",
             *_multipart(seg, {"file": ("big.png", _bomb(13000))})),
            ("1 x 1000 PNG", *_multipart(seg, {"file": ("strip.png", _png(
                np.zeros((1000, 1), np.uint8)))})),
            ("JSON nested 100k deep", *_multipart({"example": "0", "scribbles": "[" * 100_000},
                                                  {})),
            ("256 scribbles of the widest width", *_multipart({"example": "0", "scribbles":
                json.dumps([{"label": k % 6, "width": 64, "points": [[x, x] for x in
                             range(0, 128, 1)]} for k in range(256)])}, {})),
        ]  # fmt: skip
        for name, body, ctype in cases:
            path = "/api/cluster" if "scribbles" in name or "JSON" in name else "/api/segment"
            status, text = _post(port, path, body, ctype)
            print(f"{name}: {status} {text[:80]!r}; {_memory(server.pid)}")
        status, text = _post(port, "/api/segment", b"x" * (200 << 20), "multipart/form-data; "
                             "boundary=x")  # fmt: skip
        print(f"200 MB body: {status} {text[:80]!r}; {_memory(server.pid)}")
        junk = np.random.default_rng(0).integers(0, 256, 63_000_000, np.uint8).tobytes()
        body, ctype = _multipart(seg, {"file": ("photo.png", junk)})  # no image format's start
        del junk
        statuses = []
        for _ in range(args.large):
            statuses.append(_post(port, "/api/segment", body, ctype)[0])
        del body
        print(f"{args.large} uploads of 63 MB, not images: statuses {sorted(set(statuses))}; "
              f"{_memory(server.pid)}")  # fmt: skip
        from segrefine.data.synthetic import generate_scene

        photo = _png(generate_scene(5, args.side)[0])  # real boundaries to refine
        mp = args.side**2 / 1e6
        statuses = []
        for _ in range(12):  # more jobs than the queue holds
            body, ctype = _multipart(seg, {"file": ("photo.png", photo)})
            statuses.append(_post(port, "/api/segment", body, ctype)[0])
        print(f"12 jobs of {mp:.1f} MP: statuses {statuses}; {_memory(server.pid)}")
        for t in range(0, args.watch, 30):  # the queued jobs run one after another
            time.sleep(30)
            print(f"after {t + 30} s: {_memory(server.pid)}")
        print(f"peak resident memory of the server: {_peak_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
