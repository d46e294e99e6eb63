"""Weak supervision on Weizmann Horse: pseudo-masks from boxes, and the segmenter they train,
beside the fully supervised one.

Pseudo-masks are made for the training split from boxes simulated from its masks (GrabCut, and
the trivial baselines box-as-mask and inscribed ellipse) and scored against the real masks;
the segmenter trained on the GrabCut pseudo-masks and the fully supervised one (same command,
real masks) are read from their runs (kept weights, scored on val at the 128-px protocol):

    python benchmarks/weak_weizmann.py --data ../shared/data/weizmann_horse_voc \\
        --work runs/weak --full ../shared/runs/weizmann_unet --boxes-run runs/weak/unet_boxes \\
        --run scribbles=runs/weak/unet_scribbles --run tags=runs/weak/unet_tags_gc \\
        --pseudo scribbles=runs/weak/wz_scribbles --pseudo tags=runs/weak/wz_tags_gc \\
        --out docs/results/weak_weizmann.json

The box-trained segmenter is trained with the fully supervised run's command on the pseudo
root: ``segrefine train-segmenter --data runs/weak/wz_grabcut --classes horse --model unet
--epochs 60 --out runs/weak/unet_boxes``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from weak_common import pseudo_figure, root_quality, val_scores

from segrefine.data.datasets import load_split
from segrefine.weak import pseudo_mask_quality, write_pseudo_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--work", type=Path, required=True, help="folder for the pseudo roots")
    p.add_argument("--full", type=Path, required=True, help="the fully supervised run")
    p.add_argument("--boxes-run", type=Path, help="the run trained on GrabCut pseudo-masks")
    p.add_argument("--run", action="append", default=[], metavar="ROW=RUN",
                   help="another row: a segmenter run trained on pseudo-masks (repeatable)")
    p.add_argument("--pseudo", action="append", default=[], metavar="NAME=ROOT",
                   help="another pseudo-mask root to score on train (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--figure", type=Path, default=Path("docs/images/weak_weizmann.png"))
    args = p.parse_args()
    pseudo = {}
    train = load_split(args.data, "train", ["horse"], False, size=None)
    for method in ("grabcut", "box", "ellipse"):
        root = args.work / f"wz_{method}"
        if not (root / "pseudo.json").is_file():
            write_pseudo_dataset(args.data, root, simulate=True, method=method,
                                 classes=["horse"])  # fmt: skip
        pseudo[method] = root_quality(root, train)
    for name, root in (a.split("=", 1) for a in args.pseudo):
        pseudo[name] = root_quality(Path(root), train)
    # the trivial tag baseline: every pixel the tagged class (every training image shows one)
    horse = [np.ones_like(it.mask) for it in train.items]
    pseudo["all_tagged_class"] = pseudo_mask_quality(horse, [it.mask for it in train.items],
                                                     train.class_names)  # fmt: skip
    full = val_scores(args.full, args.data)
    result = {"data": str(args.data), "protocol": "val, 128-px protocol, kept weights",
              "full": full, "pseudo_masks": {"train": pseudo}}  # fmt: skip
    if args.boxes_run:
        boxes = val_scores(args.boxes_run, args.data)
        boxes["share_of_full"] = round(100 * boxes["mean_image_iou"] / full["mean_image_iou"], 1)
        result["boxes"] = boxes
    for name, run in (a.split("=", 1) for a in args.run):
        row = val_scores(Path(run), args.data)
        row["share_of_full"] = round(100 * row["mean_image_iou"] / full["mean_image_iou"], 1)
        result[name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    roots = {m: args.work / f"wz_{m}" for m in ("grabcut", "box", "ellipse")}
    roots.update({name: Path(root) for name, root in (a.split("=", 1) for a in args.pseudo)})
    pseudo_figure(args.figure, train, roots)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
