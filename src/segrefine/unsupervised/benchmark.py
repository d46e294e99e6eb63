"""The BSDS500 benchmark: the clustering method beside both baselines, on the same images.

:func:`run_cluster_benchmark` segments every image of a split with k-means, Felzenszwalb, the
clustering method, and the clustering method with simulated scribbles, then writes
``results.json`` (per method: ``covering``, ``pri``, ``voi``, ``miou``, ``seconds_per_image``,
``median_segments``), ``per_image.json``, ``settings.json``, ``table.md`` and ``examples.png``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..benchmarking.report import save_grid
from ..data.io import atomic_path, write_json
from .baselines import felzenszwalb_segment, kmeans_segment
from .bsds import list_bsds, load_bsds_sample
from .cluster import NO_SCRIBBLE, ClusterConfig, cluster
from .metrics import region_scores
from .output import colorize_segments
from .scribbles import make_scribbles

__all__ = ["results_table", "run_cluster_benchmark"]

METRICS = ("miou", "covering", "pri", "voi")
SCRIBBLES_OWN = "clustering CNN + scribbles (each annotator's strokes, scored vs that annotator)"
SCRIBBLES_FIRST = "clustering CNN + scribbles (annotator 0's strokes, scored vs all annotators)"


def results_table(results: dict[str, dict]) -> str:
    """Markdown table: one row per method, the four metrics and seconds per image."""
    lines = [
        "| method | best-match mIoU | covering | PRI | VoI (lower is better) | s/image |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['miou']:.3f} | {r['covering']:.3f} | {r['pri']:.3f} | "
            f"{r['voi']:.2f} | {r['seconds_per_image']:.2f} |"
        )
    return "\n".join(lines)


def _record(image_id: str, labels: np.ndarray, truths, seconds: float) -> dict:
    return {
        "id": image_id,
        **region_scores(labels, truths),
        "seconds": seconds,
        "segments": int(len(np.unique(labels))),
    }


def _timed(fn: Callable[..., np.ndarray], *args, **kwargs) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    labels = fn(*args, **kwargs)
    return labels, time.perf_counter() - start


def run_cluster_benchmark(
    data: str | Path,
    out: str | Path,
    split: str = "val",
    limit: int | None = None,
    config: ClusterConfig | None = None,
    scribbles: bool = True,
    threads: int | None = None,
    examples: int = 4,
    progress: bool = True,
    attention_model: str | Path | None = None,
) -> dict[str, dict]:
    """Run all methods on ``split`` of the BSDS500 root ``data``; return and write results.

    ``threads`` sets PyTorch's CPU threads (default: all cores). Methods without scribbles
    are scored against every annotator (the mean over annotators). With ``scribbles`` the
    clustering method also runs once per annotator with that annotator's strokes
    (:func:`~.scribbles.make_scribbles`) and is scored against that annotator, averaged
    over annotators: each simulated user is judged by the segmentation they had in mind.
    The run with annotator 0's strokes is also scored against all annotators (a second row).
    With ``attention_model`` (a local Stable Diffusion folder) DiffSeg is one more row:
    segments from the U-Net's self-attention, no text, no training.
    """
    cfg = config or ClusterConfig()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    ids = list_bsds(data, split, limit)
    methods: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "k-means (k=8, Lab+xy)": kmeans_segment,
        "Felzenszwalb (scale=300, sigma=0.8, min_size=50)": felzenszwalb_segment,
        "clustering CNN (segrefine default)": lambda im: cluster(im, config=cfg),
    }
    diffseg = None
    if attention_model is not None:  # loaded once; a bad folder is one line before any work
        from ..attention.diffseg import diffseg_method

        diffseg = diffseg_method(attention_model)
        methods[diffseg.name] = diffseg
    names = [*methods, SCRIBBLES_OWN, SCRIBBLES_FIRST] if scribbles else [*methods]
    scores: dict[str, list[dict]] = {name: [] for name in names}
    panels = []
    for image_id in tqdm(ids, desc=f"BSDS500 {split}", disable=not progress):
        sample = load_bsds_sample(data, split, image_id)
        row = [sample.image, colorize_segments(sample.truths[0])]
        for name, method in methods.items():
            labels, seconds = _timed(method, sample.image)
            scores[name].append(_record(image_id, labels, sample.truths, seconds))
            row.append(colorize_segments(labels))
        if scribbles:
            own = []
            for a, truth in enumerate(sample.truths):
                strokes = make_scribbles(truth)
                labels, seconds = _timed(cluster, sample.image, strokes, config=cfg)
                own.append(_record(image_id, labels, [truth], seconds))
                if a == 0:
                    first = (strokes, labels, _record(image_id, labels, sample.truths, seconds))
            keys = (*METRICS, "seconds", "segments")
            scores[SCRIBBLES_OWN].append(
                {"id": image_id, **{k: float(np.mean([r[k] for r in own])) for k in keys}}
            )
            strokes, labels, record = first
            scores[SCRIBBLES_FIRST].append(record)
            marked = strokes != NO_SCRIBBLE  # show annotator 0's strokes on the image
            row[0] = row[0].copy()
            row[0][marked] = colorize_segments(strokes)[marked]
            row.append(colorize_segments(labels))
        if len(panels) < examples:
            panels.append(row)
    results = {
        name: {
            **{m: float(np.mean([s[m] for s in rows])) for m in METRICS},
            "seconds_per_image": float(np.mean([s["seconds"] for s in rows])),
            "median_segments": float(np.median([s["segments"] for s in rows])),
        }
        for name, rows in scores.items()
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    write_json(out / "per_image.json", scores)
    write_json(
        out / "settings.json",
        {
            "data": str(data),
            "split": split,
            "images": len(ids),
            "threads": torch.get_num_threads(),
            "config": asdict(cfg),
            "attention_model": str(attention_model) if attention_model else None,
            "diffseg": diffseg.settings if diffseg else None,
        },
    )
    table = (
        f"BSDS500 {split}, {len(ids)} images (sorted ids), "
        f"{torch.get_num_threads()} CPU thread(s).\n\n{results_table(results)}\n"
    )
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    if panels:
        short = ["image", "annotator 0", "k-means", "Felzenszwalb", "CNN"] + (
            ["DiffSeg"] if diffseg else []) + (["CNN + scribbles"] if scribbles else [])
        save_grid(
            out / "examples.png", panels, short, row_labels=ids[: len(panels)], cell_inches=2.2
        )
    return results
