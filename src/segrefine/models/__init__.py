"""Segmenters trainable from scratch, built by name.

Every model maps a float tensor ``B x in_channels x H x W`` to logits
``B x num_classes x H x W`` (same ``H, W``; any size >= ``2**depth`` works, sizes need not be
multiples of it). ``width`` is the first stage's channel count, doubling per stage; ``depth``
is the number of downsampling stages.

    >>> model = build_segmenter("unet", in_channels=3, num_classes=5, width=16, depth=4)
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import InputError
from .deeplab import DeepLabV3Plus
from .fcn import FCN
from .pspnet import PSPNet
from .unet import UNet

__all__ = [
    "FCN",
    "SEGMENTERS",
    "DeepLabV3Plus",
    "PSPNet",
    "UNet",
    "available_segmenters",
    "build_segmenter",
    "count_parameters",
]

# name -> builder(in_channels, num_classes, width, depth) -> nn.Module
SEGMENTERS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNet,
    "fcn": FCN,
    "deeplabv3plus": DeepLabV3Plus,
    "pspnet": PSPNet,
}

# Smallest depth each model accepts (deeplab's decoder needs the stride-4 stage).
_MIN_DEPTH = {"deeplabv3plus": 2}


def available_segmenters() -> list[str]:
    """Registered segmenter names, sorted."""
    return sorted(SEGMENTERS)


def build_segmenter(
    name: str,
    in_channels: int = 3,
    num_classes: int = 2,
    width: int = 16,
    depth: int = 4,
) -> nn.Module:
    """Build the segmenter registered as ``name`` with freshly initialised weights.

    Weights depend only on the torch seed, so the same seed gives the same model. The returned
    module carries ``segmenter_config`` (this call's arguments) so a checkpoint can rebuild it.
    Raises :class:`~segrefine.errors.InputError` (a ``ValueError``) for an unknown name, listing
    the known ones, or for out-of-range sizes.
    """
    key = name.strip().lower()
    if key not in SEGMENTERS:
        known = ", ".join(available_segmenters())
        raise InputError(f"unknown segmenter {name!r}; known segmenters: {known}")
    min_depth = _MIN_DEPTH.get(key, 1)
    for arg, value, low in [
        ("in_channels", in_channels, 1),
        ("num_classes", num_classes, 1),
        ("width", width, 1),
        ("depth", depth, min_depth),
    ]:
        if not isinstance(value, int) or value < low:
            raise InputError(f"{key}: {arg} must be an integer >= {low}, got {value!r}")
    model = SEGMENTERS[key](
        in_channels=in_channels, num_classes=num_classes, width=width, depth=depth
    )
    model.segmenter_config = {
        "name": key,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "width": width,
        "depth": depth,
    }
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``model`` (only ``requires_grad`` ones if asked)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
