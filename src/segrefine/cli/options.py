"""Options shared by the commands, declared once. ``--device`` and ``--threads`` check (and
apply) themselves while the command line is parsed, so every command treats them alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError


def _device(value: str) -> str:
    from ..segmenting.segmenter import resolve_device

    try:  # an unknown or unavailable device is an input error now, naming the option
        resolve_device(value)
    except InputError as err:
        raise InputError(f"--device: {err.message}") from None
    return value


def _backend(value: str) -> str:
    from ..deploy.runtime import BACKENDS

    if value not in BACKENDS:
        raise InputError(f"--backend must be one of {', '.join(BACKENDS)}, got {value!r}")
    return value


def max_threads() -> int:
    """More threads than a few per core only slow PyTorch down, and each one is an OS thread
    (100000 of them exhaust the process before any work: "can't start new thread")."""
    return 4 * (os.cpu_count() or 1)


def _threads(value: int | None) -> int | None:
    if value is not None:
        if not 1 <= value <= max_threads():
            raise InputError(f"--threads must be in 1..{max_threads()} (4 per CPU core), "
                             f"got {value}")  # fmt: skip
        import torch

        torch.set_num_threads(value)
    return value


Device = Annotated[
    str, typer.Option(help="auto (CUDA when available, else CPU), cpu, or cuda.", callback=_device)
]
Threads = Annotated[
    int | None, typer.Option(help="CPU threads for PyTorch (default: PyTorch's choice).",
                             callback=_threads)  # fmt: skip
]
Backend = Annotated[
    str, typer.Option(help="What runs the networks: torch, or onnxruntime (the same pipeline; "
                      "the graphs are exported once into a cache, see `segrefine export "
                      "--onnx`; needs segrefine[onnx]; CPU only).", callback=_backend)
]
Quiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars, epoch lines or status lines "
                       "(notes, errors and the closing summary still print).")
]

Classes = Annotated[
    str | None,
    typer.Option(help="Comma-separated class names to keep, e.g. 'horse' (binary horse vs "
                 "background) or 'bird,cat,dog,horse,sheep'. Default: all classes."),
]  # fmt: skip
BinaryPerClass = Annotated[
    bool,
    typer.Option("--binary-per-class", help="With --classes: one binary class-vs-background "
                 "task per listed class, each over the images containing that class (the "
                 "paper's protocol)."),
]  # fmt: skip

Steps = Annotated[
    int | None,
    typer.Option(help="Denoising steps per sample (at least 1; default: the run's, which for "
                 "paper mode is DDPM over every timestep)."),
]  # fmt: skip
Strength = Annotated[
    float | None,
    typer.Option(help="Start the reverse process at t = strength * T (0 < strength <= 1; "
                 "default: the run's)."),
]  # fmt: skip
Samples = Annotated[
    int | None,
    typer.Option(help="Stochastic refinements averaged per image (their disagreement is the "
                 "uncertainty; default: the run's)."),
]  # fmt: skip
Flip = Annotated[
    bool | None,
    typer.Option("--flip/--no-flip",
                 help="Draw half of the samples on the left-right mirrored image (test-time "
                 "augmentation: same denoiser evaluations, a second encoder pass; needs "
                 "--samples >= 2; default: the run's setting, off unless recorded)."),
]  # fmt: skip


Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from its last saved state "
                       "with its saved settings (other options are ignored).")
]  # fmt: skip


def data_unless_resuming(data, resume: bool) -> str | None:
    """``--data`` as an absolute path (so ``--resume`` works from any folder); required for a
    new run, ignored when resuming."""
    if resume:
        return None
    if data is None:
        raise InputError("--data is required (unless --resume)")
    return str(data.resolve())


def check_output_file(path: Path | None, option: str) -> None:
    """A file the command will write, checked before any work (a folder given as the file
    would fail only after minutes of it, on a temporary file's name)."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{option} is a folder; give a file name", path)
    if not path.parent.is_dir():
        raise InputError(f"{option}: no such folder {path.parent}", path)


def split_classes(classes: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None or '' -> None (all classes)."""
    if not classes:
        return None
    return [c.strip() for c in classes.split(",") if c.strip()]
