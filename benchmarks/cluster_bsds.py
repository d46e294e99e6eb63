"""Benchmark: unsupervised segmentation on BSDS500 (clustering CNN vs k-means vs Felzenszwalb).

Runs :func:`segrefine.unsupervised.benchmark.run_cluster_benchmark` (the same function as
``segrefine cluster-benchmark``) and prints the Markdown table. ``--set KEY=VALUE`` changes one
field of ``ClusterConfig`` for the clustering rows (for ablations; baselines are unaffected).

    python benchmarks/cluster_bsds.py --split val --limit 25 --out runs/cluster_val25
    python benchmarks/cluster_bsds.py --limit 10 --set scribble_coords=false --out runs/abl
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace
from pathlib import Path

from segrefine.unsupervised.benchmark import results_table, run_cluster_benchmark
from segrefine.unsupervised.cluster import ClusterConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "bsds500"


def parse_setting(text: str) -> tuple[str, object]:
    """``"key=value"`` -> (key, value typed like the ``ClusterConfig`` default)."""
    key, sep, value = text.partition("=")
    names = {f.name for f in fields(ClusterConfig)}
    if not sep or key not in names:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY one of {sorted(names)}")
    default = getattr(ClusterConfig(), key)
    try:
        if value.lower() == "none":
            return key, None
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return key, value.lower() == "true"
        if isinstance(default, float):
            return key, float(value)
        return key, int(value)  # int fields, and the int-or-None ones (width, max_side)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad value for {key}: {value!r}") from None


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "cluster_bsds")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--no-scribbles", action="store_true")
    p.add_argument(
        "--set",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one ClusterConfig field, e.g. merge_threshold=8 (repeatable)",
    )
    args = p.parse_args(argv)
    results = run_cluster_benchmark(
        args.data,
        args.out,
        split=args.split,
        limit=args.limit,
        config=replace(ClusterConfig(), **dict(args.set)),
        scribbles=not args.no_scribbles,
        threads=args.threads,
    )
    print(results_table(results))
    return results


if __name__ == "__main__":
    main()
