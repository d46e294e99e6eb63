"""``segrefine calibrate``: fit a refiner's temperature on held-out images
(:mod:`segrefine.diffusion.calibrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import Device, Quiet, Threads


def calibrate_cmd(
    refiner: Annotated[Path, typer.Option(help="A trained refiner's run folder (written: its "
                                          "config.json gains the fitted temperature).")],
    segmenter: Annotated[Path, typer.Option(help="A trained segmenter's run folder, or "
                                            "zoo:NAME: its predictions are refined.")],
    data: Annotated[Path, typer.Option(help="Dataset root with the ground truth.")],
    split: Annotated[str, typer.Option(help="Held-out split to fit on (never the training "
                                       "split).")] = "val",
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Fit one temperature so the refiner's probabilities mean what they say (ECE, and the
    uncertainty map's ranking of errors); refine and the web app apply it from then on."""
    from ..diffusion.calibrate import calibrate_refiner

    fit = calibrate_refiner(refiner, data, split, segmenter, device=device)
    if not quiet:
        typer.echo(f"NLL {fit['nll_before']:.4f} -> {fit['nll_after']:.4f} on {fit['images']} "
                   f"'{split}' images", err=True)  # fmt: skip
    typer.echo(f"temperature {fit['temperature']} written to {refiner}/config.json")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
