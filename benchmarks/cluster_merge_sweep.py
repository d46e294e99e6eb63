"""Sweep the clustering method's region-merge settings on a BSDS500 subset (tune on *train*).

The network is trained once per image and superpixel scale (``cluster_response``); every merge
setting then reuses that response (``response_to_labels``), so a sweep costs one training per
image plus a cheap merge per setting. Prints one Markdown table: Felzenszwalb (the baseline
to beat), each setting, and the oracle merge of the superpixels (each superpixel given to its
majority ground-truth segment, per annotator), the ceiling of any merge of those superpixels.

A setting is ``SCALE:THRESHOLD:RESPONSE:HIST:EDGE`` (Felzenszwalb scale of the superpixels,
``merge_threshold``, ``response_weight``, ``hist_weight``, ``edge_weight``). The default's
choice (docs/benchmarks.md) came from:

    python benchmarks/cluster_merge_sweep.py --offset 0 \\
        --settings 300:5:30:0:0,150:24:30:20:1,150:24:0:20:1,150:18:30:20:1
    python benchmarks/cluster_merge_sweep.py --offset 2 --settings 300:5:30:0:0,150:24:30:20:1
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from segrefine.unsupervised.baselines import felzenszwalb_segment
from segrefine.unsupervised.bsds import list_bsds, load_bsds_sample
from segrefine.unsupervised.cluster import ClusterConfig, cluster_response, response_to_labels
from segrefine.unsupervised.metrics import contingency, region_scores

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bsds500"
FIELDS = ("sp_scale", "merge_threshold", "response_weight", "hist_weight", "edge_weight")


def parse_settings(text: str) -> list[dict]:
    out = []
    for item in text.split(","):
        values = [float(v) for v in item.split(":")]
        if len(values) != len(FIELDS):
            raise argparse.ArgumentTypeError(f"'{item}': expected {':'.join(FIELDS)}")
        out.append(dict(zip(FIELDS, values, strict=True)))
    return out


def oracle_merge(superpixels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Each superpixel takes the ground-truth segment it overlaps most (uses the labels)."""
    return np.asarray(contingency(superpixels, truth)).argmax(axis=1)[
        np.unique(superpixels, return_inverse=True)[1].reshape(superpixels.shape)
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", default="train")
    p.add_argument("--every", type=int, default=5, help="take every N-th sorted image id")
    p.add_argument("--offset", type=int, default=0, help="starting at this position")
    p.add_argument("--count", type=int, default=40)
    p.add_argument("--settings", type=parse_settings, default=parse_settings("150:24:30:20:1"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ids = list_bsds(args.data, args.split)[args.offset :: args.every][: args.count]
    rows: dict[str, list[dict]] = {"Felzenszwalb (scale=300)": []}
    names = [":".join(f"{v:g}" for v in s.values()) for s in args.settings]
    scales = sorted({s["sp_scale"] for s in args.settings})
    for image_id in tqdm(ids, desc=f"BSDS500 {args.split}"):
        sample = load_bsds_sample(args.data, args.split, image_id)
        scores = [(rows["Felzenszwalb (scale=300)"], felzenszwalb_segment(sample.image))]
        for scale in scales:
            cfg = replace(ClusterConfig(), sp_scale=scale)
            response, superpixels = cluster_response(sample.image, cfg)
            for name, setting in zip(names, args.settings, strict=True):
                if setting["sp_scale"] == scale:
                    labels = response_to_labels(
                        response, sample.image, replace(cfg, **setting), superpixels
                    )
                    scores.append((rows.setdefault(name, []), labels))
            oracle = [region_scores(oracle_merge(superpixels, t), [t]) for t in sample.truths]
            rows.setdefault(f"oracle merge of the scale-{scale:g} superpixels", []).append(
                {k: float(np.mean([o[k] for o in oracle])) for k in oracle[0]} | {"segments": 0}
            )
        for bucket, labels in scores:
            bucket.append(
                region_scores(labels, sample.truths) | {"segments": len(np.unique(labels))}
            )
    print(f"BSDS500 {args.split}, {len(ids)} images (every {args.every}th from {args.offset})\n")
    print("| setting (" + ":".join(FIELDS) + ") | mIoU | covering | VoI | median segments |")
    print("|---|---|---|---|---|")
    for name, recs in rows.items():
        mean = {k: np.mean([r[k] for r in recs]) for k in ("miou", "covering", "voi")}
        segs = np.median([r["segments"] for r in recs]) if recs[0]["segments"] else "-"
        print(
            f"| {name} | {mean['miou']:.3f} | {mean['covering']:.3f} | {mean['voi']:.2f} | "
            f"{segs} |"
        )


if __name__ == "__main__":
    main()
