"""Reading BSDS500: images and their several human segmentations.

Layout: ``ROOT/images/<split>/<id>.jpg`` and ``ROOT/segmentations/<split>/<id>_ann<k>.png``
(one segment-id map per annotator, mode L). Every problem raises
:class:`~segrefine.errors.InputError` naming the file or folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import list_images, read_image, read_mask
from ..errors import InputError

__all__ = ["BsdsSample", "list_bsds", "load_bsds_sample"]

_ANN = re.compile(r"^(?P<id>.+)_ann(?P<k>\d+)\.png$")


@dataclass
class BsdsSample:
    """One BSDS image with its annotations (each an (H, W) map of segment ids)."""

    id: str
    image: np.ndarray
    truths: list[np.ndarray]


def list_bsds(root: str | Path, split: str = "val", limit: int | None = None) -> list[str]:
    """Sorted image ids of ``split`` (the first ``limit`` of them when given)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such folder (expected a BSDS500 root)", root)
    ids = [p.stem for p in list_images(root / "images" / split)]
    if not ids:
        raise InputError(f"no images in split '{split}'", root / "images" / split)
    return ids[:limit] if limit else ids


def load_bsds_sample(root: str | Path, split: str, image_id: str) -> BsdsSample:
    """Read one image and all its annotations; their sizes must match the image."""
    root = Path(root)
    images = list_images(root / "images" / split)
    path = next((p for p in images if p.stem == image_id), None)
    if path is None:
        raise InputError("no such image", root / "images" / split / f"{image_id}.jpg")
    image = read_image(path)
    seg_dir = root / "segmentations" / split
    found = sorted(
        (int(m["k"]), p)
        for p in (seg_dir.glob(f"{image_id}_ann*.png") if seg_dir.is_dir() else [])
        if (m := _ANN.match(p.name)) and m["id"] == image_id
    )
    if not found:
        raise InputError(f"no annotations {image_id}_ann<k>.png", seg_dir)
    truths = []
    for _, ann in found:
        truth = read_mask(ann)
        if truth.shape != image.shape[:2]:
            raise InputError(
                f"annotation is {truth.shape[1]}x{truth.shape[0]}, image is "
                f"{image.shape[1]}x{image.shape[0]}",
                ann,
            )
        truths.append(truth)
    return BsdsSample(image_id, image, truths)
