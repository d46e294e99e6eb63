"""``demo`` (the main job in one command) and ``serve`` (the local web app)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from .options import Backend, Device, Quiet, Threads


def demo_cmd(
    out: Annotated[
        Path, typer.Option(help="Folder for the data, run, predictions and report.")
    ] = Path("demo_out"),
    epochs: Annotated[int, typer.Option(help="Training epochs for the demo segmenter.")] = 25,
    refiner_iterations: Annotated[
        int, typer.Option(help="Training steps for the demo refiner (0 = no refiner).")
    ] = 1200,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """The main job in one command: synthetic data, a U-Net, a diffusion refiner, a report."""
    from ..demo import run_demo

    if refiner_iterations < 0:
        raise InputError(f"--refiner-iterations must be 0 or more, got {refiner_iterations}")
    report = run_demo(out, epochs=epochs, refiner_iterations=refiner_iterations, device=device,
                      progress=not quiet)  # fmt: skip
    typer.echo(f"report: {report}")
    typer.echo(f"see it in the browser: segrefine serve --runs {out}")


def serve_cmd(
    runs: Annotated[
        Path | None,
        typer.Option(
            help="Folder searched (3 levels deep) for segmenter and refiner runs to offer on the "
            "page (default: runs/, or demo_out/ when only that exists)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 127.0.0.1 = this machine only.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(help="Port to listen on (1-65535; 0: any free one, shown at start).")
    ] = 7860,
    # the default is web.inputs.DEFAULT_MAX_MEGAPIXELS (not imported: that loads the web app)
    max_megapixels: Annotated[
        float,
        typer.Option(
            help="Refuse uploads larger than this many "
            "megapixels (the default takes a 12 MP phone "
            "photo, whose job peaks under 1.5 GB)."
        ),
    ] = 13.0,
    max_upload_mb: Annotated[
        float, typer.Option(help="Refuse request bodies larger than this many MB.")
    ] = 64.0,
    max_pending: Annotated[
        int, typer.Option(help="Jobs that may wait or run at once; one more is refused (429).")
    ] = 8,
    # the default is web.jobs.DEFAULT_TIMEOUT (not imported, as above)
    job_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds one job may run before it ends "
            "with an error (the server has one worker: a "
            "12 MP photo takes about 25 s)."
        ),
    ] = 300.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            metavar="<str>",
            help="Another host name the server answers to "
            "(repeatable; the loopback names and --host always are). Other names "
            "are refused.",
        ),
    ] = None,
    attention_model: Annotated[
        Path | None,
        typer.Option(
            help="A local Stable Diffusion folder (diffusers layout): adds the 'Attention (no "
            "training)' tab, segmenting into any class names from the U-Net's attention. "
            "Loaded once at startup; needs transformers."
        ),
    ] = None,
    device: Device = "auto",
    threads: Threads = None,
    backend: Backend = "torch",
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="No status lines (notes, errors and the line with the address still print).",
        ),
    ] = False,
) -> None:
    """Local web app: upload an image, segment, refine, see uncertainty; cluster with scribbles."""
    from ..segmenting.segmenter import resolve_device
    from ..web import serve as serve_app

    if not 0 < max_megapixels <= 500:
        raise InputError(f"--max-megapixels must be in (0, 500], got {max_megapixels:g}")
    if not 0 < max_upload_mb <= 4096:
        raise InputError(f"--max-upload-mb must be in (0, 4096], got {max_upload_mb:g}")
    if not 1 <= max_pending <= 1000:
        raise InputError(f"--max-pending must be in 1..1000, got {max_pending}")
    if not 1 <= job_timeout <= 86400:  # NaN fails too
        raise InputError(f"--job-timeout must be in 1..86400 seconds, got {job_timeout:g}")
    if not 0 <= port <= 65535:  # before the runs and models load
        raise InputError(f"--port must be in 0..65535, got {port}")
    for name in allow_host or ():  # a pattern would undo the Host check (DNS rebinding)
        if not re.fullmatch(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]", name):
            raise InputError(
                f"--allow-host {name!r}: give a host name or IP address (no "
                "wildcards: the server answers only to names it is given)"
            )
    if runs is None:  # runs/, or after `make demo` the demo's; else the zoo alone
        found = [p for p in (Path("runs"), Path("demo_out")) if p.is_dir()]
        runs = found[0] if found else None
        if not quiet:
            where = f"the runs in {runs}/ and " if runs else ""
            typer.echo(f"serving {where}the model zoo (--runs to choose a folder)", err=True)
    elif not runs.is_dir():
        typer.echo(f"segrefine: note: {runs}: no such folder yet; the page will say so", err=True)
    attention = None
    if attention_model is not None:  # a bad folder: one line and exit 2, before serving
        from ..attention import load_attention_model

        if not quiet:
            typer.echo(f"loading the attention model in {attention_model} ...", err=True)
        attention = load_attention_model(attention_model, device=device, progress=not quiet)
    if backend != "torch" and str(resolve_device(device)) != "cpu":
        raise InputError("--backend onnxruntime runs on the CPU: use --device cpu")
    serve_app(
        runs,
        host,
        port,
        max_megapixels,
        str(resolve_device(device)),
        tuple(allow_host or ()),
        max_upload_mb,
        max_pending,
        attention,
        job_timeout,
        backend=backend,
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
    app.command("serve")(serve_cmd)
