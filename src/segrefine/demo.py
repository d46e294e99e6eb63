"""The main job, end to end, on data it makes itself: synthetic scenes -> U-Net -> predictions
-> metrics -> a Markdown report with a figure. Needs no download and no GPU.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import checkpoint
from .benchmarking.report import colorize, metrics_table, per_class_table, save_grid
from .data.datasets import load_split
from .data.io import read_mask, write_json
from .data.synthetic import write_synthetic_dataset
from .evaluate import evaluate_folder
from .segmenting.predict import predict_to_folder
from .segmenting.segmenter import Segmenter
from .segmenting.train import TrainConfig, train_segmenter


def demo_config(data: Path, epochs: int) -> TrainConfig:
    """The demo's segmenter: a small U-Net that trains in a couple of CPU minutes."""
    return TrainConfig(data=str(data), model="unet", width=16, depth=4, epochs=epochs,
                       batch_size=8, lr=3e-3, size=128, seed=0)


def demo_refiner_config(data: Path, segmenter: Path, iterations: int):
    """The demo's refiner: default mode, out-of-fold coarse masks from short fold segmenters.

    Like every refiner its encoder starts from the segmenter's weights and its weights are an
    exponential moving average. It trains long enough for its gain to stand above the noise of
    the demo's scores, averages 4 samples (the samples of a briefly trained refiner disagree
    more) and trains in float32 (a short bf16 run ended below the U-Net). The runs behind these
    choices are in docs/benchmarks.md.
    """
    from .diffusion import RefinerConfig

    return RefinerConfig(data=str(data), segmenter=str(segmenter), oof_epochs=10,
                         iterations=iterations, batch_size=8, val_every=max(iterations // 4, 1),
                         inference={"samples": 4}, seed=0, mixed_precision=False)


def _train_demo_refiner(cfg, run: Path, device: str, progress: bool) -> None:
    from .diffusion import train_refiner

    if (run / checkpoint.CONFIG).exists():
        saved = checkpoint.read_config(run, kind="refiner")["train"]
        if saved == asdict(cfg) and (run / checkpoint.WEIGHTS).exists():
            log = (run / checkpoint.LOG).read_text().splitlines()
            if log and f'"step": {cfg.iterations},' in log[-1]:
                return  # finished earlier with the same settings
            train_refiner(None, run, resume=True, device=device, progress=progress)
            return
        shutil.rmtree(run)
    train_refiner(cfg, run, device=device, progress=progress)


def run_demo(
    out: str | Path,
    epochs: int = 25,
    n_train: int = 200,
    n_val: int = 50,
    refiner_iterations: int = 1200,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.md``.

    Re-running with the same settings resumes (or reuses) the finished run; different settings
    start the segmenter afresh.
    """
    out = Path(out)
    t0 = time.perf_counter()
    data = write_synthetic_dataset(out / "data", n_train=n_train, n_val=n_val, size=128, seed=0)
    t_data = time.perf_counter() - t0

    cfg = demo_config(data, epochs)
    run = out / "segmenter"
    resume = False
    if (run / checkpoint.CONFIG).exists():
        saved = checkpoint.read_config(run, kind="segmenter")["train"]
        resume = saved == asdict(cfg)
        if not resume:
            shutil.rmtree(run)
    t1 = time.perf_counter()
    train_segmenter(cfg, run, resume=resume, device=device, progress=progress)
    t_train = time.perf_counter() - t1

    seg = Segmenter.load(run, device=device)
    preds = out / "predictions"
    t2 = time.perf_counter()
    predict_to_folder(seg, data, preds, split="val", save_probs=True, progress=progress)
    t_pred = time.perf_counter() - t2
    summary = evaluate_folder(preds, data, "val")
    write_json(out / "metrics.json", summary)

    refined = None
    t_refiner = 0.0
    if refiner_iterations > 0:
        from .benchmarking import run_benchmark

        t3 = time.perf_counter()
        ref_cfg = demo_refiner_config(data, run, refiner_iterations)
        _train_demo_refiner(ref_cfg, out / "refiner", device, progress)
        t_refiner = time.perf_counter() - t3
        refined = run_benchmark(data, "val", run, out / "refiner", out / "benchmark",
                                step_sweep=(1, 2, 4), device="cpu", progress=progress)

    figure = _figure(out / "figure.png", data, preds, summary)
    report = out / "report.md"
    report.write_text(_report_text(summary, cfg, n_train, n_val, t_data, t_train, t_pred,
                                   figure.name, refined, t_refiner), encoding="utf-8")
    return report


def _figure(path: Path, data: Path, preds: Path, summary: dict, n: int = 6) -> Path:
    """image | truth | prediction for the best, middle and worst images by per-image IoU."""
    val = load_split(data, "val", size=128)
    by_id = {it.id: it for it in val.items}
    ranked = sorted(summary["per_image"], key=lambda r: r["image_iou"])
    picks = [ranked[i] for i in np.linspace(0, len(ranked) - 1, n).round().astype(int)]
    rows, labels = [], []
    for rec in reversed(picks):
        item = by_id[rec["id"]]
        pred = read_mask(preds / f"{rec['id']}.png")
        rows.append([item.image, colorize(item.mask), colorize(pred)])
        labels.append(f"{rec['id']}\nIoU {rec['image_iou']:.0f}")
    return save_grid(path, rows, ["image", "truth", "prediction"], labels)


def _report_text(summary, cfg, n_train, n_val, t_data, t_train, t_pred, figure,
                 refined=None, t_refiner=0.0) -> str:
    return _segmenter_text(summary, cfg, n_train, n_val, t_data, t_train, t_pred, figure) + (
        _refiner_text(refined, t_refiner) if refined else "")


def _refiner_text(r: dict, t_refiner: float) -> str:
    s = r["settings"]
    rows = {"U-Net": r["baseline"], "U-Net + refiner": r["refined"]}
    return f"""
## Refined by the diffusion refiner

A default-mode refiner trained for {t_refiner:.0f} s (out-of-fold U-Net predictions plus
degradations of the truth), refining with {s["steps"]} step(s) x {s["samples"]} samples
({r["nfe_per_image"]} denoiser evaluations per image; scored at the protocol size, 128 px):

{metrics_table(rows)}

Segmenter {r["segment_images_per_s"]} images/s, refiner {r["refine_images_per_s"]} images/s.
The full refiner report (most improved and worsened images with uncertainty maps, the gain
against segmenter IoU, quality against steps) is in [benchmark/report.md](benchmark/report.md).
"""


def _segmenter_text(summary, cfg, n_train, n_val, t_data, t_train, t_pred, figure) -> str:
    return f"""# segrefine demo report

A U-Net (width {cfg.width}, depth {cfg.depth}) trained from scratch for {cfg.epochs} epochs on
{n_train} synthetic scenes (128x128; classes: {", ".join(summary["per_class_iou"])}), scored
on {n_val} held-out validation scenes. The scenes are built to be hard: camouflaged colours,
overlapping objects, thin parts and textured distractors.

## Scores (percent)

{metrics_table({"U-Net": summary})}

Per-image IoU averages each image's IoU over the classes present in its truth or prediction;
mIoU comes from the dataset's confusion matrix; Boundary IoU (Cheng et al. 2021) uses a band
of 2% of the image diagonal.

{per_class_table(summary)}

## Examples (best to worst by per-image IoU)

![examples]({figure})

## Time

| stage | seconds |
|---|---|
| generate data | {t_data:.1f} |
| train | {t_train:.1f} |
| predict {n_val} images | {t_pred:.1f} |
"""
