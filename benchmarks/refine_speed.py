"""Refinement time relative to the segmenter's own inference, repeated (CPU timings are noisy).

Uses the benchmark's own timing (``segrefine.benchmarking.paper._timed``: the pipeline in
batches of 16 after one warm-up batch) on a split's images at the 128-px protocol, alternating
segmenter and refiner ``--repeats`` times, and prints each ratio and the median:

    python benchmarks/refine_speed.py --data ../shared/data/weizmann_horse_voc \\
        --segmenter runs/bench_segmenter_weizmann/run --refiner runs/wz/init64 --threads 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from segrefine.benchmarking.paper import _timed
from segrefine.data.datasets import load_split
from segrefine.diffusion import Refiner
from segrefine.segmenting.segmenter import Segmenter


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--refiner", type=Path, required=True)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seg = Segmenter.load(args.segmenter, "cpu")
    ref = Refiner.load(args.refiner, "cpu")
    c = seg.spec
    data = load_split(args.data, args.split, c.classes, c.binary_per_class, seg.size)
    images = [it.image for it in data.items]
    settings = {} if args.samples is None else {"samples": args.samples}
    ratios = []
    for r in range(args.repeats):
        coarse, rates = _timed(images, 16, segmenter=seg)
        seg_rate = rates["segment_images_per_s"]
        probs = [c.probs for c in coarse]
        _, rates = _timed(images, 16, probs=probs, refiner=ref, **settings)
        ref_rate = rates["refine_images_per_s"]
        ratios.append(seg_rate / ref_rate)
        print(f"repeat {r + 1}: segmenter {seg_rate:.1f} images/s, refiner {ref_rate:.1f} "
              f"images/s, ratio {ratios[-1]:.2f}x")  # fmt: skip
    print(f"median ratio {np.median(ratios):.2f}x over {len(images)} images, "
          f"{torch.get_num_threads()} threads")  # fmt: skip


if __name__ == "__main__":
    main()
