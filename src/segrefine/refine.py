"""Refining a folder of images (or a dataset split) and writing the results to disk.

For an input named ``<id>`` the output folder gets:

* ``<id>.png`` -- refined class ids, palette PNG (VOC colours);
* ``<id>.npy`` -- mean refined probabilities over the samples, float16, (C, H, W);
* ``<id>_uncertainty.png`` -- uncertainty (normalised entropy) as 8-bit grey, 255 = unsure;
* ``classes.txt`` -- class order of the probability maps.

The coarse input comes from a segmenter run, or from a folder of ``<id>.npy`` probability
maps (C, H, W, summing to 1; e.g. ``segrefine predict --save-probs`` or any other model), or
from a folder of ``<id>.png`` label masks (softened as documented in ``probs_from_labels``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data.io import read_mask, write_image, write_label_png, write_npy
from .diffusion.refiner import Refiner
from .errors import InputError
from .pipeline import check_pair, segment_and_refine
from .predict import is_main_process, iter_inputs


def _read_prior(folder: Path, item_id: str):
    """(probs, labels) for one input from a folder of .npy maps or .png masks."""
    npy, png = folder / f"{item_id}.npy", folder / f"{item_id}.png"
    if npy.exists():
        try:
            return np.load(npy, allow_pickle=False), None
        except (ValueError, OSError) as err:
            raise InputError(f"cannot read probability map ({err})", npy) from err
    if png.exists():
        return None, read_mask(png)
    raise InputError(f"no {item_id}.npy or {item_id}.png for image '{item_id}'", folder)


def refine_to_folder(
    refiner: Refiner,
    source: str | Path,
    out: str | Path,
    *,
    segmenter=None,
    probs_dir: str | Path | None = None,
    split: str = "val",
    protocol: bool = False,
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    flip: bool | None = None,
) -> list[str]:
    """Refine every input image; returns the ids written (see the module docstring)."""
    if (segmenter is None) == (probs_dir is None):
        raise InputError("give either a segmenter run or a folder of probabilities (--probs)")
    if segmenter is not None:
        check_pair(segmenter, refiner)
    if probs_dir is not None and not Path(probs_dir).is_dir():
        raise InputError("no such probability folder", probs_dir)
    refiner.settings(steps, strength, samples, flip)  # bad settings fail before any work
    cfg = refiner.spec
    inputs = iter_inputs(source, refiner.size, split, cfg.classes, cfg.binary_per_class,
                         protocol)  # fmt: skip
    out = Path(out)
    written = []
    for inp in tqdm(inputs, desc="refine", disable=not progress, leave=False):
        coarse, where = {"segmenter": segmenter}, None
        if segmenter is None:
            probs, labels = _read_prior(Path(probs_dir), inp.id)
            coarse = {"probs": [probs]} if probs is not None else {"labels": [labels]}
            where = Path(probs_dir) / f"{inp.id}.{'npy' if probs is not None else 'png'}"
        try:
            (result,) = segment_and_refine([inp.image], refiner=refiner, steps=steps,
                                           strength=strength, samples=samples, flip=flip,
                                           seed=seed, **coarse)  # fmt: skip
        except InputError as err:
            raise InputError(err.message, err.path or where) from err
        refined = result.refined
        write_label_png(out / f"{inp.id}.png", refined.labels)
        write_npy(out / f"{inp.id}.npy", refined.probs.astype(np.float16))
        write_image(
            out / f"{inp.id}_uncertainty.png", (refined.uncertainty * 255).round().astype(np.uint8)
        )
        written.append(inp.id)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        (out / "classes.txt").write_text("\n".join(refiner.class_names) + "\n")
    return written
