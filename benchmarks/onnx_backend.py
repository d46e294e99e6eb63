"""PyTorch vs onnxruntime on the same pipeline: agreement, scores and speed (issue 32).

    python benchmarks/onnx_backend.py --shared ../shared --entry weizmann-horse --threads 2 --write

For each zoo entry (or a --segmenter / --refiner pair of run folders) on its validation split
at native size: both backends segment and refine every image in one process, one after the
other (the graphs exported into the cache beforehand, not timed). Reported:

* agreement: the share of pixels whose refined (and segmenter) label is the same, the largest
  difference of a refined probability, and every score with each backend;
* speed: seconds per megapixel of the refine stage and of the whole pipeline;
* start-up: a fresh process importing segrefine and loading both runs with each backend
  (the cache warm), the wall time of a `refine` call before its first image;
* with --int8, the refiner's graphs quantised by onnxruntime's dynamic int8 quantisation.

Run it alone: two torch processes on two cores slow each other ~10x.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segrefine import Refiner, Segmenter
from segrefine.benchmarking.report import rounded_scores
from segrefine.data.datasets import load_split
from segrefine.deploy import export_onnx, use_backend
from segrefine.evaluate import score_split
from segrefine.pipeline import segment_and_refine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo import RECIPES, _cpu  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "onnx.json"
METRICS = ("mean_image_iou", "miou", "boundary_iou", "boundary_f", "mba")


def run_backend(images, val, segmenter, refiner, backend: str, graphs=None) -> dict:
    seg = Segmenter.load(segmenter, "cpu", backend)
    ref = Refiner.load(refiner, "cpu", backend if graphs is None else "torch")
    if graphs is not None:  # the refiner's graphs from this folder (the int8 ones)
        use_backend(ref, "onnxruntime", folder=graphs)
    ref.bf16 = False  # both backends in float32: the comparison is of the runtimes
    segment_and_refine(images[:1], seg, ref)  # first-call costs (allocators, kernels)
    clock: dict[str, float] = {}
    results = segment_and_refine(images, seg, ref, timings=clock)
    mp = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    scores = {
        "segmenter": _scores(val, [r.labels for r in results]),
        "refined": _scores(val, [r.refined.labels for r in results]),
    }
    return {
        "results": results, "scores": scores,
        "refine_s_per_mp": clock["refine_s"] / mp,
        "pipeline_s_per_mp": (clock["segment_s"] + clock["refine_s"]) / mp,
    }  # fmt: skip


def _scores(val, labels) -> dict:
    row = rounded_scores(score_split(val, labels).summary())
    return {m: row[m] for m in METRICS}


def agreement(a: list, b: list) -> dict:
    same = sum((x.refined.labels == y.refined.labels).sum() for x, y in zip(a, b, strict=True))
    seg_same = sum((x.labels == y.labels).sum() for x, y in zip(a, b, strict=True))
    pixels = sum(x.labels.size for x in a)
    diff = max(float(np.abs(x.refined.probs - y.refined.probs).max())
               for x, y in zip(a, b, strict=True))  # fmt: skip
    seg_diff = max(float(np.abs(x.probs - y.probs).max()) for x, y in zip(a, b, strict=True))
    return {"refined_labels_same": round(same / pixels, 6),
            "segmenter_labels_same": round(seg_same / pixels, 6),
            "max_refined_prob_diff": diff, "max_segmenter_prob_diff": seg_diff}  # fmt: skip


def quantised(refiner: str) -> Path:
    """The refiner's cached graphs through onnxruntime's dynamic int8 quantisation (weights
    int8, activations quantised per call), beside them in a temporary folder."""
    import shutil
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # exported with the exporter's constant folding: the quantiser needs the weights as
    # initialisers (the cache's graphs slice the head's weight at run time)
    src = export_onnx(Refiner.load(refiner, "cpu"), Path(tempfile.mkdtemp()) / "fp32")
    out = Path(tempfile.mkdtemp(prefix="segrefine-int8-"))
    for graph in src.glob("*.onnx"):
        quantize_dynamic(str(graph), str(out / graph.name), weight_type=QuantType.QInt8)
    shutil.copyfile(src / "onnx.json", out / "onnx.json")
    return out


def startup(segmenter: str, refiner: str, backend: str, threads: int, repeats: int = 3) -> float:
    code = ("import torch, sys; torch.set_num_threads(int(sys.argv[3])); "
            "from segrefine import Segmenter, Refiner; "
            "Segmenter.load(sys.argv[1], 'cpu', sys.argv[4]); "
            "Refiner.load(sys.argv[2], 'cpu', sys.argv[4])")  # fmt: skip
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, segmenter, refiner, str(threads), backend],
                       check=True)  # fmt: skip
        seconds.append(time.perf_counter() - t0)
    return round(float(np.median(seconds)), 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--entry", action="append", help="zoo entries (default: all real)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, help="the first N validation images only")
    parser.add_argument("--int8", action="store_true", help="also the int8 refiner graphs")
    parser.add_argument("--write", action="store_true", help=f"record into {RESULTS}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    entries = args.entry or [n for n in RECIPES if not RECIPES[n]["data"].startswith("gen")]
    out = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for name in entries:
        data = args.shared / RECIPES[name]["data"]
        spec = Segmenter.load(f"zoo:{name}", "cpu").spec  # its class selection
        val = load_split(data, "val", spec.classes, spec.binary_per_class, size=None)
        if args.limit:
            val.items = val.items[: args.limit]
        images = [it.image for it in val.items]
        run = f"zoo:{name}"
        for backend in ("onnxruntime", "torch"):  # the exports, before any clock runs
            Refiner.load(run, "cpu", backend), Segmenter.load(run, "cpu", backend)
        rows = {b: run_backend(images, val, run, run, b) for b in ("torch", "onnxruntime")}
        t, o = rows["torch"], rows["onnxruntime"]
        if args.int8:
            rows["onnxruntime_int8"] = run_backend(images, val, run, run, "onnxruntime",
                                                   quantised(run))  # fmt: skip
        record = {
            "command": f"python benchmarks/onnx_backend.py --shared ../shared --entry {name} "
                       f"--threads {args.threads}{' --int8' if args.int8 else ''} --write",
            "machine": f"{_cpu()}, {args.threads} threads", "images": len(images),
            "agreement": agreement(t["results"], o["results"]),
            "scores": {b: rows[b]["scores"] for b in rows},
            "seconds_per_megapixel": {b: {"refine": round(rows[b]["refine_s_per_mp"], 3),
                                          "pipeline": round(rows[b]["pipeline_s_per_mp"], 3)}
                                      for b in rows},
            "refine_speedup": round(t["refine_s_per_mp"] / o["refine_s_per_mp"], 2),
            "pipeline_speedup": round(t["pipeline_s_per_mp"] / o["pipeline_s_per_mp"], 2),
            "startup_s": {b: startup(run, run, b, args.threads) for b in ("torch", "onnxruntime")},
        }  # fmt: skip
        if args.int8:
            q = rows["onnxruntime_int8"]
            record["int8"] = agreement(o["results"], q["results"])
            record["int8"]["refine_speedup_over_fp32"] = round(
                o["refine_s_per_mp"] / q["refine_s_per_mp"], 2
            )
        print(json.dumps({k: v for k, v in record.items() if k != "command"}, indent=1))
        out[name] = record
    if args.write:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
