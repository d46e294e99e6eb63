"""`Segmenter`: a trained segmentation network, loaded from a run folder, that predicts
per-pixel class probabilities.

>>> seg = Segmenter.load("runs/unet")                      # doctest: +SKIP
>>> probs = seg.predict(image)          # (C, H, W) float32 at the image's size, sums to 1
>>> labels = probs.argmax(0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.datasets import preprocess, resize_image
from ..data.transforms import pad_to_multiple, resize_probs, to_tensor, working_size
from ..errors import InputError
from ..models import available_segmenters, build_segmenter
from ..runs import LoadableRun, RunSpec, check_network


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
    model: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 16,
    stride: int = 1,
) -> np.ndarray:
    """Softmax probabilities (N, C, H, W) float32 for uint8 images (N, H, W, 3) of one size.
    With ``stride`` > 1 the images are reflect-padded at the bottom and right to a multiple
    of it (the sizes the network was trained at) and the result cropped back."""
    was_training = model.training
    model.eval()
    out = []
    h, w = images.shape[1:3]
    for start in range(0, len(images), batch_size):
        x = pad_to_multiple(to_tensor(images[start : start + batch_size]).to(device), stride)
        x = x.contiguous(memory_format=torch.channels_last)  # convolutions' fastest layout
        out.append(torch.softmax(model(x).float()[..., :h, :w], dim=1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


@dataclass(frozen=True)
class SegmenterSpec(RunSpec):
    """What a segmenter run is: ``model`` = {name, width, depth} from the model registry."""

    kind = "segmenter"
    model: dict = field(default_factory=lambda: {"name": "unet", "width": 16, "depth": 4})

    def check(self) -> None:
        super().check()
        check_network(self.model, ("width", "depth"))
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

    @property
    def stride(self) -> int:
        """The network's total downsampling: inputs are padded to a multiple of it."""
        return 2 ** int(self.spec.model["depth"])

    def working_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(h, w) an image of ``shape`` is segmented at (:func:`~segrefine.data.transforms.
        working_size`): aspect ratio kept, short side at the training size."""
        return working_size(shape, self.size)

    def predict(self, image: np.ndarray, protocol: bool = False) -> np.ndarray:
        """Class probabilities for one RGB uint8 image (H, W, 3), summing to 1 over classes.

        By default the result is at the image's own size, (C, H, W): the image is segmented
        whole at :meth:`working_size` (aspect ratio kept, padded to the network's stride and
        cropped back) and the probabilities are resized to (H, W). With ``protocol`` the image
        goes through the paper's square protocol instead (centre square crop, resize to
        ``size``) and the result is (C, size, size).
        """
        return self.predict_batch([image], protocol=protocol)[0]

    def predict_batch(
        self, images: Sequence[np.ndarray] | np.ndarray, protocol: bool = False,
        batch_size: int = 16,
    ) -> list[np.ndarray]:
        """:meth:`predict` for several images (any sizes); returns a list of (C, h, w).
        Images that share a working size are segmented together, ``batch_size`` at a time."""
        if protocol:
            batch = np.stack([preprocess(im, self.size) for im in images])
            return list(predict_probs(self.inference_module, batch, self.device, batch_size))
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(self.working_size(im.shape), []).append(i)
        out: list[np.ndarray | None] = [None] * len(images)
        for shape, idx in groups.items():
            batch = np.stack([resize_image(images[i], shape) for i in idx])
            probs = predict_probs(self.inference_module, batch, self.device, batch_size,
                                  self.stride)  # fmt: skip
            for i, p in zip(idx, probs, strict=True):
                out[i] = resize_probs(torch.from_numpy(p), images[i].shape[:2]).numpy()
        return out
