"""Boxes plus a tenth of the true masks (issue 30's stretch): a refiner trained on GrabCut's
errors where the truth is known cleans the GrabCut pseudo-masks of the rest, and a U-Net
trained on them is scored against one trained on the same tenth plus plain GrabCut.

    S=../shared; D=$S/data/weizmann_horse_voc; W=runs/weak10
    segrefine pseudo-masks --data $D --classes horse --simulate-from-masks --out $W/wz_grabcut
    python benchmarks/any_model.py grabcut --data $D --out runs/any/grabcut   # no void ring
    python benchmarks/weak_tenth.py split --pseudo $W/wz_grabcut --data $D --out $W
    segrefine train-refiner --data $W/labelled --coarse runs/any/grabcut --native \\
        --iterations 3000 --out $W/refiner --device cpu --threads 1
    segrefine refine --refiner $W/refiner --images $W/wz_grabcut --split train \\
        --masks runs/any/grabcut --out $W/refined --threads 1
    python benchmarks/weak_tenth.py mix --out $W
    for r in control mixed; do segrefine train-segmenter --data $W/$r --classes horse \\
        --model unet --epochs 60 --out $W/unet_$r --device cpu --threads 1; done
    python benchmarks/weak_tenth.py score --data $D --out $W --write docs/results/weak_tenth.json

``split`` picks the tenth (seeded) and writes two roots in the pseudo root's folder layout:
``labelled`` (the tenth with its true masks: what the refiner trains on) and ``control`` (the
tenth's true masks, GrabCut's pseudo-masks for the rest). ``mix`` writes ``mixed`` (the tenth's
true masks, the refined GrabCut masks for the rest). Images are linked, not copied.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
from weak_common import val_scores

from segrefine.data.datasets import load_split
from segrefine.data.io import read_mask, write_label_png
from segrefine.weak import pseudo_mask_quality


def _root(out: Path, pseudo: Path, ids: list[str], masks: dict[str, np.ndarray]) -> None:
    """A folder-layout root: ``ids``' images linked from ``pseudo``, ``masks`` as class ids,
    the pseudo root's real val split linked as it is."""
    if out.exists():
        shutil.rmtree(out)
    for sub in ("images/train", "masks/train"):
        (out / sub).mkdir(parents=True)
    shutil.copy(pseudo / "classes.txt", out / "classes.txt")
    for split in ("images/val", "masks/val"):
        os.symlink((pseudo / split).resolve(), out / split)
    for i in ids:
        image = next((pseudo / "images" / "train").glob(f"{i}.*"))
        os.symlink(image.resolve(), out / "images" / "train" / image.name)
        write_label_png(out / "masks" / "train" / f"{i}.png", masks[i])  # as pseudo-masks does


def split(args) -> None:
    train = load_split(args.data, "train", ["horse"], False, size=None)
    ids = sorted(it.id for it in train.items)
    rng = np.random.default_rng(args.seed)
    tenth = sorted(rng.choice(ids, round(args.share * len(ids)), replace=False).tolist())
    truth = {it.id: it.mask for it in train.items}
    gc = {i: read_mask(args.pseudo / "masks" / "train" / f"{i}.png") for i in ids}
    _root(args.out / "labelled", args.pseudo, tenth, truth)
    control = {i: truth[i] if i in tenth else gc[i] for i in ids}
    _root(args.out / "control", args.pseudo, ids, control)
    (args.out / "split.json").write_text(json.dumps(
        {"pseudo": str(args.pseudo), "data": str(args.data), "seed": args.seed,
         "labelled": tenth, "rest": [i for i in ids if i not in tenth]}, indent=1) + "\n")
    print(f"{len(tenth)} of {len(ids)} training images keep their true masks")


def mix(args) -> None:
    s = json.loads((args.out / "split.json").read_text())
    pseudo, data = Path(s["pseudo"]), Path(s["data"])
    train = load_split(data, "train", ["horse"], False, size=None)
    truth = {it.id: it.mask for it in train.items}
    refined = {i: read_mask(args.out / "refined" / f"{i}.png") for i in s["rest"]}
    gc = {i: read_mask(pseudo / "masks" / "train" / f"{i}.png") for i in s["rest"]}
    ids = s["labelled"] + s["rest"]
    _root(args.out / "mixed", pseudo, ids, {**{i: truth[i] for i in s["labelled"]}, **refined})
    rest = [truth[i] for i in s["rest"]]
    # GrabCut as the refiner saw it (no void ring) beside the pseudo root's (void ring left out)
    plain = [(read_mask(args.coarse / f"{i}.png") > 0).astype(np.uint8) for i in s["rest"]]
    quality = {"grabcut": pseudo_mask_quality([gc[i] for i in s["rest"]], rest, train.class_names),
               "grabcut_no_void_ring": pseudo_mask_quality(plain, rest, train.class_names),
               "refined": pseudo_mask_quality([refined[i] for i in s["rest"]], rest,
                                              train.class_names)}  # fmt: skip
    (args.out / "rest_quality.json").write_text(json.dumps(quality, indent=1) + "\n")
    print(json.dumps(quality))


def score(args) -> None:
    s = json.loads((args.out / "split.json").read_text())
    full = val_scores(args.full, args.data)
    result = {"protocol": "Weizmann val, 128-px protocol, kept weights",
              "labelled": len(s["labelled"]), "rest": len(s["rest"]), "seed": s["seed"],
              "rest_pseudo_masks": json.loads((args.out / "rest_quality.json").read_text()),
              "full": full}  # fmt: skip
    for name in ("control", "mixed"):
        row = val_scores(args.out / f"unet_{name}", args.data)
        row["share_of_full"] = round(100 * row["mean_image_iou"] / full["mean_image_iou"], 1)
        result[name] = row
    if args.write:
        args.write.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("split")
    a.add_argument("--pseudo", type=Path, required=True, help="the GrabCut pseudo root")
    a.add_argument("--data", type=Path, required=True)
    a.add_argument("--share", type=float, default=0.1)
    a.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("mix")
    b.add_argument("--coarse", type=Path, default=Path("runs/any/grabcut"),
                   help="the two-valued GrabCut masks the refiner refined")
    c = sub.add_parser("score")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("--full", type=Path, default=Path("../shared/runs/weizmann_unet"))
    c.add_argument("--write", type=Path)
    for q in (a, b, c):
        q.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    {"split": split, "mix": mix, "score": score}[args.command](args)


if __name__ == "__main__":
    main()
