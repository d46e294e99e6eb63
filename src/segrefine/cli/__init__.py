"""The ``segrefine`` command line: a thin layer over the Python API, one module per group of
commands (``segment``, ``refine``, ``cluster``, ``serve``, ``runs``) and the options they share
(``options``).

Every command validates its inputs through the library; an :class:`InputError` becomes one
line on stderr and exit code 2 (the same code Click uses for usage errors).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..errors import InputError
from . import attention, calibrate, cluster, refine, runs, segment, serve, weak, zoo

app = typer.Typer(
    name="segrefine",
    help="Semantic segmentation refined by a diffusion model: train segmenters and refiners, "
    "predict, refine, evaluate, benchmark; unsupervised clustering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain Click help: flags read as flags (rich help shows "--save-probs <bool>")
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"segrefine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """segrefine: better masks from any segmenter, with the evidence."""


for _group in (segment, refine, calibrate, weak, attention, serve, cluster, runs, zoo):
    _group.register(app)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """segrefine's own warnings as one line, like its errors (Python's format adds the
    warning's source line); other libraries' keep theirs."""
    text = str(message)
    if filename.startswith(_PACKAGE) or text.startswith("segrefine: "):
        typer.echo(f"segrefine: warning: {text.removeprefix('segrefine: ')}", err=True)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_PACKAGE = str(Path(__file__).resolve().parents[1])
_default_show_warning = warnings.showwarning


def main() -> None:
    """Console entry point: run the app, turning input errors into one line and exit code 2."""
    warnings.showwarning = _show_warning
    try:
        app(prog_name="segrefine")  # the same name however it was started (-m, a venv path)
    except InputError as err:
        typer.echo(f"segrefine: error: {err}", err=True)
        sys.exit(2)
    except OSError as err:  # a full or read-only disk, a path that is a file: one line too
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"segrefine: error: {where}{err.strerror or err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("segrefine: interrupted", err=True)
        sys.exit(130)


__all__ = ["app", "main"]
