"""A zoo entry's model card (src/segrefine/zoo/NAME/README.md) and its failure figure, written
from the manifest's scores and a `benchmarks/zoo.py score` run's per-image results; used by
`python benchmarks/zoo.py card NAME`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segrefine import Refiner, Segmenter, zoo
from segrefine.benchmarking.report import overlay, save_grid
from segrefine.data.datasets import load_split

REPO = Path(__file__).resolve().parents[1]
LABELS = {"segmenter": "U-Net alone", "refined": "U-Net + refiner", "crf": "U-Net + DenseCRF",
          "refined_truth": "the truth, refined"}  # fmt: skip

TEXT = {
    "synthetic-scenes": {
        "about": "The demo's pair: a U-Net (width 16, depth 4) and a diffusion refiner trained "
                 "on its out-of-fold errors, for segrefine's synthetic scenes (background, blob, "
                 "star, worm, ring; 128 px, camouflage, overlap and thin worms). For trying the "
                 "tools without data of your own: the web app's bundled scenes are such scenes.",
        "use": "segrefine serve   # then pick a bundled scene, zoo:synthetic-scenes for both",
        "trained": ["segrefine demo --out RUN --device cpu   # RUN/segmenter, RUN/refiner"],
        "machine": "AMD EPYC without native bf16, 2 threads: {minutes} min for data, both "
                   "trainings and the demo's benchmark",
        "failures": [
            "Camouflaged objects (the same texture as the background) and thin worms: the "
            "U-Net misses them and the refiner, which corrects boundaries, rarely restores "
            "them.",
            "Overlapping objects of two classes: the boundary between them moves, the wrong "
            "class can win.",
            "Only these synthetic scenes: real photos get meaningless masks.",
            "DenseCRF does better than this refiner on these scenes (their edges are sharp "
            "colour steps, what a CRF follows best): the pair is for trying the tools, not a "
            "measure of the method (the Weizmann entry is).",
            "A perfect mask refined comes back at Boundary IoU {truth_biou:.2f}.",
        ],
    },
    "weizmann-horse": {
        "about": "A U-Net (width 16, depth 4, 1.9 M parameters) and a native diffusion refiner "
                 "(trained on the U-Net's out-of-fold errors, refining up to each image's own "
                 "size) for horse vs background in photos.",
        "use": "segrefine refine --segmenter zoo:weizmann-horse --refiner zoo:weizmann-horse "
               "--images photos/ --out refined/",
        "trained": [
            "segrefine train-segmenter --data ../shared/data/weizmann_horse_voc --classes horse "
            "--model unet --epochs 60 --out RUN/segmenter --device cpu",
            "segrefine train-refiner --data ../shared/data/weizmann_horse_voc --segmenter "
            "RUN/segmenter --native --out RUN/refiner --device cpu",
            "segrefine calibrate --refiner RUN/refiner --segmenter RUN/segmenter --data "
            "../shared/data/weizmann_horse_voc --split val --device cpu",
        ],
        "machine": "Intel Xeon 2.8 GHz without native bf16, 2 threads: the U-Net 17.6 min, the "
                   "refiner 60 min (its out-of-fold U-Nets 31 min of it, contended); the runs "
                   "of ../shared/runs (2026-12-01 and 2026-12-06), default recipe (5500 steps)",
        "failures": [
            "Texture that looks like a horse's coat next to the horse (trees, a rider's legs, "
            "fences): the refiner can paint horse into it, and its uncertainty map marks the "
            "spot.",
            "Coats unlike most of the training horses (a spotted white horse): what the U-Net "
            "leaves out as background stays out.",
            "Thin parts the U-Net missed entirely (legs, tails behind grass): the refiner moves "
            "boundaries near where the U-Net put them; it rarely restores a part that is not "
            "in the coarse mask at all.",
            "Horses only: other animals come out as background or as partial horses.",
            "A perfect mask refined comes back at Boundary IoU {truth_biou:.2f}: where a mask "
            "is already exact, refining it can only cost a little.",
        ],
        "calibration_check": ", and within 0.001 of that fitted on one half of it and scored "
                             "on the other (docs/benchmarks.md)",
        "shipped": "The refiner ships with sampling strength 0.2 (its run was trained and "
                   "first shipped with 0.3): on `val` the refined scores are level (per-image "
                   "IoU / Boundary IoU / mBA 89.19 / 73.91 / 73.58 against 89.14 / 73.89 / "
                   "73.65) and a perfect mask comes back at Boundary IoU 97.12 instead of "
                   "96.36 (docs/benchmarks.md, \"Models that ship\"); `--strength 0.3` gives "
                   "the old setting.",
    },
    "camvid-street": {
        "about": "A U-Net (width 16, depth 4) and a native diffusion refiner (trained on the "
                 "U-Net's out-of-fold errors, refining up to each frame's own size) for "
                 "CamVid's 11 street classes (sky, building, pole, road, pavement, tree, sign, "
                 "fence, car, pedestrian, bicyclist) in 480 x 360 driving frames.",
        "use": "segrefine refine --segmenter zoo:camvid-street --refiner zoo:camvid-street "
               "--images frames/ --out refined/",
        "trained": [
            "segrefine train-segmenter --data ../shared/data/camvid --model unet --epochs 80 "
            "--out RUN/segmenter --device cpu",
            "segrefine train-refiner --data ../shared/data/camvid --segmenter RUN/segmenter "
            "--native --oof-epochs 30 --iterations 6000 --out RUN/refiner --device cpu",
            "segrefine calibrate --refiner RUN/refiner --segmenter RUN/segmenter --data "
            "../shared/data/camvid --split val --device cpu",
        ],
        "machine": "AMD EPYC without native bf16, 1 thread, sharing the 2 cores with other "
                   "jobs (the U-Net 2026-12-05, the refiner and its calibration 2026-12-06): "
                   "about {minutes:.0f} min in all (U-Net 61, refiner 103, calibration 17)",
        "shipped": "The refiner ships with sampling strength 0.05 (its run was trained and "
                   "first shipped with 0.3): on `val` every refined score rises as the strength "
                   "falls, to a plateau from 0.05 down (per-image IoU / Boundary IoU / mBA "
                   "58.26 / 49.06 / 50.34 at 0.3; docs/benchmarks.md, \"camvid-street at a "
                   "lower sampling strength\"); `--strength 0.3` gives the old setting.",
        "failures": [
            "Thin and small classes (poles, signs, pedestrians and bicyclists far away): the "
            "U-Net sees each frame with its short side at 128 px, where they are a pixel or "
            "two wide; what it misses there the refiner, which moves boundaries, rarely "
            "restores.",
            "Confusions of whole regions (pavement taken for road, a fence for building): "
            "kept as the U-Net made them; the refiner corrects where a boundary runs, not "
            "what a region is.",
            "Boundary accuracy at the finest scale (mBA): level with DenseCRF's ({crf_mba:.2f} "
            "against the refiner's {mba:.2f}), though DenseCRF lowers every region score: it "
            "snaps edges to colour steps a pixel or two away, where the refiner's finer passes "
            "move a boundary at most 2 px a scale. At the trained strength 0.3 the refiner was "
            "below DenseCRF here (50.34).",
            "Other cities, weather or cameras than CamVid's Cambridge daytime drives: untested.",
            "A perfect mask refined comes back at Boundary IoU {truth_biou:.2f}.",
        ],
    },
}


def write_card(name: str, score_dir: Path, data: Path, worst: int = 3) -> Path:
    """Write the card and the figure of the ``worst`` validation images (by the refined
    Boundary IoU of ``score_dir/per_image.json``)."""
    text, record = TEXT[name], zoo.entry(name)
    scores = record["scores"]
    figure = REPO / "docs" / "images" / f"zoo_{name}_failures.png"
    per_image = json.loads((score_dir / "per_image.json").read_text())
    worst_ids = [r["id"] for r in sorted(per_image,
                                         key=lambda r: r["refined"]["boundary_iou"])[:worst]]
    save_failures(failure_rows(name, data, worst_ids), worst_ids, figure)
    rows = "\n".join(
        f"| {LABELS[r]} | " + " | ".join(f"{scores[r][m]:.2f}" for m in
                                         ("mean_image_iou", "miou", "boundary_iou", "mba"))
        + " |" for r in LABELS if r in scores)  # fmt: skip
    truth_biou = scores["refined_truth"]["boundary_iou"]
    uncertainty = _uncertainty(name)
    values = {"truth_biou": truth_biou, "mba": scores["refined"]["mba"],
              "crf_mba": scores.get("crf", {}).get("mba", float("nan"))}  # fmt: skip
    failures = "\n".join(f"- {f.format(**values)}" for f in text["failures"])
    machine = text["machine"].format(minutes=record.get("train_minutes", "?"))
    trained = "\n".join(text["trained"])
    shipped = f"\n{text['shipped']}\n" if "shipped" in text else ""
    card = f"""# zoo:{name} — {record["title"]}

{text["about"]}

```bash
{text["use"]}
```

**Data and licence.** {record["licence"]}. Trained on the `train` split, validated on `val`;
nothing else was seen. The weights are float16 (the scores below are the float16 weights');
the package ships no images of the dataset.

**Validation at each image's own size** (`val`, native resolution, DenseCRF on the same U-Net
probabilities; per-image IoU / mIoU / Boundary IoU / mBA, percent):

| | per-image IoU | mIoU | Boundary IoU | mBA |
|---|---|---|---|---|
{rows}

{uncertainty}Measured by `python benchmarks/zoo.py score {name} --shared ../shared --write`
(docs/results/zoo.json has every column, the machine and the time).

**Trained by** the project's own commands, seed 0 (`python benchmarks/zoo.py train {name}`
runs them):

```bash
{trained}
```

{machine}.
{shipped}
**Known failure cases.** The {worst} validation images the refiner does worst on
(docs/images/{figure.name}: image, truth, U-Net, refined, uncertainty):

{failures}
"""
    path = zoo.card(name)
    path.write_text(card)
    return path


def _uncertainty(name: str) -> str:
    """A paragraph on the refiner's calibration and its uncertainty map, from the score run."""
    results = json.loads((REPO / "docs" / "results" / "zoo.json").read_text())[name]["rows"]
    seg, ref = results["segmenter"].get("uncertainty"), results["refined"].get("uncertainty")
    config = json.loads((zoo.ROOT / zoo.entry(name)["runs"]["refiner"] / "config.json")
                        .read_text())  # fmt: skip
    t = config.get("calibration", {}).get("temperature")
    check = TEXT[name].get("calibration_check", "")
    if not (seg and ref and t):
        return ""
    return (f"The refiner is calibrated (temperature {t}, fitted on `val` by `segrefine "
            f"calibrate`): its uncertainty map finds its errors with AUROC "
            f"{ref['error_auroc']:.4f} (the U-Net's entropy finds the U-Net's with "
            f"{seg['error_auroc']:.4f}), expected calibration error {ref['ece']:.4f} (U-Net "
            f"{seg['ece']:.4f}); fitted and scored on the same split{check}.\n\n")


def failure_rows(name: str, data: Path, ids: list[str]) -> list[list[np.ndarray]]:
    """Image, truth, segmenter, refined and uncertainty panels for validation images ``ids``."""
    seg, ref = Segmenter.load(f"zoo:{name}", "cpu"), Refiner.load(f"zoo:{name}", "cpu")
    val = load_split(data, "val", seg.spec.classes, seg.spec.binary_per_class, size=None)
    rows = []
    for item in sorted((it for it in val.items if it.id in ids), key=lambda it: ids.index(it.id)):
        probs = seg.predict(item.image)
        out = ref.refine(item.image, probs)
        unc = (np.repeat(out.uncertainty[..., None], 3, -1) * 255).astype(np.uint8)
        rows.append([item.image, overlay(item.image, item.mask), overlay(item.image,
                     probs.argmax(0)), overlay(item.image, out.labels), unc])  # fmt: skip
    return rows


def save_failures(rows, ids, path: Path) -> None:
    save_grid(path, rows, ["image", "truth", "U-Net", "refined", "uncertainty"], ids,
              cell_inches=1.6)  # fmt: skip
