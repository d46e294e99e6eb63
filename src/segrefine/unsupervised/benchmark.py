"""The BSDS500 benchmark: the clustering method beside both baselines, on the same images.

:func:`run_cluster_benchmark` segments every image of a split with k-means, Felzenszwalb, the
clustering method, and the clustering method with automatic scribbles, then writes
``results.json`` (per method: ``covering``, ``pri``, ``voi``, ``miou``, ``seconds_per_image``),
``per_image.json``, ``settings.json``, ``table.md`` and ``examples.png``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from ..data.io import atomic_path, write_json
from ..report import save_grid
from .baselines import felzenszwalb_segment, kmeans_segment
from .bsds import list_bsds, load_bsds_sample
from .cluster import NO_SCRIBBLE, ClusterConfig, cluster
from .metrics import region_scores
from .output import colorize_segments

__all__ = ["make_scribbles", "results_table", "run_cluster_benchmark"]

METRICS = ("miou", "covering", "pri", "voi")


def make_scribbles(
    truth: np.ndarray,
    max_strokes: int = 12,
    min_fraction: float = 0.005,
    length: int = 40,
    margin: int = 3,
) -> np.ndarray:
    """Simulated user scribbles: one stroke inside each of the largest ground-truth segments.

    For each segment of at least ``min_fraction`` of the image (largest first, at most
    ``max_strokes``), a horizontal stroke of up to ``length`` pixels is drawn through the
    segment's most interior point, kept ``margin`` pixels inside the segment. Returns ``uint8``
    (H, W): stroke k has label k, unmarked pixels are 255. Deterministic.
    """
    truth = np.asarray(truth)
    ids, sizes = np.unique(truth, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    out = np.full(truth.shape, NO_SCRIBBLE, dtype=np.uint8)
    k = 0
    for idx in order:
        if k >= max_strokes or sizes[idx] < min_fraction * truth.size:
            break
        inside = ndimage.distance_transform_edt(np.pad(truth == ids[idx], 1))[1:-1, 1:-1]
        y, x = np.unravel_index(int(inside.argmax()), inside.shape)
        if inside[y, x] <= margin:
            continue
        row = inside[y] > margin
        lo, hi = x, x
        while lo > 0 and row[lo - 1] and x - lo < length // 2:
            lo -= 1
        while hi < len(row) - 1 and row[hi + 1] and hi - x < length // 2:
            hi += 1
        out[y, lo : hi + 1] = k
        k += 1
    return out


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
) -> dict[str, dict]:
    """Run all methods on ``split`` of the BSDS500 root ``data``; return and write results.

    ``threads`` sets PyTorch's CPU threads (default: all cores). Scribbles for the scribble
    run are made from the first annotator's segmentation (:func:`make_scribbles`); the scores
    are against all annotators, as for every method.
    """
    cfg = config or ClusterConfig()
    torch.set_num_threads(threads or os.cpu_count() or 1)
    ids = list_bsds(data, split, limit)
    methods: dict[str, Callable[[np.ndarray, np.ndarray | None], np.ndarray]] = {
        "k-means (k=8, Lab+xy)": lambda im, _: kmeans_segment(im),
        "Felzenszwalb (scale=300, sigma=0.8, min_size=50)": lambda im, _: felzenszwalb_segment(im),
        "clustering CNN (segrefine default)": lambda im, _: cluster(im, config=cfg),
    }
    if scribbles:
        scr_cfg = replace(cfg, scribble_regions=True)
        methods["clustering CNN + scribbles"] = lambda im, s: cluster(im, s, config=scr_cfg)
    scores: dict[str, list[dict]] = {name: [] for name in methods}
    panels = []
    for image_id in tqdm(ids, desc=f"BSDS500 {split}", disable=not progress):
        sample = load_bsds_sample(data, split, image_id)
        scribble_map = make_scribbles(sample.truths[0]) if scribbles else None
        row = [sample.image, colorize_segments(sample.truths[0])]
        for name, method in methods.items():
            start = time.perf_counter()
            labels = method(sample.image, scribble_map)
            seconds = time.perf_counter() - start
            scores[name].append(
                {
                    "id": image_id,
                    **region_scores(labels, sample.truths),
                    "seconds": seconds,
                    "segments": int(labels.max()) + 1,
                }
            )
            row.append(colorize_segments(labels))
        if len(panels) < examples:
            if scribble_map is not None:  # show the strokes on the image
                marked = scribble_map != NO_SCRIBBLE
                row[0] = row[0].copy()
                row[0][marked] = colorize_segments(scribble_map)[marked]
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
            ["CNN + scribbles"] if scribbles else []
        )
        save_grid(
            out / "examples.png", panels, short, row_labels=ids[: len(panels)], cell_inches=2.2
        )
    return results
