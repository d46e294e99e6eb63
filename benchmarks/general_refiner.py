"""The general (class-agnostic) refiner on data it never saw, at each image's own size.

Writes one section of ``docs/results/general_refiner.json`` per call (the file is updated in
place), scored at native resolution (percent):

* ``weizmann``: the segmenter's probabilities (``segmenter``), refined by the general refiner
  (``refined``), the truth refined (``refined_truth``), and coarse hard masks a user might
  have -- the truth shrunk to ``--coarse`` px and upsampled (``coarse``) -- refined
  (``refined_coarse``);
* ``camvid``: object classes one at a time, each as a binary mask (the segmenter's argmax ==
  class) against the rest, before and after refinement: per-class Boundary IoU (and IoU, mBA).

    python benchmarks/general_refiner.py weizmann --data ../shared/data/weizmann_horse_voc \\
        --classes horse --segmenter ../shared/runs/weizmann_unet --refiner runs/general/run
    python benchmarks/general_refiner.py camvid --data ../shared/data/camvid \\
        --segmenter runs/cv/unet80 --refiner runs/general/run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from segrefine import Refiner, Segmenter, segment_and_refine
from segrefine.data.datasets import load_split, resize_mask
from segrefine.data.io import VOID
from segrefine.data.transforms import working_size
from segrefine.diffusion.onehot import prior_for_image
from segrefine.metrics import SegmentationScores

KEYS = ("mean_image_iou", "miou", "boundary_iou", "boundary_f", "mba")
OBJECTS = ("car", "pedestrian", "bicyclist", "signsymbol", "pole")


def _scores(labels, truths, names) -> dict:
    s = SegmentationScores(len(names), names)
    for p, t in zip(labels, truths, strict=True):
        s.update(p, t)
    summary = s.summary()
    return {k: round(float(summary[k]), 2) for k in KEYS}


def weizmann(args, seg: Segmenter, ref: Refiner) -> dict:
    split = load_split(args.data, args.split, args.classes.split(","), False, None)
    split.items = split.items[: args.limit]
    images, truths = [it.image for it in split.items], [it.mask for it in split.items]
    names = split.class_names
    clock: dict[str, float] = {}
    results = segment_and_refine(images, seg, ref, seed=0, timings=clock)
    rows = {"segmenter": _scores([r.labels for r in results], truths, names),
            "refined": _scores([r.refined.labels for r in results], truths, names)}
    clean = [np.where(t == VOID, 0, t).astype(np.uint8) for t in truths]
    rows["refined_truth"] = _scores([r.labels for r in ref.refine_batch(images, labels=clean)],
                                    truths, names)  # fmt: skip
    small = [resize_mask(t, working_size(t.shape, args.coarse)) for t in clean]
    rows["coarse"] = _scores([prior_for_image(t.shape, len(names), labels=s).argmax(0)
                              for t, s in zip(clean, small, strict=True)], truths, names)
    rows["refined_coarse"] = _scores([r.labels for r in ref.refine_batch(images, labels=small)],
                                     truths, names)  # fmt: skip
    mp = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    return {"rows": rows, "coarse_short_side": args.coarse,
            "refine_seconds_per_megapixel": round(clock["refine_s"] / mp, 3)}  # fmt: skip


def camvid(args, seg: Segmenter, ref: Refiner) -> dict:
    split = load_split(args.data, args.split, None, False, None)
    split.items = split.items[: args.limit]
    names = split.class_names
    images = [it.image for it in split.items]
    probs = [r.probs for r in segment_and_refine(images, seg, seed=0)]
    per_class = {}
    for name in OBJECTS:
        k = names.index(name)
        pick = [i for i, it in enumerate(split.items) if (it.mask == k).any()]
        binary = [np.stack([1 - probs[i][k], probs[i][k]]) for i in pick]
        truth = [np.where(split.items[i].mask == VOID, VOID, split.items[i].mask == k)
                 .astype(np.uint8) for i in pick]  # fmt: skip
        t0 = time.perf_counter()
        refined = ref.refine_batch([images[i] for i in pick], binary, seed=0)
        per_class[name] = {
            "images": len(pick), "seconds": round(time.perf_counter() - t0, 1),
            "segmenter": _scores([b.argmax(0) for b in binary], truth, ("rest", name)),
            "refined": _scores([r.labels for r in refined], truth, ("rest", name)),
        }  # fmt: skip
    gains = [c["refined"]["boundary_iou"] - c["segmenter"]["boundary_iou"]
             for c in per_class.values()]  # fmt: skip
    return {"per_class": per_class, "mean_boundary_iou_gain": round(float(np.mean(gains)), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("section", choices=["weizmann", "camvid"])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--classes", default="horse")
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--refiner", type=Path, required=True)
    p.add_argument("--coarse", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="first N images only (smoke test)")
    p.add_argument("--out", type=Path, default=Path("docs/results/general_refiner.json"))
    args = p.parse_args()
    seg, ref = Segmenter.load(args.segmenter, "cpu"), Refiner.load(args.refiner, "cpu")
    result = (weizmann if args.section == "weizmann" else camvid)(args, seg, ref)
    result.update(data=str(args.data), split=args.split, segmenter=str(args.segmenter),
                  refiner=str(args.refiner), threads=torch.get_num_threads())  # fmt: skip
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report[args.section] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
