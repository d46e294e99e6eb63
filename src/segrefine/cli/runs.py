"""``export``: a run folder as it should be shared."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_cmd(
    run: Annotated[Path, typer.Option(help="A segmenter or refiner run folder.")],
    out: Annotated[Path, typer.Option(help="New folder for the shareable copy.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")]
    = False,
) -> None:
    """Copy a run without its training state and caches (config, weights, log): what
    Segmenter.load / Refiner.load and the web app need. Only the run's own regular files are
    copied (a link out of the run is refused); weights without a checksum get one."""
    from ..export import export_run

    written = export_run(run, out)
    if quiet:
        return
    size = sum(p.stat().st_size for p in written) / 1e6
    typer.echo(f"exported {len(written)} files ({size:.1f} MB) to {out}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
