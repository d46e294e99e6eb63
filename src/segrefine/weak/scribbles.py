"""Pseudo-masks from scribbles: the clustering method's scribble path gives a full label map.

A scribble map holds class ids on the strokes and 255 elsewhere (the ``cluster --scribbles``
convention). :func:`~segrefine.unsupervised.cluster` with those strokes gives every pixel one
of the scribbled labels (label k = scribble label k), so class-id strokes come back as a label
map of class ids. Simulated scribbles trace each connected region of each class (background
included) the way the unsupervised benchmark traces BSDS segments.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.io import VOID, read_mask
from ..errors import InputError


def scribbles_from_mask(mask: np.ndarray, max_strokes: int = 12) -> np.ndarray:
    """Simulated class scribbles (H, W): one stroke down each of the largest connected
    regions of each class, background included; 255 = unmarked."""
    from ..unsupervised.scribbles import make_scribbles

    regions = np.zeros(mask.shape, np.int32)  # one id per connected region of one class
    next_id = 0
    for c in np.unique(mask):
        if c == VOID:
            continue
        comp, n = ndimage.label(mask == c, structure=np.ones((3, 3), bool))
        regions[comp > 0] = comp[comp > 0] + next_id
        next_id += n
    strokes = make_scribbles(regions, max_strokes=max_strokes)
    out = np.full(mask.shape, VOID, np.uint8)
    for k in np.unique(strokes[strokes != VOID]):
        on = strokes == k
        out[on] = np.bincount(mask[on]).argmax()  # a stroke lies in one region: its class
    return out


def read_scribbles(folder: str | Path, image_id: str, shape: tuple[int, int],
                   num_classes: int) -> np.ndarray:  # fmt: skip
    """``folder/<id>.png``: class ids on the strokes, 255 elsewhere, the image's size."""
    path = Path(folder) / f"{image_id}.png"
    if not path.is_file():
        raise InputError(f"no scribbles for image '{image_id}'", path)
    marks = read_mask(path)
    if marks.shape != tuple(shape):
        raise InputError(f"scribbles are {marks.shape[1]}x{marks.shape[0]} but the image is "
                         f"{shape[1]}x{shape[0]}", path)  # fmt: skip
    ids = np.unique(marks[marks != VOID])
    if len(ids) and ids.max() >= num_classes:
        raise InputError(f"scribble label {int(ids.max())} is not a class id (0.."
                         f"{num_classes - 1})", path)  # fmt: skip
    return marks


def pseudo_mask_from_scribbles(image: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """The clustering method, guided by class-id strokes, gives every pixel a scribbled
    class; an image without strokes is void (nothing to learn from it)."""
    from ..unsupervised import ClusterConfig, cluster

    if not (marks != VOID).any():
        return np.full(marks.shape, VOID, np.uint8)
    return cluster(image, scribbles=marks, config=ClusterConfig()).astype(np.uint8)
