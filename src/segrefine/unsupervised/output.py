"""Writing label maps of any number of segments: a colour PNG and a 16-bit id PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..data.io import atomic_path

__all__ = ["colorize_segments", "write_segments"]


def _palette(n: int = 4096) -> np.ndarray:
    # Fixed seed: segment k has the same colour in every run and every file.
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(n, 3), dtype=np.uint8)
    colours[0] = (128, 64, 128)
    return colours


_COLOURS = _palette()


def colorize_segments(labels: np.ndarray) -> np.ndarray:
    """Segment ids (H, W) -> RGB ``uint8`` in a stable palette (ids wrap around at 4096)."""
    return _COLOURS[np.asarray(labels, dtype=np.int64) % len(_COLOURS)]


def write_segments(folder: str | Path, stem: str, labels: np.ndarray) -> tuple[Path, Path]:
    """Write ``<stem>.png`` (colour-coded) and ``<stem>_labels.png`` (16-bit segment ids).

    Both are written atomically; the id PNG reads back with ``np.asarray(Image.open(p))``.
    """
    folder = Path(folder)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 65535:
        raise ValueError(f"labels must be a 2-D array of ids in 0..65535, got {labels.shape}")
    colour_path, ids_path = folder / f"{stem}.png", folder / f"{stem}_labels.png"
    with atomic_path(colour_path) as tmp:
        Image.fromarray(colorize_segments(labels)).save(tmp, format="PNG")
    with atomic_path(ids_path) as tmp:
        Image.fromarray(labels.astype(np.uint16)).save(tmp, format="PNG")
    return colour_path, ids_path
