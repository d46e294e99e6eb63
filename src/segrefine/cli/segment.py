"""Segmenter commands: ``train-segmenter``, ``predict`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import (
    BinaryPerClass,
    Classes,
    Device,
    Quiet,
    Resume,
    Threads,
    data_unless_resuming,
    split_classes,
)


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
    resume: Resume = False,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Train a segmenter; keeps the best validation epoch, logs every epoch, resumable."""
    from ..train import TrainConfig, train_segmenter

    cfg, root = None, data_unless_resuming(data, resume)
    if root is not None:
        cfg = TrainConfig(
            data=root, split=split, val_split=val_split or None,
            classes=split_classes(classes), binary_per_class=binary_per_class, size=size,
            model=model, width=width, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr,
            augment=augment, seed=seed,
        )  # fmt: skip
    best = train_segmenter(cfg, out, resume=resume, device=device, progress=not quiet)
    if best:
        summary = best.get("val")
        msg = f"best epoch {best['epoch']}"
        if summary:
            msg += (f": per-image IoU {summary['mean_image_iou']:.2f}, mIoU {summary['miou']:.2f},"
                    f" Boundary IoU {summary['boundary_iou']:.2f}")
        typer.echo(f"{msg}\nrun saved in {out}")


def predict_cmd(
    model: Annotated[Path, typer.Option(help="Run folder of a trained segmenter.")],
    images: Annotated[
        Path, typer.Option(help="A folder of images, one image, or a dataset root (then "
                           "--split picks the images and the run's class selection applies).")
    ],
    out: Annotated[Path, typer.Option(help="Folder for <id>.png label maps (VOC palette).")],
    split: Annotated[str, typer.Option(help="Split to use when --images is a dataset.")] = "val",
    save_probs: Annotated[
        bool, typer.Option("--save-probs", help="Also write <id>.npy: float16 probabilities, "
                           "C x H x W, class order in classes.txt.")
    ] = False,
    protocol: Annotated[
        bool, typer.Option("--protocol", help="The paper's square protocol: centre crop and "
                           "resize to the run's size (default: each image's own size).")
    ] = False,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Predict label maps (and probabilities) with a trained segmenter.

    Under accelerate launch the images are shared out between the processes.
    """
    from ..predict import predict_to_folder
    from ..segmenter import Segmenter

    seg = Segmenter.load(model, device=device)
    ids = predict_to_folder(seg, images, out, split=split, save_probs=save_probs,
                            protocol=protocol, progress=not quiet)
    typer.echo(f"wrote {len(ids)} predictions to {out}")


def evaluate_cmd(
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
    from ..data.io import write_json
    from ..evaluate import evaluate_folder
    from ..metrics import format_table

    summary = evaluate_folder(pred, data, split, split_classes(classes), binary_per_class)
    typer.echo(format_table(summary))
    for name, task in summary.get("per_task", {}).items():
        typer.echo(f"{name}: per-image IoU {task['mean_image_iou']:.2f} "
                   f"({task['num_images']} images)")
    if json_out is not None:
        write_json(json_out, summary)
        typer.echo(f"metrics written to {json_out}")


def register(app: typer.Typer) -> None:
    app.command("train-segmenter")(train_segmenter_cmd)
    app.command("predict")(predict_cmd)
    app.command("evaluate")(evaluate_cmd)
