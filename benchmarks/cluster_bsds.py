"""Benchmark: unsupervised segmentation on BSDS500 (clustering CNN vs k-means vs Felzenszwalb).

Runs :func:`segrefine.unsupervised.benchmark.run_cluster_benchmark` (the same function as
``segrefine cluster-benchmark``) and prints the Markdown table.

    python benchmarks/cluster_bsds.py --split val --limit 25 --out runs/cluster_val25
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segrefine.unsupervised.benchmark import results_table, run_cluster_benchmark

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bsds500"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "cluster_bsds")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-scribbles", action="store_true")
    args = p.parse_args(argv)
    results = run_cluster_benchmark(
        args.data,
        args.out,
        split=args.split,
        limit=args.limit,
        scribbles=not args.no_scribbles,
        threads=args.threads,
    )
    print(results_table(results))
    return results


if __name__ == "__main__":
    main()
