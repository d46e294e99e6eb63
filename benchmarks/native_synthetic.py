"""A perfect low-resolution mask, upsampled, then refined at full size: what native refinement
adds when the only error is resolution.

For every image of a split, the truth is shrunk to ``--coarse`` px on its short side (nearest
neighbour: a 128-px prediction that is right everywhere it can be) and handed to the refiner
as a hard mask; the refiner upsamples it (softened, bilinear) and refines it at the image's
size. Rows, scored at full size (percent): ``upsampled`` (that upsampled mask, the refiner's
input) and ``refined``; plus seconds per megapixel. With the synthetic scenes at 2048 px
(``benchmarks/synthetic_hires.py``) the boundaries are exact at that size:

    python benchmarks/native_synthetic.py --data runs/syn/val2048 --refiner runs/syn/native \\
        --out docs/results/native_synthetic2048.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from segrefine.benchmarking.report import rounded_scores
from segrefine.data.datasets import load_split, resize_mask
from segrefine.data.io import VOID
from segrefine.data.transforms import working_size
from segrefine.diffusion import Refiner
from segrefine.diffusion.onehot import prior_for_image
from segrefine.evaluate import score_split


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--refiner", type=Path, required=True)
    p.add_argument("--coarse", type=int, default=128, help="short side of the coarse mask")
    p.add_argument("--classes", default=None, help="with a class-agnostic refiner: the "
                   "dataset's classes to keep, e.g. horse")
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ref = Refiner.load(args.refiner, "cpu")
    # the refiner's classes, picked from the dataset's (e.g. horse out of the 21 VOC classes);
    # a class-agnostic refiner takes the dataset's (or --classes)
    classes = [c for c in ref.spec.class_names if c != "background"]
    if ref.spec.class_agnostic:
        classes = args.classes.split(",") if args.classes else None
    split = load_split(args.data, args.split, classes, False, None)
    split.items = split.items[: args.limit]
    rows: dict[str, list[np.ndarray]] = {"upsampled": [], "refined": []}
    seconds, megapixels = 0.0, 0.0
    for item in split.items:
        truth = np.where(item.mask == VOID, 0, item.mask).astype(np.uint8)
        small = resize_mask(truth, working_size(truth.shape, args.coarse))
        prior = prior_for_image(truth.shape, split.num_classes, labels=small)
        rows["upsampled"].append(prior.argmax(0))
        t0 = time.perf_counter()
        out = ref.refine(item.image, labels=small, samples=args.samples)
        seconds += time.perf_counter() - t0
        megapixels += truth.size / 1e6
        rows["refined"].append(out.labels)
    report = {
        "data": str(args.data), "split": args.split, "refiner": str(args.refiner),
        "coarse_short_side": args.coarse, "num_images": len(split.items),
        "megapixels": round(megapixels, 2), "threads": torch.get_num_threads(),
        "refine_seconds_per_megapixel": round(seconds / megapixels, 3),
        "rows": {name: rounded_scores(score_split(split, labels).summary())
                 for name, labels in rows.items()},
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["rows"], indent=2), report["refine_seconds_per_megapixel"], "s/MP")


if __name__ == "__main__":
    main()
