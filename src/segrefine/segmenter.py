"""`Segmenter`: a trained segmentation network, loaded from a run folder, that predicts
per-pixel class probabilities.

>>> seg = Segmenter.load("runs/unet")                      # doctest: +SKIP
>>> probs = seg.predict(image)          # (C, size, size) float32, sums to 1 over C
>>> labels = probs.argmax(0)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .data.datasets import preprocess, resize_image
from .data.transforms import to_tensor
from .errors import InputError
from .models import build_segmenter


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU. Asking for CUDA without one is an input error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device '{device}' (use auto, cpu or cuda)")
    return torch.device(device)


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 16
) -> np.ndarray:
    """Softmax probabilities (N, C, H, W) float32 for uint8 images (N, H, W, 3) of one size."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start : start + batch_size]).to(device)
        out.append(torch.softmax(model(x).float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


class Segmenter:
    """A trained segmenter and the preprocessing it was trained with."""

    def __init__(self, model: torch.nn.Module, config: dict, device: torch.device):
        self.model = model.to(device).eval()
        self.config = config
        self.device = device

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.config["class_names"])

    @property
    def size(self) -> int:
        return int(self.config["size"])

    @classmethod
    def from_config(cls, config: dict, device: str | torch.device = "cpu") -> Segmenter:
        """An untrained segmenter with the architecture a run config describes."""
        arch = config["model"]
        model = build_segmenter(
            arch["name"], in_channels=3, num_classes=len(config["class_names"]),
            width=arch["width"], depth=arch["depth"],
        )  # fmt: skip
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        return cls(model, config, dev)

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> Segmenter:
        """Load the best weights of a ``train-segmenter`` run folder."""
        config = checkpoint.read_config(run_dir, kind="segmenter")
        seg = cls.from_config(config, device)
        checkpoint.load_weights(seg.model, run_dir)
        seg.model.to(seg.device).eval()
        return seg

    def predict(self, image: np.ndarray, keep_size: bool = False) -> np.ndarray:
        """Class probabilities for one RGB uint8 image (H, W, 3).

        By default the image goes through the training protocol (centre square crop, resize
        to ``size``) and the result is (C, size, size). With ``keep_size`` the whole image is
        resized to ``size`` x ``size`` (no crop) and the probabilities are resized back to
        (C, H, W), so they align with the original image.
        """
        return self.predict_batch([image], keep_size=keep_size)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray] | np.ndarray, keep_size: bool = False,
        batch_size: int = 16,
    ) -> list[np.ndarray]:
        """:meth:`predict` for several images (any sizes); returns a list of (C, h, w)."""
        if keep_size:
            batch = np.stack([resize_image(im, self.size) for im in images])
        else:
            batch = np.stack([preprocess(im, self.size) for im in images])
        probs = predict_probs(self.model, batch, self.device, batch_size)
        if not keep_size:
            return list(probs)
        out = []
        for p, im in zip(probs, images, strict=True):
            t = F.interpolate(torch.from_numpy(p)[None], size=im.shape[:2], mode="bilinear",
                              align_corners=False)[0]
            out.append((t / t.sum(0, keepdim=True)).numpy())
        return out
