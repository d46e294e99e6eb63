"""``segrefine zoo``: the trained models shipped with segrefine (:mod:`segrefine.zoo`)."""

from __future__ import annotations

from typing import Annotated

import typer

ROWS = (("segmenter", "alone"), ("refined", "refined"), ("crf", "DenseCRF"))


def zoo_cmd(
    name: Annotated[
        str | None, typer.Argument(help="An entry to show in full (its model card).")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check every entry's files against the "
                           "manifest's SHA-256.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="The list alone, without the closing lines "
                           "(with --verify, the exit code says whether the files match).")
    ] = False,
) -> None:
    """List the zoo's models with their validation scores; use one as --segmenter zoo:NAME
    and --refiner zoo:NAME anywhere a run is taken."""
    from .. import zoo

    if name is not None:
        name = name.removeprefix(zoo.PREFIX)
        zoo.entry(name)  # an unknown name: one line listing the known
        if verify:
            zoo.verify(name)
        typer.echo(zoo.card(name).read_text())
        return
    names = zoo.names()
    if not names:
        typer.echo("no zoo models installed")
        return
    for n in names:
        record = zoo.entry(n)
        if verify:
            zoo.verify(n)
        typer.echo(f"zoo:{n}  {record['title']}  ({', '.join(record['runs'])})")
        scores = record.get("scores", {})
        for row, label in ROWS:
            if row in scores:
                v = scores[row]
                typer.echo(f"    {label:9s} per-image IoU {v['mean_image_iou']:.2f}  mIoU "
                           f"{v['miou']:.2f}  Boundary IoU {v['boundary_iou']:.2f}  mBA "
                           f"{v['mba']:.2f}")  # fmt: skip
    if quiet:
        return
    typer.echo("(validation split, each image at its own size; `segrefine zoo NAME` shows the "
               "model card)")
    if verify:
        typer.echo("all files match the manifest")


def register(app: typer.Typer) -> None:
    app.command("zoo")(zoo_cmd)
