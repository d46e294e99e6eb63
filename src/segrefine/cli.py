"""The ``segrefine`` command line: a thin layer over the Python API.

Every command validates its inputs through the library; an :class:`InputError` becomes one
line on stderr and exit code 2 (the same code Click uses for usage errors).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import InputError

app = typer.Typer(
    name="segrefine",
    help="Semantic segmentation refined by a diffusion model: train segmenters and refiners, "
    "predict, refine, evaluate, benchmark; unsupervised clustering.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Options shared by several commands, declared once.
Classes = Annotated[
    str | None,
    typer.Option(help="Comma-separated class names to keep, e.g. 'horse' (binary horse vs "
                 "background) or 'bird,cat,dog,horse,sheep'. Default: all classes."),
]
BinaryPerClass = Annotated[
    bool,
    typer.Option("--binary-per-class", help="With --classes: one binary class-vs-background "
                 "task per listed class, each over the images containing that class (the "
                 "paper's protocol)."),
]
Device = Annotated[
    str, typer.Option(help="auto (CUDA when available, else CPU), cpu, or cuda.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or epoch lines.")]


def _split_classes(classes: str | None) -> list[str] | None:
    if not classes:
        return None
    return [c.strip() for c in classes.split(",") if c.strip()]


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


@app.command("train-segmenter")
def train_segmenter_cmd(
    out: Annotated[Path, typer.Option(help="Run folder to create (or continue with --resume).")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset root: PASCAL VOC or folder layout. "
                                  "Not needed with --resume.")
    ] = None,
    split: Annotated[str, typer.Option(help="Training split.")] = "train",
    val_split: Annotated[
        str, typer.Option(help="Validation split scored every epoch; '' for none.")
    ] = "val",
    classes: Classes = None,
    binary_per_class: BinaryPerClass = False,
    size: Annotated[int, typer.Option(help="Images are square-cropped and resized to this.")] = 128,
    model: Annotated[
        str, typer.Option(help="Architecture: unet, fcn, deeplabv3plus or pspnet.")
    ] = "unet",
    width: Annotated[int, typer.Option(help="Channels of the first stage (doubling per stage).")]
    = 16,
    depth: Annotated[int, typer.Option(help="Number of downsampling stages.")] = 4,
    epochs: Annotated[int, typer.Option(help="Number of passes over the training split.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Images per optimisation step.")] = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 2e-3,
    augment: Annotated[
        bool, typer.Option(help="Random flip, scale/crop and colour jitter while training.")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed for weights, data order and augmentation.")] = 0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last epoch "
                           "with its saved settings (other options are ignored).")
    ] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Train a segmenter; keeps the best validation epoch, logs every epoch, resumable."""
    from .train import TrainConfig, train_segmenter

    cfg = None
    if not resume:
        if data is None:
            raise InputError("--data is required (unless --resume)")
        cfg = TrainConfig(
            data=str(data), split=split, val_split=val_split or None,
            classes=_split_classes(classes), binary_per_class=binary_per_class, size=size,
            model=model, width=width, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr,
            augment=augment, seed=seed,
        )  # fmt: skip
        _check_model_name(model)
    best = train_segmenter(cfg, out, resume=resume, device=device, progress=not quiet)
    if best:
        summary = best.get("val")
        msg = f"best epoch {best['epoch']}"
        if summary:
            msg += (f": per-image IoU {summary['mean_image_iou']:.2f}, mIoU {summary['miou']:.2f},"
                    f" Boundary IoU {summary['boundary_iou']:.2f}")
        typer.echo(f"{msg}\nrun saved in {out}")


def _check_model_name(name: str) -> None:
    from .models import available_segmenters

    if name not in available_segmenters():
        raise InputError(f"unknown model '{name}'; choose from {', '.join(available_segmenters())}")


@app.command()
def predict(
    model: Annotated[Path, typer.Option(help="Run folder of a trained segmenter.")],
    images: Annotated[
        Path, typer.Option(help="A folder of images, one image, or a dataset root (then "
                           "--split picks the images and the run's protocol is applied).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for <id>.png label maps (VOC palette).")],
    split: Annotated[str, typer.Option(help="Split to use when --images is a dataset.")] = "val",
    save_probs: Annotated[
        bool, typer.Option("--save-probs", help="Also write <id>.npy: float16 probabilities, "
                           "C x H x W, class order in classes.txt.")
    ] = False,
    keep_size: Annotated[
        bool, typer.Option("--keep-size", help="Resize outputs back to each image's own size "
                           "(no square crop) instead of the run's protocol size.")
    ] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """Predict label maps (and probabilities) with a trained segmenter."""
    from .predict import predict_to_folder
    from .segmenter import Segmenter

    seg = Segmenter.load(model, device=device)
    ids = predict_to_folder(seg, images, out, split=split, save_probs=save_probs,
                            keep_size=keep_size, progress=not quiet)
    typer.echo(f"wrote {len(ids)} predictions to {out}")


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Option(help="Folder of predicted <id>.png label maps.")],
    data: Annotated[Path, typer.Option(help="Dataset root with the ground truth.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "val",
    classes: Classes = None,
    binary_per_class: BinaryPerClass = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write all metrics (and per-image scores) "
                                  "to this JSON file.")
    ] = None,
) -> None:
    """Score predictions: per-image IoU, mIoU, per-class IoU, Boundary IoU, boundary F."""
    from .data.io import write_json
    from .evaluate import evaluate_folder
    from .metrics import format_table

    summary = evaluate_folder(pred, data, split, _split_classes(classes), binary_per_class)
    typer.echo(format_table(summary))
    for name, task in summary.get("per_task", {}).items():
        typer.echo(f"{name}: per-image IoU {task['mean_image_iou']:.2f} "
                   f"({task['num_images']} images)")
    if json_out is not None:
        write_json(json_out, summary)
        typer.echo(f"metrics written to {json_out}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the data, run, predictions and report.")]
    = Path("demo_out"),
    epochs: Annotated[int, typer.Option(help="Training epochs for the demo segmenter.")] = 25,
    refiner_iterations: Annotated[
        int, typer.Option(help="Training steps for the demo refiner (0 = no refiner).")
    ] = 1200,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The main job in one command: synthetic data, a U-Net, a diffusion refiner, a report."""
    from .demo import run_demo

    report = run_demo(out, epochs=epochs, refiner_iterations=refiner_iterations, device=device,
                      progress=not quiet)
    typer.echo(f"report: {report}")


@app.command()
def serve(
    runs: Annotated[Path, typer.Option(help="Folder searched (3 levels deep) for segmenter and "
                                       "refiner runs to offer on the page.")] = Path("runs"),
    host: Annotated[str, typer.Option(help="Address to listen on; 127.0.0.1 = this machine "
                                      "only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    max_megapixels: Annotated[float, typer.Option(help="Refuse uploads larger than this many "
                                                  "megapixels.")] = 20.0,
    device: Device = "auto",
) -> None:
    """Local web app: upload an image, segment, refine, see uncertainty; cluster with scribbles."""
    from .segmenter import resolve_device
    from .web import serve as serve_app

    if max_megapixels <= 0:
        raise typer.BadParameter("must be positive", param_hint="--max-megapixels")
    if not runs.is_dir():
        typer.echo(f"segrefine: note: {runs}: no such folder yet; the page will say so", err=True)
    serve_app(runs, host, port, max_megapixels, str(resolve_device(device)))


def _register_subcommands() -> None:
    from .diffusion.cli import register as register_refiner
    from .unsupervised.cli import register as register_unsupervised

    register_refiner(app)
    register_unsupervised(app)


_register_subcommands()


def main() -> None:
    """Console entry point: run the app, turning input errors into one line and exit code 2."""
    try:
        app()
    except InputError as err:
        typer.echo(f"segrefine: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("segrefine: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["app", "main"]
