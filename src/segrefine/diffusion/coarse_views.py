"""Training inputs from the user's own model: ``train-refiner --coarse DIR``.

A refiner fixes what it has seen a segmenter get wrong. With ``--segmenter`` it sees the
errors of segrefine's own out-of-fold U-Nets (:mod:`.oof`); with ``--coarse`` it sees those of
the model the user has, any model, through its saved predictions for the training images: masks
or maps in any form :mod:`segrefine.data.coarse` reads, named by image id. They take the place
of the out-of-fold views (a ``coarse_share`` of each batch; degradations of the truth for the
rest), unaugmented and mirrored.

Predictions a model made on its own training images are nearly perfect and teach nothing:
:func:`coarse_views` measures how good they are and says so when they look in-fold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.coarse import Coarse
from ..data.datasets import LoadedSplit, crop_square, open_dataset
from ..data.io import image_size
from ..data.mask_folder import MaskFolder
from ..data.transforms import resize_probs
from ..errors import InputError
from ..metrics import SegmentationScores
from ..runs import check_same_classes
from .onehot import prior_for_image

IN_FOLD_IOU = 97.0  # per-image IoU above which training inputs are near-perfect


def coarse_priors(folder: str | Path, split: LoadedSplit, data: str | Path, split_name: str,
                  size: int, missing_ok: bool = False) -> np.ndarray | None:  # fmt: skip
    """Each item's coarse input from ``folder`` as probabilities (N, C, size, size), taken
    through the split's protocol (square crop, resize): a prediction at its image's aspect
    ratio is cropped like the image, a square one is taken as already cropped. With
    ``missing_ok`` a split that lacks any prediction gives None instead of an error."""
    if any("/" in it.id for it in split.items):
        raise InputError("--coarse does not take per-class binary tasks (--binary-per-class)")
    masks = MaskFolder(folder, split.num_classes, labels_first=True)
    if masks.names is not None:
        check_same_classes(("the --coarse folder's classes.txt", masks.names),
                           ("the data", split.class_names), masks.folder / "classes.txt")
    shapes = {s.id: s.image for s in open_dataset(data, split_name).samples}
    out = []
    for item in split.items:
        try:
            coarse = masks.read(item.id)
        except InputError as err:
            if missing_ok and err.message.startswith("no mask for image"):
                return None
            raise
        out.append(_protocol(coarse, image_size(shapes[item.id]), split.num_classes, size))
    return np.stack(out).astype(np.float16)


def _protocol(coarse: Coarse, image_hw, num_classes: int, size: int) -> np.ndarray:
    h, w = coarse.shape
    probs = prior_for_image((h, w), num_classes, coarse.probs, coarse.labels, coarse.path)
    H, W = image_hw
    if h != w or H == W:
        if abs((h / w) / (H / W) - 1) > 0.02:
            raise InputError(f"prediction is {w}x{h} but its image is {W}x{H} (another "
                             "aspect ratio)", coarse.path)  # fmt: skip
        probs = np.moveaxis(crop_square(np.moveaxis(probs, 0, -1)), -1, 0)
    return resize_probs(torch.from_numpy(np.ascontiguousarray(probs)), (size, size)).numpy()


def coarse_views(priors: np.ndarray, split: LoadedSplit) -> dict[str, torch.Tensor]:
    """What :class:`~segrefine.diffusion.batches.BatchSource` draws out-of-fold views from:
    each item as it is and mirrored left-right, with its coarse probabilities."""
    images = np.stack([it.image for it in split.items])
    masks = np.stack([it.mask for it in split.items]).astype(np.uint8)
    return {
        "images": torch.from_numpy(np.concatenate([images, images[:, :, ::-1]])),
        "masks": torch.from_numpy(np.concatenate([masks, masks[:, :, ::-1]])),
        "probs": torch.from_numpy(np.concatenate([priors, priors[..., ::-1]])),
    }


def coarse_quality(priors: np.ndarray, split: LoadedSplit) -> float:
    """The coarse inputs' per-image IoU (percent) against the split's truth."""
    scores = SegmentationScores(split.num_classes, split.class_names)
    for p, item in zip(priors, split.items, strict=True):
        scores.update(p.argmax(0), item.mask)
    return float(scores.summary()["mean_image_iou"])


def in_fold_note(train_iou: float, val_iou: float | None) -> str | None:
    """One line when the training inputs look like an in-fold model's (near-perfect, or far
    better than the same model on validation images), None otherwise."""
    # a good model that is much better on its training images than on others: in-fold
    far_better = val_iou is not None and train_iou >= 90 and train_iou - val_iou > 5
    if train_iou >= IN_FOLD_IOU or far_better:
        than = f" against {val_iou:.1f} on validation" if val_iou is not None else ""
        return (f"the --coarse masks score {train_iou:.1f} per-image IoU on their training "
                f"images{than}: predictions of a model on its own training images are nearly "
                "perfect and teach a refiner little; give out-of-fold predictions (README, "
                "'Learn your model's errors')")  # fmt: skip
    return None
