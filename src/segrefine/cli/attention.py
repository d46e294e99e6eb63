"""Training-free segmentation from a diffusion model's attention: ``attention-segment``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from tqdm.auto import tqdm

from ..errors import InputError
from .options import Device, Quiet, Threads
from .renamed import renamed

__all__ = ["register"]


def attention_segment_cmd(
    attention_model: Annotated[Path, typer.Option(
        help="A local Stable Diffusion folder in the diffusers layout (model_index.json, unet/, "
             "vae/, text_encoder/, tokenizer/, scheduler/). Nothing is downloaded.")],
    classes: Annotated[str, typer.Option(help="Comma-separated class names, any words, e.g. "
                                         "'horse,grass,sky' or 'car,traffic light'.")],
    images: Annotated[Path, typer.Option(help="A folder of images, or one image.")],
    out: Annotated[Path, typer.Option(help="Folder for <id>.png labels (VOC palette), <id>.npy "
                                      "class probabilities and classes.txt.")],
    threshold: Annotated[float, typer.Option(help="Without a 'background' class: pixels whose "
                                             "best class scores below this are background.")
                         ] = 0.3,
    sar: Annotated[bool, typer.Option(help="Refine the class maps with the U-Net's "
                                      "self-attention.")] = True,
    resolution: Annotated[int | None, typer.Option(
        help="Side the image is resized to for the model (a multiple of 32 for Stable "
             "Diffusion; default: the size the model was trained at).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the small noise added to the latent.")] = 0,
    layer_weights: Annotated[Path | None, typer.Option(
        help="A layer_weights.json (from pseudo-masks --fit-layer-weights, StableSeg++): "
             "weight the cross-attention layers by it instead of averaging them. It must come "
             "from the same model; its classes need not be these.")] = None,
    device: Device = "auto",
    threads: Threads = None,
    quiet: Quiet = False,
) -> None:
    """Segment images with no training from a Stable Diffusion U-Net's attention (StableSeg)."""
    from ..attention import load_attention_model, load_layer_weights
    from ..attention.model import MAX_RESOLUTION
    from ..data.io import atomic_path, read_image, write_label_png, write_npy

    # every option is checked before the model is read and before --out is made
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold must be in [0, 1], got {threshold:g}")
    if resolution is not None and not 1 <= resolution <= MAX_RESOLUTION:
        raise InputError(f"--resolution must be in 1..{MAX_RESOLUTION}, got {resolution}")
    if out.exists() and not out.is_dir():
        raise InputError("--out is a file, not a folder", out)
    names = [c.strip() for c in classes.split(",")]
    files = [images] if images.is_file() else None
    if files is None:
        from ..data.io import list_images

        files = list_images(images)
    if not files:
        raise InputError("no images found", images)
    for f in files:  # every input is checked before the first output is written
        read_image(f)
    net = load_attention_model(attention_model, device=device, resolution=resolution,
                               progress=not quiet)  # fmt: skip
    # the classes and weights are checked too before the first U-Net pass and output
    net.check_prompt(names)
    weights = None if layer_weights is None else load_layer_weights(layer_weights,
                                                                    net.cross_layer_names)
    out.mkdir(parents=True, exist_ok=True)
    result = None
    for f in tqdm(files, desc="attention-segment", disable=quiet, leave=False):
        result = net.segment(read_image(f), names, threshold=threshold, sar=sar, seed=seed,
                             layer_weights=weights)  # fmt: skip
        write_label_png(out / f"{f.stem}.png", result.labels)
        write_npy(out / f"{f.stem}.npy", result.probs.astype(np.float16))
    with atomic_path(out / "classes.txt") as tmp:  # a failed write names the file
        tmp.write_text("\n".join(result.class_names) + "\n", encoding="utf-8")
    typer.echo(f"segmented {len(files)} images into {out} (classes: "
               f"{', '.join(result.class_names)})")  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("attention-segment", cls=renamed({"--model": "--attention-model"}))(
        attention_segment_cmd)
