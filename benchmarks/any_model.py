"""Refining another model's masks, known only through its files (docs/results/any_model.json).

A source writes one mask per image; segrefine sees nothing else. Rows per source, on Weizmann
val at each image's own size: the source alone, refined by the U-Net-trained refiner, refined
by a refiner trained on the source's own (out-of-fold) train masks with `train-refiner
--coarse`, and DenseCRF on the source's mask.

    S=../shared
    # GrabCut from each object's box (an interactive tool: nothing is trained, so its masks of
    # the train images are honest coarse inputs)
    python benchmarks/any_model.py grabcut --data $S/data/weizmann_horse_voc --out runs/any/grabcut
    segrefine train-refiner --data $S/data/weizmann_horse_voc --classes horse --native \
        --coarse runs/any/grabcut --out runs/any/grabcut_refiner --device cpu
    python benchmarks/any_model.py score grabcut --data $S/data/weizmann_horse_voc \
        --masks runs/any/grabcut --unet-refiner $S/runs/weizmann_native_refiner \
        --coarse-refiner runs/any/grabcut_refiner

A DeepLabv3+ source is scored the same way from its prediction files: its out-of-fold
predictions on train (two fold models, each trained on the other half, predicting the half it
never saw) for --coarse, the full model's predictions on val to refine:

    segrefine train-segmenter --data $S/data/weizmann_horse_voc --classes horse \
        --model deeplabv3plus --epochs 60 --out runs/any/deeplab --device cpu
    python benchmarks/any_model.py deeplab --data $S/data/weizmann_horse_voc \
        --segmenter runs/any/deeplab --out runs/any/deeplab_masks
    segrefine train-refiner --data $S/data/weizmann_horse_voc --classes horse --native \
        --coarse runs/any/deeplab_masks --out runs/any/deeplab_refiner --device cpu
    python benchmarks/any_model.py score deeplab --data $S/data/weizmann_horse_voc \
        --masks runs/any/deeplab_masks --unet-refiner $S/runs/weizmann_native_refiner \
        --coarse-refiner runs/any/deeplab_refiner
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segrefine import Refiner
from segrefine.benchmarking.report import rounded_scores
from segrefine.data.datasets import load_split
from segrefine.data.mask_folder import MaskFolder
from segrefine.diffusion.onehot import prior_for_image
from segrefine.evaluate import score_split
from segrefine.metrics import in_percent
from segrefine.weak import boxes_from_mask, pseudo_mask_from_boxes

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "any_model.json"


def grabcut(data: Path, out: Path) -> None:
    """GrabCut in each object's bounding box (from the truth: what a user draws), train and val,
    written as 0/255 masks by id."""
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        items = load_split(data, split, ["horse"], size=None).items
        t0 = time.perf_counter()
        for item in items:
            boxes = boxes_from_mask(item.mask)
            mask = pseudo_mask_from_boxes(item.image, boxes, "grabcut", void_ring=0)
            Image.fromarray(((mask > 0) * 255).astype(np.uint8)).save(out / f"{item.id}.png")
        print(f"{split}: {len(items)} masks, {(time.perf_counter() - t0) / len(items):.2f} s each")


def deeplab(data: Path, segmenter: Path, out: Path, folds: int = 2) -> None:
    """A trained segmenter's prediction files, as a user of any framework would make them:
    ``<id>.npy`` (C x H x W float16 probabilities at the image's size) for every train image
    from the fold model that never saw it, and for every val image from the full model."""
    from segrefine import Segmenter
    from segrefine.diffusion.oof import fold_indices, train_fold_segmenters

    out.mkdir(parents=True, exist_ok=True)
    classes = Segmenter.load(segmenter, "cpu").spec.classes
    fold_runs = train_fold_segmenters(segmenter, str(data), "train", folds, out / "folds",
                                      device="cpu")  # fmt: skip
    train = load_split(data, "train", classes, size=None).items  # the folds' image order
    for k, run in enumerate(fold_runs):
        seg = Segmenter.load(run, "cpu")
        for i in fold_indices(len(train), k, folds):
            np.save(out / f"{train[i].id}.npy", seg.predict(train[i].image).astype(np.float16))
    seg = Segmenter.load(segmenter, "cpu")
    for item in load_split(data, "val", classes, size=None).items:
        np.save(out / f"{item.id}.npy", seg.predict(item.image).astype(np.float16))
    print(f"{len(list(out.glob('*.npy')))} prediction files in {out}")


def score(source: str, data: Path, masks: Path, refiners: dict[str, Path], crf: bool,
          threads: int, input_size: int | None = None) -> dict:  # fmt: skip
    import torch

    torch.set_num_threads(threads)
    val = load_split(data, "val", ["horse"], size=None)
    folder = MaskFolder(masks, val.num_classes, labels_first=True)
    coarse = [folder.read(it.id) for it in val.items]
    images = [it.image for it in val.items]
    priors = [prior_for_image(im.shape[:2], 2, c.probs, c.labels)
              for im, c in zip(images, coarse, strict=True)]  # fmt: skip
    rows = {source: _scores(val, [p.argmax(0) for p in priors])}
    for name, run in refiners.items():
        ref = Refiner.load(run, "cpu")
        t0 = time.perf_counter()
        out = [ref.refine(im, c, seed=i, input_size=input_size).labels
               for i, (im, c) in enumerate(zip(images, coarse, strict=True))]  # fmt: skip
        rows[f"{source}+{name}"] = _scores(val, out, time.perf_counter() - t0, run)
    if crf:
        from segrefine.crf import dense_crf

        labels = [dense_crf(im, p).argmax(0) for im, p in zip(images, priors, strict=True)]
        rows[f"{source}+crf"] = _scores(val, labels)
    for name, row in rows.items():
        print(f"{name:26s} " + "  ".join(f"{k} {row[k]}" for k in
                                         ("mean_image_iou", "miou", "boundary_iou",
                                          "boundary_f", "mba")))  # fmt: skip
    return rows


def _scores(val, labels, seconds: float | None = None, run: Path | None = None) -> dict:
    s = score_split(val, labels)
    row = rounded_scores(s.summary())
    row["per_image"] = [round(in_percent(x)["boundary_iou"], 2) for x in s.per_image]
    if run is not None:
        row["refiner"], row["seconds"] = str(run), round(seconds, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("grabcut")
    g.add_argument("--data", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    d = sub.add_parser("deeplab")
    d.add_argument("--data", type=Path, required=True)
    d.add_argument("--segmenter", type=Path, required=True, help="the trained DeepLabv3+ run")
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--threads", type=int, default=2)
    s = sub.add_parser("score")
    s.add_argument("source")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--masks", type=Path, required=True)
    s.add_argument("--unet-refiner", type=Path)
    s.add_argument("--coarse-refiner", type=Path)
    s.add_argument("--no-crf", action="store_true")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--input-size", type=int, help="the short side the masks count as made at "
                   "(refine --input-size; default: a full-size hard mask counts as drawn there)")
    s.add_argument("--suffix", default="", help="appended to the rows' names")
    args = parser.parse_args()
    if args.command == "grabcut":
        grabcut(args.data, args.out)
        return
    if args.command == "deeplab":
        import torch

        torch.set_num_threads(args.threads)
        deeplab(args.data, args.segmenter, args.out)
        return
    refiners = {k: v for k, v in (("unet_refiner", args.unet_refiner),
                                  ("coarse_refiner", args.coarse_refiner)) if v}  # fmt: skip
    rows = score(args.source, args.data, args.masks, refiners, not args.no_crf, args.threads,
                 args.input_size)
    rows = {f"{k}{args.suffix}": v for k, v in rows.items()}
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(rows)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
