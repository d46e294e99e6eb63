"""Drawing the evidence: colour-coded label maps, example grids and Markdown tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..data.io import VOC_PALETTE, VOID, atomic_path

PALETTE = np.array(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)  # class id -> RGB


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class ids (H, W) -> RGB uint8 (H, W, 3) in the VOC colours (void = cream)."""
    return PALETTE[np.asarray(labels, dtype=np.uint8)]


def overlay(
    image: np.ndarray, labels: np.ndarray, clear: int | None = 0, alpha: float = 0.5
) -> np.ndarray:
    """Blend a colourised label map over an RGB image of the same size. Pixels of class
    ``clear`` (the background, if any; None = none) and void pixels stay uncoloured."""
    colour = colorize(labels).astype(np.float32)
    keep = labels == VOID if clear is None else (labels == clear) | (labels == VOID)
    mixed = ((1 - alpha) * image.astype(np.float32) + alpha * colour).round()
    return np.where(keep[..., None], image, mixed).astype(np.uint8)


def save_grid(
    path: str | Path,
    rows: Sequence[Sequence[np.ndarray]],
    columns: Sequence[str],
    row_labels: Sequence[str] | None = None,
    cell_inches: float = 1.8,
) -> Path:
    """Save a grid of RGB/grey panels (one list per row) with column titles, as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(cell_inches * n_cols, cell_inches * n_rows),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r][c]
            ax.imshow(panel, cmap="magma" if panel.ndim == 2 else None, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)


def metrics_table(results: dict[str, dict], keys: Sequence[tuple[str, str]] | None = None) -> str:
    """A Markdown table with one row per named result (values in percent)."""
    keys = keys or [("mean_image_iou", "per-image IoU"), ("miou", "mIoU"),
                    ("boundary_iou", "Boundary IoU"), ("boundary_f", "boundary F"),
                    ("mba", "mBA")]
    lines = ["| | " + " | ".join(label for _, label in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for name, summary in results.items():
        cells = [_cell(summary.get(k)) for k, _ in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SCORE_KEYS = ("mean_image_iou", "miou", "boundary_iou", "boundary_f", "mba")


def rounded_scores(summary: dict) -> dict:
    """The headline scores of a summary, in percent to 2 decimals (None where undefined)."""
    return {k: None if summary[k] != summary[k] else round(float(summary[k]), 2)  # NaN: None
            for k in SCORE_KEYS}  # fmt: skip


UNCERTAINTY_KEYS = (("error_auroc", "error AUROC"), ("ece", "ECE"),
                    ("errors_in_top10", "errors in top 10%"))  # fmt: skip


def rounded_uncertainty(summary: dict) -> dict:
    """The trust scores of :func:`~segrefine.metrics.calibration.score_probabilities`, as
    fractions to 4 decimals (None where undefined)."""
    return {k: None if summary[k] is None else round(float(summary[k]), 4)
            for k, _ in UNCERTAINTY_KEYS}  # fmt: skip


def uncertainty_table(rows: dict[str, dict]) -> str:
    """A Markdown table of :func:`rounded_uncertainty` rows (fractions, 4 decimals)."""
    lines = ["| | " + " | ".join(label for _, label in UNCERTAINTY_KEYS) + " |",
             "|---|" + "---|" * len(UNCERTAINTY_KEYS)]  # fmt: skip
    for name, row in rows.items():
        cells = ["n/a" if row.get(k) is None else f"{row[k]:.4f}" for k, _ in UNCERTAINTY_KEYS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"  # NaN != NaN


def per_class_table(summary: dict) -> str:
    """A Markdown table of per-class IoU (percent)."""
    lines = ["| class | IoU |", "|---|---|"]
    for name, value in summary["per_class_iou"].items():
        lines.append(f"| {name} | {'n/a' if value is None else f'{value:.2f}'} |")
    return "\n".join(lines)


def densest_window(mask: np.ndarray, side: int) -> tuple[slice, slice]:
    """The ``side`` x ``side`` window (clipped to the array) centred where ``mask`` is
    densest: where a refinement changed most, for full-resolution close-ups."""
    from scipy import ndimage

    density = ndimage.uniform_filter(mask.astype(np.float32), max(side // 2, 1))
    y, x = np.unravel_index(np.argmax(density), mask.shape)
    h, w = mask.shape
    top = int(np.clip(y - side // 2, 0, max(h - side, 0)))
    left = int(np.clip(x - side // 2, 0, max(w - side, 0)))
    return slice(top, top + side), slice(left, left + side)
