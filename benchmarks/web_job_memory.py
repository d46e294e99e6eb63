"""The web server's peak memory for one large job: a phone photo (4032 x 3024 = 12.2 MP by
default) segmented and refined, or its own mask refined.

Starts `segrefine serve` in a subprocess (the zoo's entry by default, one thread), reads its
resident memory when idle, sends one photo -- a Weizmann horse upscaled to ``--size`` and saved
as a JPEG, as a phone would -- waits for the job and reads the server's peak resident memory
(VmHWM) from /proc. With ``--mask`` the horse's own mask, upscaled and saved as 0/255, is
refined instead of the segmenter's output:

    OMP_NUM_THREADS=1 python benchmarks/web_job_memory.py \\
        --data ../shared/data/weizmann_horse_voc --size 4032x3024
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from server_memory import _free_port, _multipart, _peak_mb  # noqa: E402


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="a VOC-layout folder (Weizmann)")
    p.add_argument("--image", default="horse018", help="the image's id")
    p.add_argument("--size", default="4032x3024", help="W x H of the photo sent")
    p.add_argument("--model", default="zoo:weizmann-horse", help="segmenter and refiner run")
    p.add_argument("--runs", type=Path, default=None, help="serve --runs (default: the zoo)")
    p.add_argument("--mask", action="store_true", help="refine the image's own mask instead")
    p.add_argument("--max-megapixels", type=float, default=None,
                   help="the server's limit (default: serve's)")  # fmt: skip
    args = p.parse_args()
    w, h = map(int, args.size.lower().split("x"))
    photo = Image.open(args.data / "JPEGImages" / f"{args.image}.jpg").convert("RGB")
    files = {"file": ("photo.jpg", _encoded(photo.resize((w, h), Image.BICUBIC), "JPEG",
                                            quality=92))}  # fmt: skip
    fields = {"segmenter": args.model, "refiner": args.model}
    if args.mask:
        truth = np.asarray(Image.open(args.data / "SegmentationClass" / f"{args.image}.png"))
        binary = Image.fromarray(np.where((truth > 0) & (truth < 255), 255, 0).astype(np.uint8))
        files["mask"] = ("mask.png", _encoded(binary.resize((w, h), Image.NEAREST), "PNG"))
        fields["segmenter"] = ""
    limit = [] if args.max_megapixels is None else ["--max-megapixels", str(args.max_megapixels)]
    port = _free_port()
    with tempfile.TemporaryDirectory() as empty:
        runs = str(args.runs or empty)  # an empty folder: the zoo alone
        server = subprocess.Popen([sys.executable, "-m", "segrefine.cli", "serve", "--runs", runs,
                                   "--port", str(port), "--device", "cpu", *limit],
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"{base}/api/runs", timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.5)
            print(f"idle: {_rss_mb(server.pid):.0f} MB resident")
            body, ctype = _multipart(fields, files)
            req = urllib.request.Request(f"{base}/api/segment", data=body, method="POST",
                                         headers={"Content-Type": ctype})  # fmt: skip
            t0 = time.perf_counter()
            try:
                job = json.loads(urllib.request.urlopen(req, timeout=300).read())["job"]
            except urllib.error.HTTPError as err:
                print(f"refused: {err.code} {err.read()[:200]!r}")
                return
            while True:
                status = json.loads(urllib.request.urlopen(f"{base}/api/jobs/{job}").read())
                if status["state"] in ("done", "error"):
                    break
                time.sleep(0.5)
            took = time.perf_counter() - t0
            print(f"one {w}x{h} job ({w * h / 1e6:.1f} MP, {'mask' if args.mask else 'segmenter'}"
                  f"): {status['state']} in {took:.1f} s, {status.get('timings')}")
            if status["state"] == "error":
                print(status["error"])
            note = status.get("info", {}).get("mask_note")
            if note:
                print(f"mask note: {note}")
            print(f"server peak resident memory: {_peak_mb(server.pid):.0f} MB "
                  f"(now {_rss_mb(server.pid):.0f} MB)")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
