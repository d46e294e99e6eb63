"""The input contract and the per-image policies that every score in :mod:`segrefine.metrics`
shares: validating a (pred, target) pair and finding its void pixels, the default scored
classes, which classes take part in an image's mean, and the empty-image policy (see the
package docstring for the rules themselves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def scored_classes(num_classes: int) -> list[int]:
    """Classes that per-image scores average over by default.

    Parameters
    ----------
    num_classes : int
        Number of classes of the task, background included.

    Returns
    -------
    list of int
        ``[1]`` for a binary task (``num_classes == 2``): class 0 is background and only the
        object is scored, as in the paper. ``list(range(num_classes))`` otherwise.

    Raises
    ------
    ValueError
        If ``num_classes < 1``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes == 2:
        return [1]
    return list(range(num_classes))


def _resolve_classes(num_classes: int, classes: Sequence[int] | None) -> list[int]:
    """Default to :func:`scored_classes`, and check explicit class ids are in range."""
    if classes is None:
        return scored_classes(num_classes)
    resolved = [int(c) for c in classes]
    if not resolved:
        raise ValueError("classes must name at least one class")
    bad = [c for c in resolved if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} out of range for num_classes={num_classes}")
    return resolved


def _prepare(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None,
    *,
    image: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a (pred, target) pair and return int64 copies plus the non-void mask.

    ``image=True`` additionally requires 2-D arrays (the boundary scores need a pixel grid).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred_arr = np.asarray(pred)
    target_arr = np.asarray(target)
    if pred_arr.shape != target_arr.shape:
        raise ValueError(
            f"pred shape {pred_arr.shape} does not match target shape {target_arr.shape}"
        )
    if image and pred_arr.ndim != 2:
        raise ValueError(f"expected H x W label maps, got shape {pred_arr.shape}")
    for name, arr in (("pred", pred_arr), ("target", target_arr)):
        # Float labels usually mean logits or probabilities were passed by mistake.
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    pred_arr = pred_arr.astype(np.int64, copy=False)
    target_arr = target_arr.astype(np.int64, copy=False)

    if ignore_index is None:
        valid = np.ones(target_arr.shape, dtype=bool)
    else:
        valid = target_arr != ignore_index
    for name, arr in (("target", target_arr), ("pred", pred_arr)):
        # Only non-void pixels are checked: whatever the prediction holds in void is ignored.
        bad = valid & ((arr < 0) | (arr >= num_classes))
        if bad.any():
            values = np.unique(arr[bad])[:5].tolist()
            raise ValueError(
                f"{name} holds labels {values} outside 0..{num_classes - 1} in non-void pixels"
            )
    return pred_arr, target_arr, valid


def _present(cm: np.ndarray, classes: Sequence[int]) -> list[int]:
    """Scored classes present in the truth or the prediction of the pixels behind ``cm``."""
    support = cm.sum(axis=0) + cm.sum(axis=1)
    return [c for c in classes if support[c] > 0]


def _mean_or_one(values: list[float]) -> float:
    """Image value from per-class values; no present scored class means a correct 'nothing'."""
    return float(np.mean(values)) if values else 1.0
