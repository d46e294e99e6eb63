"""`Segmenter`: a trained segmentation network, loaded from a run folder, that predicts
per-pixel class probabilities.

>>> seg = Segmenter.load("runs/unet")                      # doctest: +SKIP
>>> probs = seg.predict(image)          # (C, size, size) float32, sums to 1 over C
>>> labels = probs.argmax(0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.datasets import preprocess, resize_image
from .data.transforms import resize_probs, to_tensor
from .errors import InputError
from .models import available_segmenters, build_segmenter
from .runs import LoadableRun, RunSpec


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


@dataclass(frozen=True)
class SegmenterSpec(RunSpec):
    """What a segmenter run is: ``model`` = {name, width, depth} from the model registry."""

    kind = "segmenter"
    model: dict = field(default_factory=lambda: {"name": "unet", "width": 16, "depth": 4})

    def check(self) -> None:
        super().check()
        if self.model.get("name") not in available_segmenters():
            raise ValueError(f"unknown model {self.model.get('name')!r}")


class Segmenter(LoadableRun):
    """A trained segmenter and the preprocessing it was trained with."""

    spec_type = SegmenterSpec

    def __init__(self, model: torch.nn.Module, spec: SegmenterSpec, device: torch.device):
        self.model = model.to(device).eval()
        self.spec = spec
        self.device = device

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    @property
    def size(self) -> int:
        return self.spec.size

    def module(self) -> torch.nn.Module:
        return self.model

    @classmethod
    def from_spec(cls, spec: SegmenterSpec, device: str | torch.device = "cpu") -> Segmenter:
        """An untrained segmenter with the architecture ``spec`` describes."""
        arch = spec.model
        model = build_segmenter(
            arch["name"], in_channels=3, num_classes=spec.num_classes,
            width=arch["width"], depth=arch["depth"],
        )  # fmt: skip
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        return cls(model, spec, dev)

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
        return [resize_probs(torch.from_numpy(p), im.shape[:2]).numpy()
                for p, im in zip(probs, images, strict=True)]  # fmt: skip
