"""Segmenter commands: ``train-segmenter``, ``predict`` and ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .options import (
    Backend,
    BinaryPerClass,
    Classes,
    Device,
    Quiet,
    Resume,
    Threads,
    check_output_file,
    data_unless_resuming,
    split_classes,
)
from .renamed import renamed


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
    size: Annotated[
        int, typer.Option(help="Working size: training uses centred square crops resized to "
                          "this side; prediction puts the short side at it, aspect ratio kept.")
    ] = 128,
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
    init_from: Annotated[
        Path | None, typer.Option(help="Start from a trained segmenter (its run folder, or "
                                  "zoo:NAME): every tensor whose shape fits is copied, the "
                                  "class layer starts fresh when the classes differ.")
    ] = None,
    resume: Resume = False,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Train a segmenter; keeps the best validation epoch, logs every epoch, resumable."""
    from ..segmenting.train import TrainConfig, train_segmenter

    cfg, root = None, data_unless_resuming(data, resume)
    if root is not None:
        cfg = TrainConfig(
            data=root, split=split, val_split=val_split or None,
            classes=split_classes(classes), binary_per_class=binary_per_class, size=size,
            model=model, width=width, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr,
            augment=augment, seed=seed, init_from=None if init_from is None else (
                str(init_from) if str(init_from).startswith("zoo:") else str(init_from.resolve())),
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
    segmenter: Annotated[Path, typer.Option(help="A trained segmenter's run folder, or "
                                            "zoo:NAME.")],
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
    backend: Backend = "torch",
    quiet: Quiet = False,
) -> None:
    """Predict label maps (and probabilities) with a trained segmenter.

    Under accelerate launch the images are shared out between the processes.
    """
    from ..segmenting.predict import predict_to_folder
    from ..segmenting.segmenter import Segmenter

    seg = Segmenter.load(segmenter, device=device, backend=backend)
    ids = predict_to_folder(seg, images, out, split=split, save_probs=save_probs,
                            protocol=protocol, progress=not quiet)
    typer.echo(f"wrote {len(ids)} predictions to {out}")


def evaluate_cmd(
    masks: Annotated[Path, typer.Option(help="Folder of predictions by id, in any form "
                                        "refine --masks takes (what predict and refine "
                                        "write, or any tool's; soft ones at 0.5).")],
    data: Annotated[
        Path | None, typer.Option(help="Dataset root with the ground truth (or --truth).")
    ] = None,
    truth: Annotated[
        Path | None, typer.Option(help="Folder of truth masks by id, in the same forms, "
                                  "instead of --data (classes from a classes.txt there or "
                                  "beside the predictions).")
    ] = None,
    mask_pattern: Annotated[
        str | None, typer.Option(help="How the prediction files are named, e.g. "
                                 "'{id}_seg.png'.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to score (with --data).")] = "val",
    classes: Classes = None,
    binary_per_class: BinaryPerClass = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write all metrics (and per-image scores) "
                                  "to this JSON file.")
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="With --json: print nothing (the metrics are "
                           "in the file).")
    ] = False,
) -> None:
    """Score predictions: per-image IoU, mIoU, Boundary IoU, boundary F, mBA, pixel accuracy
    and per-class IoU (per task too with --binary-per-class)."""
    from ..data.io import write_json
    from ..evaluate import evaluate_folder
    from ..metrics import format_table

    check_output_file(json_out, "--json")
    summary = evaluate_folder(masks, data, split, split_classes(classes), binary_per_class,
                              truth=truth, mask_pattern=mask_pattern)
    if json_out is not None:
        write_json(json_out, summary)
        if quiet:
            return
    typer.echo(format_table(summary))
    for name, task in summary.get("per_task", {}).items():
        typer.echo(f"{name}: per-image IoU {task['mean_image_iou']:.2f} "
                   f"({task['num_images']} images)")
    if json_out is not None:
        typer.echo(f"metrics written to {json_out}")


def register(app: typer.Typer) -> None:
    app.command("train-segmenter")(train_segmenter_cmd)
    app.command("predict", cls=renamed({"--model": "--segmenter"}))(predict_cmd)
    app.command("evaluate", cls=renamed({"--pred": "--masks"}))(evaluate_cmd)
