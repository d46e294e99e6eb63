"""Rough masks before and after refinement (issue 29): a threshold, a box, a quarter-size mask.

Makes each kind of rough mask a user has for a validation image -- Otsu's threshold of the
grey image (dark or light as object, whichever agrees more with the truth), a filled box
around the true object, and the truth made at 1/4 size (nearest) and upsampled to full size
(nearest) -- refines it with the refiner at the image's own size, and draws one row per kind
and image: image | rough mask | refined (object white). Prints and stores the per-image IoU
and Boundary IoU of the rough masks and of their refinements, and their means over the split:

    OMP_NUM_THREADS=1 python benchmarks/rough_masks_figure.py \\
        --data ../shared/data/weizmann_horse_voc \\
        --refiner ../shared/runs/weizmann_native_refiner --ids horse010,horse018 \\
        --out docs/images/rough_masks.png --json docs/results/rough_masks.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.filters import threshold_otsu

from segrefine import Refiner
from segrefine.benchmarking.report import save_grid
from segrefine.data.datasets import load_split
from segrefine.data.io import VOID
from segrefine.metrics import boundary_iou, image_iou

KINDS = ("threshold", "box", "quarter size")


def rough_masks(image: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """The three rough masks (uint8, 0/1, the image's size) for one image."""
    grey = image.astype(np.float32).mean(2)
    dark = (grey < threshold_otsu(grey)).astype(np.uint8)
    # the side a user would keep, looking at it: the one that agrees more with the truth
    threshold = dark if (dark == truth).mean() >= 0.5 else 1 - dark
    ys, xs = np.nonzero(truth)
    box = np.zeros_like(truth)
    box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = 1
    h, w = truth.shape
    small = Image.fromarray(truth).resize((w // 4, h // 4), Image.NEAREST)
    quarter = np.asarray(small.resize((w, h), Image.NEAREST))
    return {"threshold": threshold, "box": box, "quarter size": quarter}


def _white(mask: np.ndarray) -> np.ndarray:
    """The object white on black: tiles and steps show best on a plain mask."""
    return np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)


def scores(labels: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"iou": round(100 * image_iou(labels, truth, 2), 2),
            "boundary_iou": round(100 * boundary_iou(labels, truth, 2), 2)}  # fmt: skip


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))  # fmt: skip
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--refiner", type=Path, required=True)
    p.add_argument("--ids", required=True, help="comma-separated image ids drawn in the figure")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ref = Refiner.load(args.refiner, "cpu")
    split = load_split(args.data, args.split, ref.spec.classes, False, size=None)
    drawn = args.ids.split(",")
    per_image, rows, names, seconds = [], [], [], 0.0
    for it in split.items:
        truth = np.where(it.mask == VOID, 0, it.mask).astype(np.uint8)
        entry = {"id": it.id}
        for kind, mask in rough_masks(it.image, truth).items():
            t0 = time.perf_counter()
            refined = ref.refine(it.image, labels=mask, seed=0).labels
            seconds += time.perf_counter() - t0
            entry[kind] = {"input": scores(mask, truth), "refined": scores(refined, truth)}
            if it.id in drawn:
                rows.append([it.image, _white(mask), _white(refined)])
                names.append(f"{it.id}: {kind}\nIoU {entry[kind]['input']['iou']:.1f} -> "
                             f"{entry[kind]['refined']['iou']:.1f}")  # fmt: skip
        per_image.append(entry)
        if it.id in drawn:
            print(json.dumps(entry))
    means = {kind: {side: {m: round(float(np.mean([e[kind][side][m] for e in per_image])), 2)
                           for m in ("iou", "boundary_iou")}
                    for side in ("input", "refined")}
             for kind in KINDS}  # fmt: skip
    print(json.dumps(means, indent=1))
    save_grid(args.out, rows, ["image", "rough mask", "refined"], names, cell_inches=1.6)
    # a photo in a matplotlib PNG is large: 128 colours keep the figure small
    Image.open(args.out).convert("RGB").quantize(128).save(args.out, optimize=True)
    report = {"data": str(args.data), "split": args.split, "refiner": str(args.refiner),
              "num_images": len(per_image), "threads": args.threads, "cpu": cpu_name(),
              "refine_seconds": round(seconds, 1), "drawn": drawn, "mean": means,
              "per_image": per_image}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(args.out, args.json)


if __name__ == "__main__":
    main()
