"""Loading a Stable Diffusion model from a local folder in the diffusers layout.

Only local files are read (``local_files_only=True``): nothing is downloaded. Every way a
folder can be wrong (absent, not a diffusers layout, a component missing or unreadable)
becomes one :class:`~segrefine.errors.InputError` line naming the part at fault, instead of
a traceback from deep inside diffusers or transformers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import InputError
from ..segmenting.segmenter import resolve_device
from .model import AttentionModel, check_resolution_bound

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
INDEX = "model_index.json"


def _check_layout(path: Path) -> None:
    if not path.exists():
        raise InputError("no such model folder", path)
    if not path.is_dir():
        raise InputError("not a folder (expected a diffusers Stable Diffusion folder)", path)
    index = path / INDEX
    if not index.is_file():
        raise InputError(f"{INDEX} is missing: not a diffusers Stable Diffusion folder", path)
    try:
        json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable model index ({type(err).__name__})", index) from err
    for name in COMPONENTS:
        if not (path / name).is_dir():
            raise InputError(f"the {name}/ component folder is missing", path / name)
    # transformers builds an empty tokenizer from a folder without vocabulary files, silently
    tok = path / "tokenizer"
    if not (tok / "tokenizer.json").is_file():
        for name in ("vocab.json", "merges.txt"):
            if not (tok / name).is_file():
                raise InputError(f"the tokenizer's {name} is missing", tok / name)


def _load(name: str, path: Path, loader, **kwargs):
    """``loader.from_pretrained(path, subfolder=name)``, with any failure made one line."""
    try:
        return loader.from_pretrained(str(path), subfolder=name, local_files_only=True, **kwargs)
    except Exception as err:  # every library error becomes a one-line user error here
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise InputError(f"cannot load the {name} component ({type(err).__name__}: {first})",
                         path / name) from err  # fmt: skip


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """Without diffusers' and transformers' weight-loading progress bars (restored after)."""
    import transformers
    from diffusers.utils import logging as diffusers_logging

    libraries = (transformers.utils.logging, diffusers_logging)
    shown = [lib.is_progress_bar_enabled() for lib in libraries]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, on in zip(libraries, shown, strict=True):
            if on:
                lib.enable_progress_bar()


def load_attention_model(
    path: str | Path, device: str = "auto", dtype: torch.dtype | None = None,
    resolution: int | None = None, max_self_tokens: int = 32 * 32, progress: bool = True,
) -> AttentionModel:
    """Load the Stable Diffusion folder ``path`` for :meth:`AttentionModel.segment`.

    ``device`` "auto" picks CUDA when available. ``dtype`` defaults to float16 on CUDA and
    float32 on the CPU; it applies to the U-Net and text encoder, while the VAE (used once
    per image, to encode) stays float32, since some SD VAEs overflow in float16.
    ``resolution`` is the square side images are resized to before encoding (default: the
    size the model was trained at, its U-Net's sample size times the VAE's downsampling:
    512 for Stable Diffusion 1.x);
    ``max_self_tokens`` bounds which self-attention layers are recorded (HW <= it: the
    32 x 32 and coarser layers of SD at 512 px, a few MB each). ``progress=False`` hides
    the libraries' weight-loading bars (``--quiet``).
    """
    try:
        import transformers
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    except ImportError as err:
        raise InputError("the attention segmenter needs transformers: "
                         "pip install 'segrefine[attention]'") from err  # fmt: skip
    if resolution is not None:  # before the weights are read: they take a while
        check_resolution_bound(resolution)
    path = Path(path).expanduser()
    _check_layout(path)
    dev = resolve_device(device)
    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32

    with contextlib.nullcontext() if progress else _quiet_libraries():
        tokenizer = _load("tokenizer", path, transformers.CLIPTokenizer)
        text_encoder = _load("text_encoder", path, transformers.CLIPTextModel)
        unet = _load("unet", path, UNet2DConditionModel, torch_dtype=dtype)
        vae = _load("vae", path, AutoencoderKL, torch_dtype=torch.float32)
        # Only add_noise is used, and every SD scheduler shares the training noise schedule
        # (betas) with DDPM; DDPM's add_noise is the variance-preserving noising the U-Net saw
        scheduler = _load("scheduler", path, DDPMScheduler)
    if getattr(unet.config, "addition_embed_type", None) is not None:
        raise InputError("this U-Net needs added conditions (an SDXL-style model); only "
                         "Stable Diffusion 1.x/2.x layouts are supported",
                         path / "unet")  # fmt: skip
    if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
        raise InputError(f"the U-Net expects text features of size "
                         f"{unet.config.cross_attention_dim}, the text encoder gives "
                         f"{text_encoder.config.hidden_size}", path)  # fmt: skip
    if resolution is None:
        resolution = int(unet.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    unet.to(dev)
    vae.to(dev)
    text_encoder.to(dev, dtype)
    model = AttentionModel(unet, vae, text_encoder, tokenizer, scheduler, device=dev,
                           dtype=dtype, resolution=resolution, max_self_tokens=max_self_tokens,
                           path=path)  # fmt: skip
    model.check_resolution(resolution)  # a refused resolution fails here, before any output
    return model
