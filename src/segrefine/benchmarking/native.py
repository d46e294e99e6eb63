"""The refiner measured where its users work: at each image's own resolution.

Every row scores full-size label maps against the full-size truth of one split (per-image IoU,
mIoU, Boundary IoU, boundary F and mBA, in percent) and times its stage in seconds per
megapixel of input:

* ``segmenter`` -- the segmenter at the image's own size (aspect ratio kept);
* ``refined`` -- its probabilities refined at the refiner's working size (aspect ratio kept)
  and brought back to full size;
* ``crf`` -- DenseCRF at full resolution on the same probabilities (with ``crf``);
* ``refined_128`` -- the refiner as it used to run: image and probabilities squashed into a
  ``size`` x ``size`` square, refined, stretched back;
* ``refined_truth`` -- the refiner given the ground truth itself (softened as a hard mask is):
  how much a refiner damages a perfect input ("do no harm").

The ``segmenter`` and ``refined`` rows also say how far their probabilities and uncertainty
can be trusted (``uncertainty``, fractions, pixels pooled; :mod:`segrefine.metrics.calibration`):
``error_auroc`` (the uncertainty as a detector of the row's own errors), ``ece`` (calibration
of the top-class probability, 15 bins) and ``errors_in_top10`` (the share of the errors among
the 10% most uncertain pixels). The segmenter's uncertainty is its probabilities' normalised
entropy, the refiner's its uncertainty map; both are scored by the same code.

Outputs in ``out``: ``results.json`` (``rows`` as above, plus settings), ``per_image.json``,
``report.md`` and ``boundaries.png`` (full-resolution crops where segmenter and refinement
differ most).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.datasets import load_split, resize_image
from ..data.io import VOID, write_json
from ..data.transforms import resize_probs
from ..diffusion.refiner import Refiner
from ..evaluate import score_split
from ..metrics import in_percent, score_probabilities
from ..pipeline import check_pair, segment_and_refine
from ..segmenting.segmenter import Segmenter
from .report import (
    colorize,
    densest_window,
    metrics_table,
    rounded_scores,
    rounded_uncertainty,
    save_grid,
    uncertainty_table,
)


def _row(val, labels, seconds: float, megapixels: float) -> tuple[dict, list[dict]]:
    scores = score_split(val, labels)
    row = rounded_scores(scores.summary())
    row["seconds_per_megapixel"] = round(seconds / megapixels, 3)
    return row, [in_percent(s) for s in scores.per_image]


def _uncertainty(val, probs, uncertainty=None) -> dict:
    return rounded_uncertainty(score_probabilities(probs, [it.mask for it in val.items],
                                                   uncertainty))  # fmt: skip


def _squashed(ref: Refiner, images, probs, seed: int, **settings) -> list[np.ndarray]:
    """The refiner's old path: everything squashed into its square and stretched back."""
    square = [resize_image(im, ref.size) for im in images]
    small = [resize_probs(torch.from_numpy(p), (ref.size, ref.size)).numpy() for p in probs]
    out = ref.refine_batch(square, small, seed=seed, **settings)
    return [resize_probs(torch.from_numpy(r.probs), im.shape[:2]).numpy().argmax(0)
            for r, im in zip(out, images, strict=True)]  # fmt: skip


def run_native_benchmark(
    data: str | Path,
    split: str,
    segmenter: str | Path,
    refiner: str | Path,
    out: str | Path,
    crf: bool = False,
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    flip: bool | None = None,
    device: str = "cpu",
    seed: int = 0,
    examples: int = 4,
    backend: str = "torch",
) -> dict:
    """Score every row at native resolution and write the report; returns ``results.json``."""
    out = Path(out)
    seg = Segmenter.load(segmenter, device, backend)
    ref = Refiner.load(refiner, device, backend)
    check_pair(seg, ref, refiner)
    settings = {k: v for k, v in ref.settings(steps, strength, samples, flip).items()}
    val = load_split(data, split, seg.spec.classes, seg.spec.binary_per_class, size=None)
    images = [it.image for it in val.items]
    megapixels = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    clock: dict[str, float] = {}
    results = segment_and_refine(images, seg, ref, seed=seed, timings=clock, **settings)
    probs = [r.probs for r in results]
    rows, per_image = {}, {}
    rows["segmenter"], per_image["segmenter"] = _row(
        val, [r.labels for r in results], clock["segment_s"], megapixels)
    rows["refined"], per_image["refined"] = _row(
        val, [r.refined.labels for r in results], clock["refine_s"], megapixels)
    rows["segmenter"]["uncertainty"] = _uncertainty(val, probs)
    rows["refined"]["uncertainty"] = _uncertainty(val, [r.refined.probs for r in results],
                                                  [r.refined.uncertainty for r in results])
    if crf:
        from ..crf import dense_crf

        t0 = time.perf_counter()
        labels = [dense_crf(im, p).argmax(0) for im, p in zip(images, probs, strict=True)]
        rows["crf"], per_image["crf"] = _row(val, labels, time.perf_counter() - t0, megapixels)
    t0 = time.perf_counter()
    labels = _squashed(ref, images, probs, seed, **settings)
    rows["refined_128"], per_image["refined_128"] = _row(
        val, labels, time.perf_counter() - t0, megapixels)
    truth = [np.where(it.mask == VOID, 0, it.mask).astype(np.uint8) for it in val.items]
    t0 = time.perf_counter()
    labels = [r.labels for r in ref.refine_batch(images, labels=truth, seed=seed, **settings)]
    rows["refined_truth"], per_image["refined_truth"] = _row(
        val, labels, time.perf_counter() - t0, megapixels)

    report = {
        "data": str(data), "split": split, "num_images": len(images),
        "megapixels": round(megapixels, 3), "segmenter": str(segmenter), "refiner": str(refiner),
        "mode": ref.mode, "settings": settings, "calibration": ref.spec.calibration,
        "device": str(seg.device),
        "threads": torch.get_num_threads(), "rows": rows,
    }  # fmt: skip
    write_json(out / "per_image.json",
               [{"id": it.id, **{name: scores[i] for name, scores in per_image.items()}}
                for i, it in enumerate(val.items)])  # fmt: skip
    _boundary_figure(out / "boundaries.png", val, results, examples)
    write_json(out / "results.json", report)
    (out / "report.md").write_text(_report_text(report))
    return report


def _boundary_figure(path: Path, val, results, examples: int, side: int = 96) -> None:
    """Full-resolution crops (no resampling) centred where refinement changed most."""
    rows, names = [], []
    changed = [(r.labels != r.refined.labels).mean() for r in results]
    for i in np.argsort(changed)[::-1][:examples]:
        r, item = results[i], val.items[i]
        win = densest_window(r.labels != r.refined.labels, side)
        top, left = win[0].start, win[1].start
        rows.append([item.image[win], colorize(item.mask[win]), colorize(r.labels[win]),
                     colorize(r.refined.labels[win]), r.refined.uncertainty[win]])  # fmt: skip
        names.append(f"{item.id}\n({left}, {top})")
    save_grid(path, rows, ["image", "truth", "segmenter", "refined", "uncertainty"], names)


def _report_text(r: dict) -> str:
    rows = r["rows"]
    trust = {name: row["uncertainty"] for name, row in rows.items() if "uncertainty" in row}
    cal = r["calibration"]
    calibrated = "not calibrated"
    if "temperature" in cal:
        calibrated = f"calibrated by temperature {cal['temperature']}, fitted on {cal.get('split')}"
        if cal.get("split") == r["split"] and Path(str(cal.get("data"))) == Path(r["data"]):
            calibrated += " -- the split scored here, so its calibration is measured in-sample"
    timing = "\n".join(f"| {name} | {row['seconds_per_megapixel']} |" for name, row in rows.items())
    s = r["settings"]
    return "\n".join([
        f"# Native-resolution benchmark: {r['data']} ({r['split']}, {r['num_images']} images, "
        f"{r['megapixels']} MP)", "",
        f"Segmenter `{r['segmenter']}`, refiner `{r['refiner']}` ({r['mode']} mode; steps "
        f"{s['steps']}, strength {s['strength']}, samples {s['samples']}). Every score is taken "
        "at each image's own size (percent).", "",
        metrics_table(rows), "",
        "## Uncertainty and calibration", "",
        f"Pixels pooled, fractions; the refiner is {calibrated}.", "",
        uncertainty_table(trust), "",
        "## Time (seconds per megapixel of input)", "", "| row | s / MP |", "|---|---|", timing,
        "", f"{r['device']}, {r['threads']} threads.", "",
        "## Boundaries at full resolution", "",
        "Crops of 96 px where the refinement changed the segmenter's labels most:", "",
        "![boundaries](boundaries.png)", "",
    ])  # fmt: skip
