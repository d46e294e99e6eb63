"""Weak supervision on the synthetic scenes (four object classes, each present or absent per
image): pseudo-masks from boxes, tags and scribbles, and the segmenters they train, beside the
fully supervised one -- all with the demo's U-Net recipe on the demo's data.

Labels are simulated from the training masks (``--simulate-from-masks``): one box per
connected object, the classes present as tags (about one scene in ten holds no object: those
are the negatives), scribbles traced inside each region. Pseudo-masks are scored against the
real training masks; each segmenter is trained on one pseudo root with the same recipe as the
fully supervised one and scored on the real val masks. The trivial baselines: box-as-mask and
the inscribed ellipse (from the boxes), and for tags "every pixel background" and "every pixel
the image's largest tagged class" (which a tag alone cannot know: an upper bound for a
one-class guess).

    python benchmarks/weak_synthetic.py --work runs/weak_syn \\
        --out docs/results/weak_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from weak_common import pseudo_figure, root_quality, val_scores

from segrefine.data.datasets import load_split
from segrefine.data.synthetic import write_synthetic_dataset
from segrefine.demo import demo_config
from segrefine.segmenting.train import train_segmenter
from segrefine.weak import pseudo_mask_quality, write_pseudo_dataset
from segrefine.weak.tags import TagSettings

# name -> write_pseudo_dataset arguments; the ones a segmenter is trained on come first
METHODS = {
    "boxes": {"source": "boxes", "method": "grabcut"},
    # the boxes around the class maps: objects here are small and compact, so a tighter
    # threshold and no widening (swept on train: docs/benchmarks.md; Weizmann's horses take
    # the defaults, 0.3 and 0.1)
    "tags": {"source": "tags", "tag_settings": TagSettings(box_threshold=0.45, box_pad=0.0)},
    "scribbles": {"source": "scribbles"},
    "box_as_mask": {"source": "boxes", "method": "box"},
    "ellipse": {"source": "boxes", "method": "ellipse"},
}
TRAINED = ("boxes", "tags", "scribbles")


def _train(data: Path, run: Path, epochs: int) -> float | None:
    """Train the demo's U-Net on ``data`` into ``run`` unless it is there; minutes taken
    (None when it was there)."""
    if (run / "model.safetensors").is_file():
        return None
    t0 = time.perf_counter()
    train_segmenter(demo_config(data, epochs), run, device="cpu", progress=False)
    return round((time.perf_counter() - t0) / 60, 1)


def _tag_baselines(train) -> dict:
    """Pseudo-masks a tag alone could give: all background, or all the largest tagged class."""
    out = {}
    truth = [it.mask for it in train.items]
    background = [np.zeros_like(m) for m in truth]
    largest = []
    for m in truth:
        ids, counts = np.unique(m[(m != 0) & (m != 255)], return_counts=True)
        largest.append(np.full_like(m, ids[counts.argmax()] if len(ids) else 0))
    for name, masks in (("all_background", background), ("all_largest_tag", largest)):
        out[name] = pseudo_mask_quality(masks, truth, train.class_names)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for data, pseudo roots, runs")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--figure", type=Path, default=Path("docs/images/weak_synthetic.png"))
    p.add_argument("--epochs", type=int, default=25, help="the demo's U-Net recipe")
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-val", type=int, default=50)
    args = p.parse_args()
    data = write_synthetic_dataset(args.work / "data", n_train=args.n_train, n_val=args.n_val,
                                   size=128, seed=0)  # fmt: skip
    train = load_split(data, "train", None, False, size=None)
    minutes = {"full": _train(data, args.work / "unet_full", args.epochs)}
    pseudo, rows = {}, {}
    for name, kwargs in METHODS.items():
        root = args.work / name
        if not (root / "pseudo.json").is_file():
            write_pseudo_dataset(data, root, simulate=True, progress=False, **kwargs)
        pseudo[name] = root_quality(root, train)
        if name in TRAINED:
            minutes[name] = _train(root, args.work / f"unet_{name}", args.epochs)
    pseudo.update(_tag_baselines(train))
    full = val_scores(args.work / "unet_full", data)
    for name in TRAINED:
        row = val_scores(args.work / f"unet_{name}", data)
        row["share_of_full_miou"] = round(100 * row["miou"] / full["miou"], 1)
        rows[name] = row
    result = {"data": "synthetic scenes (write_synthetic_dataset, seed 0, 128 px)",
              "num_train": args.n_train, "num_val": args.n_val,
              "protocol": "val, kept weights, the demo's U-Net recipe "
                          f"({args.epochs} epochs) for every row",
              "tag_settings": {k: getattr(METHODS["tags"]["tag_settings"], k)
                               for k in ("method", "box_threshold", "box_pad")},
              "full": full, **rows, "pseudo_masks": {"train": pseudo},
              "training_minutes": minutes}  # fmt: skip
    if args.out.is_file():  # runs trained by an earlier call keep the minutes it measured
        before = json.loads(args.out.read_text()).get("training_minutes", {})
        minutes.update({k: before.get(k) for k, v in minutes.items() if v is None})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    pseudo_figure(args.figure, train, {n: args.work / n for n in METHODS})
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
