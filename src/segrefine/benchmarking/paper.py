"""The refiner benchmark: segmenter alone vs segmenter + refiner (vs DenseCRF) on one split.

It reproduces the paper's analysis on any dataset: a per-class table of per-image IoU (the
paper's Table 1), dataset scores (mIoU, Boundary IoU, boundary F), the most improved and most
worsened images (its Figs. 4 and 5, with our uncertainty map added), the scatter of segmenter
IoU against the refiner's gain (its Fig. 6), quality against the number of denoising steps,
and speed (denoiser evaluations per image, images per second for each stage). ``uncertainty``
says how far each side's probabilities and uncertainty can be trusted (error AUROC, ECE,
errors in the top 10%: :mod:`segrefine.metrics.calibration`, as ``benchmark --native``).

Outputs in ``out``: ``report.md``, ``results.json``, ``per_image.json``, ``improved.png``,
``worsened.png``, ``scatter.png``, ``steps.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.datasets import load_split
from ..data.io import write_json
from ..diffusion.refiner import Refiner
from ..evaluate import score_split
from ..metrics import in_percent, score_probabilities
from ..pipeline import check_pair, segment_and_refine
from ..segmenting.segmenter import Segmenter
from .report import (
    colorize,
    metrics_table,
    rounded_scores,
    rounded_uncertainty,
    save_grid,
    uncertainty_table,
)


def _score(data, labels) -> tuple[dict, list[dict]]:
    scores = score_split(data, labels)
    summary = scores.summary()
    by_task: dict[str, list[float]] = {}
    for s, item in zip(scores.per_image, data.items, strict=True):
        by_task.setdefault(item.task, []).append(s["image_iou"] * 100)
    summary["per_task"] = {k: float(np.mean(v)) for k, v in by_task.items()}
    return summary, scores.per_image


def _timed(images: list[np.ndarray], batch_size: int, **pipeline) -> tuple[list, dict]:
    """The pipeline over ``images`` after a warm-up batch; returns the results and the
    images per second of each stage that ran."""
    first = {k: v[:batch_size] if k == "probs" else v for k, v in pipeline.items()}
    segment_and_refine(images[:batch_size], batch_size=batch_size, **first)  # warm-up
    clock: dict[str, float] = {}
    results = segment_and_refine(images, batch_size=batch_size, timings=clock, **pipeline)
    return results, {k.replace("_s", "_images_per_s"): len(images) / v for k, v in clock.items()}


def run_benchmark(
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
    step_sweep: tuple[int, ...] = (1, 2, 4, 8),
    other_segmenters: tuple = (),
    device: str = "cpu",
    batch_size: int = 16,
    examples: int = 5,
    progress: bool = True,
    backend: str = "torch",
) -> dict:
    """Run the benchmark and write its report; returns the ``results.json`` content."""
    out = Path(out)
    seg = Segmenter.load(segmenter, device, backend)
    ref = Refiner.load(refiner, device, backend)
    check_pair(seg, ref, refiner)
    others = [Segmenter.load(o, device, backend) for o in other_segmenters]
    for o, path in zip(others, other_segmenters, strict=True):
        check_pair(o, ref, path)
    settings = ref.settings(steps, strength, samples, flip)
    for n in step_sweep:  # a bad sweep fails now, not after the main refinement
        ref.settings(n, strength, samples, flip)
    cfg = seg.spec
    val = load_split(data, split, cfg.classes, cfg.binary_per_class, seg.size)
    images = [it.image for it in val.items]
    refine = {k: settings[k] for k in ("steps", "strength", "samples", "flip", "native")}

    results_, rates = _timed(images, batch_size, segmenter=seg, refiner=ref, **refine)
    probs = [r.probs for r in results_]
    base_labels = np.stack([r.labels for r in results_])
    ref_labels = np.stack([r.refined.labels for r in results_])
    unc = np.stack([r.refined.uncertainty for r in results_])
    val_masks = [it.mask for it in val.items]
    seg_rate, ref_rate = rates["segment_images_per_s"], rates["refine_images_per_s"]
    base, base_img = _score(val, base_labels)
    refined, ref_img = _score(val, ref_labels)
    results = {
        "data": str(data), "split": split, "num_images": len(images),
        "segmenter": str(segmenter), "refiner": str(refiner), "mode": ref.mode,
        "settings": settings, "baseline": rounded_scores(base), "refined": rounded_scores(refined),
        "nfe_per_image": ref.nfe(settings["steps"], settings["samples"], settings["strength"]),
        "segment_images_per_s": round(seg_rate, 2), "refine_images_per_s": round(ref_rate, 2),
        "pipeline_images_per_s": round(1 / (1 / seg_rate + 1 / ref_rate), 2),
        "device": str(seg.device), "threads": torch.get_num_threads(),
        "per_task": {t: {"baseline": round(base["per_task"][t], 2),
                         "refined": round(refined["per_task"][t], 2)} for t in base["per_task"]},
        "per_class_iou": {"baseline": base["per_class_iou"], "refined": refined["per_class_iou"]},
        "uncertainty": {
            "baseline": rounded_uncertainty(score_probabilities(probs, val_masks)),
            "refined": rounded_uncertainty(score_probabilities(
                [r.refined.probs for r in results_], val_masks, unc)),
        },
    }  # fmt: skip
    if crf:
        from ..crf import dense_crf

        t0 = time.perf_counter()
        crf_labels = np.stack([
            dense_crf(im, p).argmax(0)
            for im, p in tqdm(zip(images, probs, strict=True), total=len(images),
                              desc="densecrf", disable=not progress, leave=False)
        ])  # fmt: skip
        crf_rate = len(images) / (time.perf_counter() - t0)
        results["crf"] = {**rounded_scores(_score(val, crf_labels)[0]),
                          "images_per_s": round(crf_rate, 2)}
    sweep = []
    for n in tqdm(step_sweep, desc="steps sweep", disable=not progress, leave=False):
        s = {**refine, "steps": n}
        swept, rates = _timed(images, batch_size, probs=probs, refiner=ref, **s)
        summ = rounded_scores(_score(val, [r.refined.labels for r in swept])[0])
        sweep.append({"steps": n, "nfe_per_image": ref.nfe(n, s["samples"], s["strength"]),
                      "refine_images_per_s": round(rates["refine_images_per_s"], 2),
                      **summ})  # fmt: skip
    results["steps_sweep"] = sweep
    for other, oseg in zip(other_segmenters, others, strict=True):
        oresults, orates = _timed(images, batch_size, segmenter=oseg, refiner=ref, **refine)
        results.setdefault("other_segmenters", {})[str(other)] = {
            "model": oseg.spec.model["name"],
            "segment_images_per_s": round(orates["segment_images_per_s"], 2),
            "baseline": rounded_scores(_score(val, [r.labels for r in oresults])[0]),
            "refined": rounded_scores(_score(val, [r.refined.labels for r in oresults])[0]),
        }  # fmt: skip

    per_image = [
        {"id": it.id, "baseline": in_percent(b), "refined": in_percent(r)}
        for it, b, r in zip(val.items, base_img, ref_img, strict=True)
    ]
    write_json(out / "per_image.json", per_image)
    _figures(out, val, images, base_labels, ref_labels, unc, per_image, sweep, examples)
    write_json(out / "results.json", results)
    (out / "report.md").write_text(_report(results))
    return results


def _figures(out, val, images, base_labels, ref_labels, unc, per_image, sweep, examples):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..data.io import atomic_path

    gain = np.array([p["refined"]["image_iou"] - p["baseline"]["image_iou"] for p in per_image])
    cols = ["input", "truth", "segmenter", "refined", "uncertainty"]
    for name, order in (("improved", np.argsort(-gain)), ("worsened", np.argsort(gain))):
        rows, labels = [], []
        for i in order[:examples]:
            rows.append(
                [
                    images[i],
                    colorize(val.items[i].mask),
                    colorize(base_labels[i]),
                    colorize(ref_labels[i]),
                    unc[i],
                ]
            )
            labels.append(
                f"{val.items[i].id}\n{per_image[i]['baseline']['image_iou']:.1f}"
                f" -> {per_image[i]['refined']['image_iou']:.1f}"
            )
        save_grid(out / f"{name}.png", rows, cols, labels)

    base = np.array([p["baseline"]["image_iou"] for p in per_image])
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.scatter(base, gain, s=10)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("segmenter per-image IoU")
    ax.set_ylabel("IoU gain from refinement")
    fig.tight_layout()
    with atomic_path(out / "scatter.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    nfe = [s["nfe_per_image"] for s in sweep]
    ax.plot(nfe, [s["mean_image_iou"] for s in sweep], "o-", label="per-image IoU")
    ax.plot(nfe, [s["boundary_iou"] for s in sweep], "s-", label="Boundary IoU")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("denoiser evaluations per image")
    ax.set_ylabel("score (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "steps.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _report(r: dict) -> str:
    rows = {"segmenter": r["baseline"], f"+ refiner ({r['mode']})": r["refined"]}
    if "crf" in r:
        rows["+ DenseCRF"] = r["crf"]
    s = r["settings"]
    lines = [
        f"# Refiner benchmark: {r['data']} ({r['split']}, {r['num_images']} images)", "",
        f"Segmenter `{r['segmenter']}`, refiner `{r['refiner']}` ({r['mode']} mode; steps "
        f"{s['steps']}, strength {s['strength']}, samples {s['samples']}"
        f"{', half of them on the mirrored image' if s.get('flip') else ''}: "
        f"{r['nfe_per_image']} denoiser evaluations per image).", "",
        metrics_table(rows), "",
        "Uncertainty and calibration (fractions, pixels pooled):", "",
        uncertainty_table({"segmenter": r["uncertainty"]["baseline"],
                           "+ refiner": r["uncertainty"]["refined"]}), "",
        "## Per-image IoU per class (the paper's Table 1)", "",
        "| class | segmenter | refined | gain |", "|---|---|---|---|",
        *[f"| {t} | {v['baseline']:.2f} | {v['refined']:.2f} | "
          f"{v['refined'] - v['baseline']:+.2f} |" for t, v in r["per_task"].items()],
        "", "## Speed", "",
        f"Segmenter {r['segment_images_per_s']} images/s; refiner {r['refine_images_per_s']} "
        f"images/s; both {r['pipeline_images_per_s']} images/s ({r['device']}, "
        f"{r['threads']} threads).",
        *([f"DenseCRF {r['crf']['images_per_s']} images/s."] if "crf" in r else []),
        "", "## Quality against denoising steps", "", "![steps](steps.png)", "",
        "| steps | NFE | per-image IoU | Boundary IoU | images/s |", "|---|---|---|---|---|",
        *[f"| {x['steps']} | {x['nfe_per_image']} | {x['mean_image_iou']:.2f} | "
          f"{x['boundary_iou']:.2f} | {x['refine_images_per_s']} |" for x in r["steps_sweep"]],
        "", "## Where it helps and where it hurts", "",
        "Segmenter IoU against the refiner's gain (the paper's Fig. 6):", "",
        "![scatter](scatter.png)", "", "Most improved:", "", "![improved](improved.png)", "",
        "Most worsened:", "", "![worsened](worsened.png)", "",
    ]  # fmt: skip
    if "other_segmenters" in r:
        lines += ["## The same refiner on other segmenters", "",
                  metrics_table({f"{v['model']} ({k})" + suffix: v[part]
                                 for k, v in r["other_segmenters"].items()
                                 for part, suffix in (("baseline", ""),
                                                      ("refined", " + refiner"))}),
                  ""]  # fmt: skip
    return "\n".join(lines)
