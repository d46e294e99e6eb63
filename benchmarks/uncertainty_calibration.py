"""How much a refiner's calibration temperature is worth on images it was not fitted on.

Fits the temperature (``segrefine.diffusion.calibrate.fit_temperature``) on one half of a split and
scores the other half with it, both ways round (two folds: even and odd images), and pools the
held-out halves' pixels; beside that, the refiner uncalibrated and calibrated on the whole
split (the in-sample number ``benchmark --native`` reports for a run calibrated on the split
it scores). Every row is scored by ``benchmark --native``'s code, at each image's own size:

    python benchmarks/uncertainty_calibration.py --data ../shared/data/weizmann_horse_voc \\
        --segmenter ../shared/runs/weizmann_unet \\
        --refiner ../shared/runs/weizmann_native_refiner --out docs/results/X.json --threads 1

The refiner run is only read (its own calibration, if any, is ignored).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from segrefine.data.datasets import load_split
from segrefine.diffusion import Refiner
from segrefine.diffusion.calibrate import fit_temperature
from segrefine.metrics import score_probabilities
from segrefine.segmenting.segmenter import Segmenter


def _scores(ref, images, probs, truths, size, temperature):
    ref.temperature = temperature
    out = ref.refine_batch(images, probs, seed=0, input_size=size)
    return out, score_probabilities([r.probs for r in out], truths, [r.uncertainty for r in out])


def _rounded(d: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}


def _cpu() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    found = re.search(r"model name\s*:\s*(.+)", text)
    return found.group(1).strip() if found else "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--segmenter", type=Path, required=True)
    p.add_argument("--refiner", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    seg, ref = Segmenter.load(args.segmenter, "cpu"), Refiner.load(args.refiner, "cpu")
    val = load_split(args.data, args.split, seg.spec.classes, seg.spec.binary_per_class,
                     size=None)  # fmt: skip
    images, truths = [it.image for it in val.items], [it.mask for it in val.items]
    probs = seg.predict_batch(images)
    rows = {"segmenter": score_probabilities(probs, truths)}
    _, rows["refined, uncalibrated"] = _scores(ref, images, probs, truths, seg.size, 1.0)
    folds, held_out = [], {}
    for k in (0, 1):
        fit_on = [i for i in range(len(images)) if i % 2 == k]
        test = [i for i in range(len(images)) if i % 2 != k]
        fit = fit_temperature(ref, [images[i] for i in fit_on], [truths[i] for i in fit_on],
                              probs=[probs[i] for i in fit_on], input_size=seg.size)
        out, _ = _scores(ref, [images[i] for i in test], [probs[i] for i in test],
                         [truths[i] for i in test], seg.size, fit["temperature"])  # fmt: skip
        held_out.update(dict(zip(test, out, strict=True)))
        folds.append({"fitted_on": "even" if k == 0 else "odd", **fit})
    order = sorted(held_out)
    rows["refined, calibrated on the other half (2 folds)"] = score_probabilities(
        [held_out[i].probs for i in order], [truths[i] for i in order],
        [held_out[i].uncertainty for i in order])  # fmt: skip
    whole = fit_temperature(ref, images, truths, probs=probs, input_size=seg.size)
    _, rows["refined, calibrated on the whole split (in-sample)"] = _scores(
        ref, images, probs, truths, seg.size, whole["temperature"])
    report = {
        "data": str(args.data), "split": args.split, "segmenter": str(args.segmenter),
        "refiner": str(args.refiner), "settings": ref.settings(), "images": len(images),
        "rows": {k: _rounded(v) for k, v in rows.items()}, "folds": folds,
        "whole_split_fit": whole, "threads": torch.get_num_threads(),
        "cpu": _cpu(),
        "minutes": round((time.perf_counter() - t0) / 60, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, row in report["rows"].items():
        print(f"{name:52s} AUROC {row['error_auroc']}  ECE {row['ece']}  "
              f"top10 {row['errors_in_top10']}")  # fmt: skip


if __name__ == "__main__":
    main()
