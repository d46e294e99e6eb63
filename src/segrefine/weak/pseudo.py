"""Write a dataset of pseudo-masks that ``train-segmenter`` trains on unchanged.

``write_pseudo_dataset`` reads a split of a dataset root (either layout), makes a pseudo-mask
per image from cheap labels, and writes a new root in the folder layout:

* ``images/<split>/<id>.png`` and ``masks/<split>/<id>.png`` (the pseudo-masks, VOC palette,
  255 = void where unsure);
* the validation split copied with its *real* masks when it has them, so training is
  validated against the truth as usual;
* ``classes.txt``; ``pseudo.json`` (settings, timing and, when the split has real masks, how
  good the pseudo-masks are); ``boxes.json`` (the boxes used, simulated or read).

The new root is written beside its final place and renamed into it, so an interrupted run
leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.datasets import load_split
from ..data.io import VOID, write_image, write_json, write_label_png
from ..errors import InputError
from ..metrics import SegmentationScores
from .annotations import boxes_from_mask, boxes_to_json, read_boxes
from .boxes import METHODS, pseudo_mask_from_boxes


def pseudo_mask_quality(pseudo: list[np.ndarray], truth: list[np.ndarray],
                        class_names) -> dict:  # fmt: skip
    """Pseudo-masks scored against the real masks on the pixels they label (void pseudo
    pixels are left out, as training leaves them out), in percent, with the share of pixels
    left void."""
    scores = SegmentationScores(len(class_names), class_names)
    void = 0.0
    for p, t in zip(pseudo, truth, strict=True):
        void += float((p == VOID).mean())
        scores.update(np.where(p == VOID, 0, p), np.where(p == VOID, VOID, t))
    s = scores.summary()
    return {"mean_image_iou": round(s["mean_image_iou"], 2), "miou": round(s["miou"], 2),
            "boundary_iou": round(s["boundary_iou"], 2),
            "void_share": round(100 * void / max(len(pseudo), 1), 2)}  # fmt: skip


def write_pseudo_dataset(
    data: str | Path,
    out: str | Path,
    source: str = "boxes",
    boxes: str | Path | None = None,
    simulate: bool = False,
    method: str = "grabcut",
    classes: list[str] | None = None,
    split: str = "train",
    val_split: str | None = "val",
    progress: bool = True,
) -> dict:
    """Pseudo-masks for ``split`` of ``data`` from ``source`` labels (``boxes``: a boxes file,
    or with ``simulate`` boxes derived from the real masks), written as a new root ``out``.
    Returns what ``pseudo.json`` holds."""
    if source != "boxes":
        raise InputError(f"--from {source}: only boxes are implemented so far")
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if simulate == (boxes is not None):
        raise InputError("give either a boxes file (--boxes) or --simulate-from-masks")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("output exists and is not empty; pick another --out", out)
    train = load_split(data, split, classes, False, size=None, require_masks=simulate)
    names = train.class_names
    if simulate:
        given = {it.id: boxes_from_mask(it.mask) for it in train.items}
    else:
        given = read_boxes(boxes, names, {it.id: it.image.shape[:2] for it in train.items})
    val = load_split(data, val_split, classes, False, size=None) if val_split else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        t0 = time.perf_counter()
        pseudo = []
        for it in tqdm(train.items, desc=f"pseudo-masks ({method})", disable=not progress,
                       leave=False):  # fmt: skip
            mask = pseudo_mask_from_boxes(it.image, given.get(it.id, []), method)
            pseudo.append(mask)
            write_image(tmp / "images" / split / f"{it.id}.png", it.image)
            write_label_png(tmp / "masks" / split / f"{it.id}.png", mask)
        seconds = time.perf_counter() - t0
        for it in val.items if val else []:
            write_image(tmp / "images" / val_split / f"{it.id}.png", it.image)
            write_label_png(tmp / "masks" / val_split / f"{it.id}.png", it.mask)
        (tmp / "classes.txt").write_text("\n".join(names) + "\n")
        report = {
            "data": str(data), "split": split, "val_split": val_split, "source": source,
            "boxes": "simulated from the masks" if simulate else str(boxes), "method": method,
            "classes": list(names), "num_images": len(train.items),
            "seconds": round(seconds, 1), "seconds_per_image": round(seconds / len(pseudo), 3),
        }  # fmt: skip
        if all(it.mask is not None for it in train.items):
            report["quality"] = pseudo_mask_quality(pseudo, [it.mask for it in train.items],
                                                    names)  # fmt: skip
        write_json(tmp / "boxes.json", boxes_to_json(given, names))
        write_json(tmp / "pseudo.json", report)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((out / "pseudo.json").read_text())
