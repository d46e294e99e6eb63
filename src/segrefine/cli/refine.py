"""Refiner commands: ``train-refiner``, ``refine`` and ``benchmark``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError
from .options import (
    Backend,
    Device,
    Flip,
    Quiet,
    Resume,
    Samples,
    Steps,
    Strength,
    Threads,
    data_unless_resuming,
    split_classes,
)
from .renamed import renamed


def train_refiner_cmd(
    out: Annotated[Path, typer.Option(help="Run folder to create (or continue with --resume).")],
    data: Annotated[Path | None, typer.Option(help="Dataset root (VOC or folder layout).")] = None,
    split: Annotated[str, typer.Option(help="Training split.")] = "train",
    val_split: Annotated[
        str, typer.Option(help="Split scored during training ('' = none): refines the "
                          "segmenter's predictions when --segmenter is given, else fixed "
                          "degradations.")
    ] = "val",
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated classes to keep (default: all; taken from "
                     "--segmenter)."),
    ] = None,
    size: Annotated[
        int, typer.Option(help="Working size: training uses square crops of this side; "
                          "refinement puts the short side at it, aspect ratio kept.")
    ] = 128,
    mode: Annotated[
        str, typer.Option(help="default (conditional, x0, few steps) or paper.")
    ] = "default",
    segmenter: Annotated[
        Path | None,
        typer.Option(help="A trained segmenter's run folder: its architecture is retrained "
                     "out-of-fold to make realistic coarse masks (default mode)."),
    ] = None,
    iterations: Annotated[int, typer.Option(help="Optimisation steps.")] = 5500,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 16,
    crop: Annotated[
        int, typer.Option(help="Train on random square crops of this side, 4x cheaper steps "
                          "at 64 of 128 px (refinement still sees whole images; 0 = none).")
    ] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine).")] = 2e-3,
    oof_folds: Annotated[int, typer.Option(help="Folds for out-of-fold predictions.")] = 2,
    oof_epochs: Annotated[
        int | None, typer.Option(help="Epochs of each out-of-fold segmenter (default: the "
                                 "segmenter run's own).")
    ] = None,
    band: Annotated[
        int, typer.Option(help="Pixels around the coarse mask's boundaries that may change "
                          "(0 = anywhere).")
    ] = 6,
    seed: Annotated[int, typer.Option(help="Seed for weights, batches and noise.")] = 0,
    mixed_precision: Annotated[
        bool, typer.Option(help="bf16 autocast in training on CUDA and on CPUs with native "
                           "bf16 (--no-mixed-precision: float32 throughout).")
    ] = True,
    ema_decay: Annotated[
        float | None, typer.Option(help="Keep an exponential moving average of the weights "
                                   "with this decay and use it as the run's weights (0 = off; "
                                   "default: RefinerConfig's).")
    ] = None,
    validate_raw: Annotated[
        bool, typer.Option("--validate-raw", help="Also score the raw weights beside their "
                           "moving average at each validation (logged as val_raw; costs a "
                           "second validation).")
    ] = False,
    native: Annotated[
        bool, typer.Option("--native", help="Also learn to refine at the images' own "
                           "resolution: part of each batch is cropped at finer scales, and "
                           "refinement then continues at doubling scales up to each image's "
                           "size (default mode).")
    ] = False,
    native_share: Annotated[
        float, typer.Option(help="With --native: share of each batch cropped at finer scales "
                            "(the rest trains the working-size pass, which fixes regions).")
    ] = 0.25,
    truth_share: Annotated[
        float, typer.Option(help="With --native: share of the finer-scale crops given the "
                            "truth itself as their coarse input (to learn to leave a good "
                            "boundary alone).")
    ] = 0.2,
    class_agnostic: Annotated[
        bool, typer.Option("--class-agnostic", help="One refiner for any classes: every class "
                           "of the data is learned as object vs the rest (no --segmenter; "
                           "coarse masks from degradations), and refinement runs one class "
                           "against the rest on any label map.")
    ] = False,
    coarse: Annotated[
        Path | None, typer.Option(help="Your own model's predictions for the training images "
                                  "(a folder of masks by id, in any form refine --masks "
                                  "takes; out-of-fold, see the README): the refiner learns "
                                  "that model's errors, instead of --segmenter's.")
    ] = None,
    coarse_share: Annotated[
        float | None, typer.Option(help="Share of each batch whose coarse masks are "
                                   "--segmenter's out-of-fold predictions or --coarse's masks "
                                   "(the rest: degradations of the truth; default 0.75).")
    ] = None,
    init_from: Annotated[
        Path | None, typer.Option(help="Start from a trained refiner (its run folder, or "
                                  "zoo:NAME): every tensor whose shape fits is copied, class "
                                  "layers start fresh when the classes differ.")
    ] = None,
    resume: Resume = False,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Train a diffusion refiner (default or paper mode); resumable, logs to log.jsonl."""
    from ..diffusion import RefinerConfig, train_refiner

    cfg, root = None, data_unless_resuming(data, resume)
    if root is not None:
        cfg = RefinerConfig(
            data=root, split=split, val_split=val_split or None, size=size, mode=mode,
            classes=split_classes(classes),
            segmenter=_run_name(segmenter),
            iterations=iterations, batch_size=batch_size, crop=crop or None, lr=lr,
            oof_folds=oof_folds, oof_epochs=oof_epochs, band=band, seed=seed,
            mixed_precision=mixed_precision, validate_raw=validate_raw, native=native,
            native_share=native_share, truth_share=truth_share,
            class_agnostic=class_agnostic, coarse=str(coarse) if coarse else None,
            init_from=_run_name(init_from),
            **({} if ema_decay is None else {"ema_decay": ema_decay}),
            **({} if coarse_share is None else {"oof_fraction": coarse_share}),
        )  # fmt: skip
    best = train_refiner(cfg, out, resume=resume, device=device, progress=not quiet)
    if best.get("val"):
        v = best["val"]
        typer.echo(f"best step {best['step']}: per-image IoU {v['mean_image_iou']:.2f}, "
                   f"Boundary IoU {v['boundary_iou']:.2f}")  # fmt: skip
    typer.echo(f"run saved in {out}")


def _run_name(run: Path | None) -> str | None:
    """A run as the config records it: an absolute folder, or zoo:NAME as it is."""
    if run is None:
        return None
    return str(run) if str(run).startswith("zoo:") else str(run.resolve())


def describe_refiner(ref, run: Path, settings: dict) -> str:
    """One line on what refined the masks: the run, its classes, working size and scales."""
    if ref.spec.class_agnostic:
        classes = "class-agnostic (any classes, each against the rest)"
    else:
        names = ref.class_names[:8] + (("...",) if ref.num_classes > 8 else ())
        classes = f"{ref.num_classes} classes ({', '.join(names)})"
    scales = ("native: then finer scales up to each image's size" if settings["native"]
              else "not native: the working pass alone, resized back")  # fmt: skip
    return (f"refiner: {run} ({ref.mode} mode): {classes}; working size {ref.size} px "
            f"(short side); {scales}")


def refine_cmd(
    out: Annotated[
        Path, typer.Option(help="Folder for refined <id>.png, <id>.npy and <id>_uncertainty.png.")
    ],
    refiner: Annotated[
        Path, typer.Option(help="A trained refiner's run folder, or zoo:NAME.")
    ],
    images: Annotated[
        Path | None, typer.Option(help="Folder of images, one image, or a dataset root (then "
                                  "--split picks the images).")
    ] = None,
    video: Annotated[
        Path | None, typer.Option(help="A video file or a folder of frames, instead of --images: "
                                  "frames refined in order with a temporal prior, written as "
                                  "<frame>.png, <frame>_uncertainty.png and overlay.mp4; "
                                  "--masks named by frame (000000.png, ... for a video file).")
    ] = None,
    temporal_weight: Annotated[
        float, typer.Option(help="With --video: the previous frame's output, moved by "
                            "optical flow, as this share of each frame's refined probabilities "
                            "where the flow is reliable (0 = every frame alone).")
    ] = 0.5,
    save_probs: Annotated[
        bool, typer.Option("--save-probs", help="With --video: also write <frame>.npy "
                           "probabilities (float16, C x H x W).")
    ] = False,
    segmenter: Annotated[
        Path | None, typer.Option(help="A trained segmenter's run folder, or zoo:NAME: its "
                                  "predictions are the coarse masks.")
    ] = None,
    masks: Annotated[
        Path | None,
        typer.Option(help="Folder of masks from any model or tool, instead of --segmenter, "
                     "named <id>.png, <id>_mask.png, <id>-mask.png (any image format) or "
                     "<id>.npy: class ids, colour masks (VOC colours or a classes.txt of "
                     "'name R G B' lines), two-valued masks (0/255, any two greys or colours), "
                     "soft masks (8/16-bit grey, JPEG), RGBA cutouts (their alpha), H x W or "
                     "C x H x W probability maps."),
    ] = None,
    mask_pattern: Annotated[
        str | None, typer.Option(help="With --masks: how the mask files are named, e.g. "
                                 "'{id}_seg.png' ({id}: the image's name without extension).")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Refine the good inputs when some are bad, and "
                           "list the bad in one line (exit 2). Without it every input is "
                           "checked first and one bad input stops the run before any output.")
    ] = False,
    split: Annotated[str, typer.Option(help="Split when --images is a dataset.")] = "val",
    protocol: Annotated[
        bool, typer.Option("--protocol", help="The paper's square protocol: centre crop and "
                           "resize to the run's size (default: each image's own size).")
    ] = False,
    input_size: Annotated[
        int | None, typer.Option(help="With --masks: the short side (px) the maps or masks "
                                 "were predicted at, when saved upsampled to the images' size; "
                                 "a native refiner refines at finer scales only above it "
                                 "(default: found from soft maps; a full-size mask counts as "
                                 "drawn at full size).")
    ] = None,
    steps: Steps = None,
    strength: Strength = None,
    samples: Samples = None,
    flip: Flip = None,
    native: Annotated[
        bool | None, typer.Option("--native/--no-native", help="Refine at finer scales up to "
                                  "each image's size after the working size (default: as the "
                                  "refiner was trained; --no-native: the working pass alone, "
                                  "resized back).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the sampling noise.")] = 0,
    device: Device = "auto",
    threads: Threads = None,
    backend: Backend = "torch",
    quiet: Quiet = False,
) -> None:
    """Refine a segmenter's output (or saved probabilities / masks) with a trained refiner.

    Under accelerate launch the images are shared out between the processes.
    """
    from ..diffusion import Refiner
    from ..refine import refine_to_folder
    from ..segmenting.segmenter import Segmenter

    if (segmenter is None) == (masks is None):
        raise InputError("give exactly one of --segmenter or --masks")
    if (images is None) == (video is None):
        raise InputError("give exactly one of --images or --video")
    ref = Refiner.load(refiner, device, backend)
    seg = Segmenter.load(segmenter, device, backend) if segmenter is not None else None
    if video is not None:
        from ..video.outputs import refine_video_to_folder

        if protocol or skip_bad or flip:
            raise InputError("--protocol, --skip-bad and --flip are for --images, not --video")
        names = refine_video_to_folder(ref, video, out, segmenter=seg, masks=masks,
                                       mask_pattern=mask_pattern, weight=temporal_weight,
                                       save_probs=save_probs, steps=steps, strength=strength,
                                       samples=samples, native=native, input_size=input_size,
                                       seed=seed, notice=lambda m: typer.echo(
                                           f"segrefine: note: {m}", err=True))  # fmt: skip
        typer.echo(f"refined {len(names)} frames into {out}")
        return
    ids = refine_to_folder(ref, images, out, segmenter=seg, probs_dir=masks, split=split,
                           protocol=protocol,
                           steps=steps, strength=strength, samples=samples, seed=seed,
                           progress=not quiet, flip=flip, input_size=input_size,
                           native=native, mask_pattern=mask_pattern, skip_bad=skip_bad,
                           notice=lambda m: typer.echo(f"segrefine: note: {m}", err=True))
    if not quiet:  # after the work, so that a bad input stays a one-line error
        typer.echo(describe_refiner(ref, refiner, ref.settings(steps, strength, samples, flip,
                                                               native)), err=True)
    typer.echo(f"refined {len(ids)} images into {out}")


def benchmark_cmd(
    data: Annotated[Path, typer.Option(help="Dataset root with ground truth.")],
    segmenter: Annotated[Path, typer.Option(help="A trained segmenter's run folder, or "
                                            "zoo:NAME.")],
    refiner: Annotated[Path, typer.Option(help="A trained refiner's run folder, or zoo:NAME.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, results.json, figures.")],
    split: Annotated[str, typer.Option(help="Split to score.")] = "val",
    crf: Annotated[
        bool, typer.Option("--crf", help="Also score DenseCRF (needs the optional extra crf: "
                           "pip install 'segrefine[crf]')."),
    ] = False,
    other_segmenter: Annotated[
        list[Path] | None,
        typer.Option(metavar="<path>", help="Another segmenter's run folder, refined by the "
                     "same refiner (repeatable)."),
    ] = None,
    steps: Steps = None,
    strength: Strength = None,
    samples: Samples = None,
    flip: Flip = None,
    sweep: Annotated[
        str, typer.Option(help="Comma-separated step counts for the quality-vs-steps plot.")
    ] = "1,2,4,8",
    native: Annotated[
        bool, typer.Option("--native", help="Score at each image's own resolution (mBA "
                           "included): segmenter, refined, DenseCRF, the refiner squashed to "
                           "its square as before, and the refiner given the truth.")
    ] = False,
    device: Device = "auto",
    threads: Threads = None,
    backend: Backend = "torch",
    quiet: Quiet = False,
) -> None:
    """Segmenter vs segmenter + refiner (vs DenseCRF): tables, figures, speed, results.json."""
    from ..benchmarking import run_benchmark

    if native:
        from ..benchmarking import run_native_benchmark

        r = run_native_benchmark(data, split, segmenter, refiner, out, crf=crf, steps=steps,
                                 strength=strength, samples=samples, flip=flip, device=device,
                                 backend=backend)  # fmt: skip
        for name, v in r["rows"].items():
            typer.echo(f"{name:14s} " + "  ".join(f"{k} {v[k]}" for k in v))
        typer.echo(f"report: {out / 'report.md'}")
        return
    try:
        sweep_steps = tuple(int(s) for s in sweep.split(",") if s.strip())
    except ValueError as err:
        raise InputError(f"--sweep must be comma-separated integers, got '{sweep}'") from err
    r = run_benchmark(data, split, segmenter, refiner, out, crf=crf, steps=steps,
                      strength=strength, samples=samples, flip=flip, step_sweep=sweep_steps,
                      other_segmenters=tuple(other_segmenter or ()), device=device,
                      progress=not quiet, backend=backend)  # fmt: skip
    for name in ("baseline", "refined", "crf"):
        if name in r:
            v = r[name]
            mba = "n/a" if v["mba"] is None else f"{v['mba']:.2f}"
            typer.echo(f"{name:9s} per-image IoU {v['mean_image_iou']:.2f}  mIoU {v['miou']:.2f}"
                       f"  Boundary IoU {v['boundary_iou']:.2f}  "
                       f"boundary F {v['boundary_f']:.2f}  mBA {mba}")  # fmt: skip
    typer.echo(f"report: {out / 'report.md'}")


def register(app: typer.Typer) -> None:
    app.command("train-refiner")(train_refiner_cmd)
    app.command("refine", cls=renamed({"--probs": "--masks"}))(refine_cmd)
    app.command("benchmark", cls=renamed({"--other": "--other-segmenter"}))(benchmark_cmd)
