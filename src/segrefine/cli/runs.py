"""``export``: a run folder as it should be shared, or its networks as ONNX graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError


def export_cmd(
    run: Annotated[
        Path,
        typer.Option(
            help="A segmenter or refiner run folder (or, with --onnx, zoo:NAME: both of its runs)."
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="New folder for the shareable copy.")] = None,
    onnx: Annotated[
        Path | None,
        typer.Option(
            help="New folder for the run's networks as ONNX graphs and "
            "onnx.json, what the pre- and post-processing needs "
            "(docs/onnx.md); needs segrefine[onnx]."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Copy a run without its training state and caches (config, weights, log): what
    Segmenter.load / Refiner.load and the web app need. Only the run's own regular files are
    copied (a link out of the run is refused); weights without a checksum get one. With
    --onnx, write its networks as ONNX graphs instead (or as well)."""
    if out is None and onnx is None:
        raise InputError("give --out (a shareable copy), --onnx (ONNX graphs) or both")
    written: list[Path] = []
    if onnx is not None:
        written += export_graphs(run, onnx)
    if out is not None:
        from ..deploy.share import export_run

        written += export_run(run, out)
    if quiet:
        return
    size = sum(p.stat().st_size for p in written) / 1e6
    typer.echo(f"exported {len(written)} files ({size:.1f} MB) to "
               f"{' and '.join(str(p) for p in (out, onnx) if p is not None)}")  # fmt: skip


def export_graphs(run: Path, folder: Path) -> list[Path]:
    """A run's graphs into ``folder``; a zoo entry's two runs into its ``segmenter/`` and
    ``refiner/``. Checked before anything is written: the folder is new or empty."""
    from .. import checkpoint, zoo
    from ..deploy import export_onnx

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError("--onnx: exists and is not an empty folder (exporting writes a new "
                         "one)", folder)  # fmt: skip
    if zoo.is_zoo(run):
        targets = [(kind, folder / kind) for kind in zoo.KINDS]
    else:
        kind = checkpoint.read_config(run, kind=zoo.KINDS)["kind"]
        targets = [(kind, folder)]
    written = []
    for kind, target in targets:
        model = _load(kind, run)
        export_onnx(model, target, source=str(run))
        written += [p for p in target.iterdir() if p.is_file()]
    return written


def _load(kind: str, run: Path):
    if kind == "segmenter":
        from ..segmenting.segmenter import Segmenter

        return Segmenter.load(run, device="cpu")
    from ..diffusion import Refiner

    return Refiner.load(run, device="cpu")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
