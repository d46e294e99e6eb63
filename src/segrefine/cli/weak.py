"""Weak supervision: ``pseudo-masks`` (a dataset root of pseudo-masks from cheap labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from .options import Classes, Device, Quiet, Threads, split_classes

__all__ = ["register"]


def pseudo_masks_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root (VOC or folder layout).")],
    out: Annotated[Path, typer.Option(help="New dataset root (folder layout) to write: the "
                                      "images, their pseudo-masks, the real validation split.")],
    source: Annotated[str, typer.Option("--from", help="The cheap labels: boxes, tags, "
                                        "scribbles, or attention (no labels: a Stable "
                                        "Diffusion model's attention, StableSeg+).")
                      ] = "boxes",
    boxes: Annotated[Path | None, typer.Option(
        help='Boxes file (JSON): {"<image id>": [{"class": NAME, "x": .., "y": .., "w": .., '
             '"h": ..}, ...]}, pixels, (x, y) the top-left corner.')] = None,
    tags: Annotated[Path | None, typer.Option(
        help="Tags file: one line per image, '<image id> <class> [<class> ...]'.")] = None,
    negatives: Annotated[Path | None, typer.Option(
        help="With --from tags: a folder of images showing none of the classes (they teach "
             "the classifier what no class looks like; a one-class dataset needs them).")] = None,
    scribbles: Annotated[Path | None, typer.Option(
        help="With --from scribbles: a folder of <id>.png maps, class ids on the strokes and "
             "255 elsewhere, each the size of its image.")] = None,
    attention_model: Annotated[Path | None, typer.Option(
        help="With --from attention: a local Stable Diffusion folder (diffusers layout).")
    ] = None,
    fit_layer_weights: Annotated[bool, typer.Option(
        "--fit-layer-weights", help="With --from attention (StableSeg++): fit one weight per "
        "cross-attention layer on StableSeg+'s pseudo-masks (of up to 100 images), then make "
        "the pseudo-masks again with them; the weights are written to layer_weights.json for "
        "attention-segment --layer-weights.")
    ] = False,
    simulate_from_masks: Annotated[bool, typer.Option(
        "--simulate-from-masks", help="Derive the boxes (one per connected component of each "
        "class), tags (the classes present) or scribbles (a stroke down each region) from the "
        "split's real masks, for benchmarks.")
    ] = False,
    method: Annotated[str, typer.Option(help="Boxes: grabcut (GrabCut inside each box), or the "
                                        "baselines box (the box itself) and ellipse (the "
                                        "inscribed ellipse). Tags: grabcut (GrabCut in boxes "
                                        "around the class maps) or random-walker.")
                      ] = "grabcut",
    tag_box_threshold: Annotated[float, typer.Option(
        help="Tags with grabcut: share of a class map's maximum its boxes enclose (lower: "
             "larger boxes; sweep it on the training split).")] = 0.3,
    tag_box_pad: Annotated[float, typer.Option(
        help="Tags with grabcut: each box widened by this share of its size per side.")] = 0.1,
    rounds: Annotated[int, typer.Option(
        help="Simple-to-complex rounds: segmenters trained out-of-fold on the pseudo-masks "
             "re-make them (within the boxes / tags) this many times.")] = 0,
    round_epochs: Annotated[int, typer.Option(help="Epochs of each round's segmenters.")] = 20,
    classes: Classes = None,
    split: Annotated[str, typer.Option(help="Split to make pseudo-masks for.")] = "train",
    val_split: Annotated[str, typer.Option(help="Split copied with its real masks ('' = "
                                           "none).")] = "val",
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Pseudo-masks from boxes, image tags, scribbles or a diffusion model's attention: a
    dataset root train-segmenter trains on."""
    from ..weak import write_pseudo_dataset
    from ..weak.tags import TAG_METHODS, TagSettings

    if not 0 < tag_box_threshold <= 1 or not 0 <= tag_box_pad <= 1:
        raise InputError(f"--tag-box-threshold must be in (0, 1] and --tag-box-pad in [0, 1], "
                         f"got {tag_box_threshold:g} and {tag_box_pad:g}")  # fmt: skip
    settings = None
    if source == "tags" and method in TAG_METHODS:  # a bad method is reported below
        settings = TagSettings(method=method, box_threshold=tag_box_threshold,
                               box_pad=tag_box_pad)  # fmt: skip
    report = write_pseudo_dataset(data, out, source=source, boxes=boxes,
                                  simulate=simulate_from_masks, method=method,
                                  classes=split_classes(classes), split=split,
                                  val_split=val_split or None, progress=not quiet, tags=tags,
                                  negatives=negatives, attention_model=attention_model,
                                  scribbles=scribbles,
                                  rounds=rounds,
                                  round_epochs=round_epochs,
                                  fit_layer_weights=fit_layer_weights,
                                  tag_settings=settings, device=device)  # fmt: skip
    for r, q in enumerate(report.get("quality_by_round", [])[:-1]):
        typer.echo(f"round {r}: per-image IoU {q['mean_image_iou']:.2f}, mIoU {q['miou']:.2f}")
    q = report.get("quality")
    if q:
        typer.echo(f"pseudo-masks vs the real masks: per-image IoU {q['mean_image_iou']:.2f}, "
                   f"mIoU {q['miou']:.2f}, void {q['void_share']:.1f}% of pixels")  # fmt: skip
    if fit_layer_weights:
        typer.echo(f"cross-attention layer weights (StableSeg++) in {out / 'layer_weights.json'}")
    typer.echo(f"{report['num_images']} pseudo-masks in {report['seconds']} s; train with: "
               f"segrefine train-segmenter --data {out} --out RUN")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("pseudo-masks")(pseudo_masks_cmd)
