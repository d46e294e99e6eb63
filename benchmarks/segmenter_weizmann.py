"""Benchmark: a from-scratch U-Net with the paper's protocol on Weizmann Horse (VOC layout).

Trains on ``train``, selects the best epoch on ``val`` and reports val per-image IoU, mIoU,
Boundary IoU, boundary F, training minutes and inference speed. Writes
``docs/results/segmenter_weizmann[_<tag>].json`` and, with ``--write-docs``, the matching
section of ``docs/benchmarks.md``.

    python benchmarks/segmenter_weizmann.py --epochs 60 --write-docs
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from segrefine.data import load_split
from segrefine.evaluate import evaluate_folder
from segrefine.segmenting.predict import predict_to_folder
from segrefine.segmenting.segmenter import Segmenter, predict_probs
from segrefine.segmenting.train import TrainConfig, train_segmenter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "weizmann_horse_voc"


def inference_speed(seg: Segmenter, images: np.ndarray) -> dict:
    """Images/s at batch 16 and per-image latency at batch 1 (after a warm-up pass)."""
    predict_probs(seg.model, images[:2], seg.device, batch_size=2)
    t = time.perf_counter()
    predict_probs(seg.model, images, seg.device, batch_size=16)
    batched = len(images) / (time.perf_counter() - t)
    t = time.perf_counter()
    predict_probs(seg.model, images, seg.device, batch_size=1)
    single = (time.perf_counter() - t) / len(images)
    return {"images_per_s_batch16": round(batched, 1), "seconds_per_image_batch1": round(single, 4)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--model", default="unet")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench_segmenter_weizmann")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--tag", default="", help="suffix for the results file, e.g. 'gpu'")
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found: {args.data}")

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.out.exists():
        shutil.rmtree(args.out)
    cfg = TrainConfig(data=str(args.data), classes=["horse"], size=128, model=args.model,
                      width=args.width, depth=4, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, seed=0)
    t0 = time.perf_counter()
    best = train_segmenter(cfg, args.out / "run", device=args.device)
    train_minutes = (time.perf_counter() - t0) / 60

    seg = Segmenter.load(args.out / "run", device=args.device)
    preds = args.out / "pred_val"
    predict_to_folder(seg, args.data, preds, split="val", protocol=True, progress=False)
    scores = evaluate_folder(preds, args.data, "val", classes=["horse"])
    val = load_split(args.data, "val", classes=["horse"], size=128)
    speed = inference_speed(seg, np.stack([it.image for it in val.items]))

    device = seg.device.type
    result = {
        "command": "python benchmarks/segmenter_weizmann.py " + " ".join(argv or sys.argv[1:]),
        "config": {k: v for k, v in vars(cfg).items() if k != "data"},
        "best_epoch": best["epoch"],
        "val": {k: scores[k] for k in ("mean_image_iou", "miou", "boundary_iou", "boundary_f",
                                       "num_images")},
        "train_minutes": round(train_minutes, 2),
        "train_images_per_s": round(np.mean([r["train_images_per_s"] for r in _log(args.out)]), 1),
        "inference": speed,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    name = "segmenter_weizmann" + (f"_{args.tag}" if args.tag else "")
    out_json = REPO / "docs" / "results" / f"{name}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.write_docs:
        _write_docs(name, result)
    return result


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]


def _write_docs(name: str, r: dict) -> None:
    """Replace this result's section of docs/benchmarks.md (between its markers)."""
    v, inf = r["val"], r["inference"]
    body = f"""<!-- {name}:start -->
Command: `{r["command"]}` ({r["device"]}, {r["threads"]} threads, torch {r["torch"]})

| split | per-image IoU | mIoU | Boundary IoU | boundary F | train minutes | train img/s | inference img/s (batch 16) | s/image (batch 1) |
|---|---|---|---|---|---|---|---|---|
| val ({v["num_images"]}) | {v["mean_image_iou"]:.1f} | {v["miou"]:.1f} | {v["boundary_iou"]:.1f} | {v["boundary_f"]:.1f} | {r["train_minutes"]:.1f} | {r["train_images_per_s"]:.1f} | {inf["images_per_s_batch16"]:.1f} | {inf["seconds_per_image_batch1"]:.4f} |

Best epoch {r["best_epoch"]} of {r["config"]["epochs"]}; raw numbers in `docs/results/{name}.json`.
<!-- {name}:end -->"""  # noqa: E501
    path = REPO / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"<!-- {name}:start -->.*?<!-- {name}:end -->", re.S)
    text = pattern.sub(body, text) if pattern.search(text) else text + f"\n{body}\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
