"""Unsupervised commands: ``cluster`` and ``cluster-benchmark``.

Clustering trains a small network per image on the CPU, so these commands take
``--threads`` and ``--quiet`` but no ``--device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import Quiet, Threads
from .renamed import renamed

__all__ = ["register"]


def cluster_cmd(
    images: Annotated[Path, typer.Option(help="A folder of images, or one image.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: <name>.png (colour-coded segments, "
            "stable palette) and <name>_labels.png (16-bit ids)."
        ),
    ],
    scribbles: Annotated[
        Path | None,
        typer.Option(
            help="Folder of scribble maps <name>.png (mode L/P, same size "
            "as the image; label ids 0..254, 255 = unmarked). The scribble labels "
            "fix the segments: every pixel gets one, output label k = scribble label k."
        ),
    ] = None,
    max_iter: Annotated[
        int,
        typer.Option(
            help="Most training steps per image (fewer steps leave more clusters). With "
            "scribbles: exactly this many steps."
        ),
    ] = 30,
    min_labels: Annotated[
        int,
        typer.Option(
            help="Stop training once at most this many clusters remain (more -> finer clusters)."
        ),
    ] = 3,
    merge_threshold: Annotated[
        float,
        typer.Option(
            help="Segment-count control: adjacent superpixels closer than this are merged "
            "(mean soft response, CIELAB colour and histogram, edge between them); "
            "larger -> fewer, larger segments. 0 = output clusters (as the paper)."
        ),
    ] = 24.0,
    connected: Annotated[
        bool,
        typer.Option(
            "--connected",
            help="With cluster output: split disjoint parts of a cluster into separate labels.",
        ),
    ] = False,
    max_side: Annotated[
        int,
        typer.Option(
            help="The network trains at this longest side; the "
            "labels are brought back to full size."
        ),
    ] = 120,
    max_input_side: Annotated[
        int,
        typer.Option(help="Images with a longer side are segmented at this size and upsampled."),
    ] = 1024,
    paper: Annotated[
        bool,
        typer.Option(
            "--paper",
            help="The published recipe (D=100, full "
            "size, up to 1000 steps, no superpixels); slow on a "
            "CPU. Other options still apply on top.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed (results are deterministic).")] = 0,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Segment images without labels (differentiable feature clustering)."""
    from ..unsupervised.run import cluster_paths, config_for_cli

    cfg = config_for_cli(
        paper=paper,
        max_iter=max_iter,
        min_labels=min_labels,
        merge_threshold=merge_threshold,
        connected=connected,
        max_side=max_side,
        max_input_side=max_input_side,
        seed=seed,
    )
    written = cluster_paths(images, out, cfg, scribbles=scribbles, progress=not quiet)
    typer.echo(f"wrote {len(written)} segmentations to {out}")


def cluster_benchmark_cmd(
    out: Annotated[Path, typer.Option(help="Folder for results.json, table.md, examples.png.")],
    data: Annotated[
        Path, typer.Option(help="BSDS500 root (images/<split>, segmentations/<split>).")
    ],
    split: Annotated[str, typer.Option(help="Split to run on.")] = "val",
    limit: Annotated[int | None, typer.Option(help="Only the first N images (sorted ids).")] = None,
    scribbles: Annotated[bool, typer.Option(help="Also run with automatic scribbles.")] = True,
    attention_model: Annotated[Path | None, typer.Option(
        help="A local Stable Diffusion folder (diffusers layout): adds a DiffSeg row "
             "(segments from its self-attention; no text, no training).")] = None,
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Benchmark the clustering method against k-means and Felzenszwalb on BSDS500."""
    from ..unsupervised.benchmark import results_table, run_cluster_benchmark

    results = run_cluster_benchmark(
        data,
        out,
        split=split,
        limit=limit,
        scribbles=scribbles,
        threads=threads,
        progress=not quiet,
        attention_model=attention_model,
    )
    typer.echo(results_table(results))
    typer.echo(f"results written to {out}")


def register(app: typer.Typer) -> None:
    """Add ``cluster`` and ``cluster-benchmark`` to ``app``."""
    app.command("cluster", cls=renamed(positional="--images"))(cluster_cmd)
    app.command("cluster-benchmark")(cluster_benchmark_cmd)
