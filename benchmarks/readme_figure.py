"""The README's opening figure: image | segmenter | refined | uncertainty, at full size.

Runs the pipeline every command takes (``segment_and_refine``) on a few validation images and
draws the overlays; each row adds a full-resolution crop of the spot the refinement changed
most. Validation images only (the runs never trained on them); the README's rows are the
images where the native refiner raised Boundary IoU most, the median and the least:

    python benchmarks/readme_figure.py --data ../shared/data/weizmann_horse_voc \\
        --segmenter ../shared/runs/weizmann_unet --refiner runs/wz_native2 \\
        --ids horse101,horse127,horse270 --out docs/images/refinement.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from segrefine import Refiner, Segmenter, segment_and_refine
from segrefine.benchmarking.report import densest_window, overlay, save_grid
from segrefine.data.datasets import load_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--refiner", type=Path, required=True)
    p.add_argument("--ids", required=True, help="comma-separated image ids of the split")
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    seg, ref = Segmenter.load(args.segmenter, "cpu"), Refiner.load(args.refiner, "cpu")
    split = load_split(args.data, args.split, seg.spec.classes, seg.spec.binary_per_class, None)
    items = {it.id: it for it in split.items}
    chosen = [items[i] for i in args.ids.split(",")]
    results = segment_and_refine([it.image for it in chosen], seg, ref, seed=0)
    rows, names = [], []
    for it, r in zip(chosen, results, strict=True):
        win = densest_window(r.labels != r.refined.labels, args.crop)
        before, after = overlay(it.image, r.labels), overlay(it.image, r.refined.labels)
        unc = (np.clip(r.refined.uncertainty, 0, 1) * 255).astype(np.uint8)
        rows.append([it.image, before, after, unc, before[win], after[win]])
        h, w = it.image.shape[:2]
        names.append(f"{it.id}\n{w} x {h}")
    save_grid(args.out, rows, ["image", "segmenter", "refined", "uncertainty",
                               "segmenter (zoom)", "refined (zoom)"], names)  # fmt: skip
    print(args.out)


if __name__ == "__main__":
    main()
