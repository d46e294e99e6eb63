"""Refining a folder of images (or a dataset split) and writing the results to disk.

For an input named ``<id>`` the output folder gets:

* ``<id>.png`` -- refined class ids, palette PNG (VOC colours);
* ``<id>.npy`` -- mean refined probabilities over the samples, float16, (C, H, W);
* ``<id>_uncertainty.png`` -- uncertainty (normalised entropy) as 8-bit grey, 255 = unsure;
* ``classes.txt`` -- class order of the probability maps.

The coarse input comes from a segmenter run, or from a folder of ``<id>.npy`` probability
maps (C, H, W, summing to 1; e.g. ``segrefine predict --save-probs`` or any other model), or
from a folder of ``<id>.png`` label masks (softened as documented in ``probs_from_labels``):
class ids, RGB colour masks (VOC colours, or those of a ``classes.txt`` of ``name R G B``
lines), or, for a 2-class refiner, 0/255 binary masks. Maps and masks may be smaller than
their image (same aspect ratio): they are upsampled. A native refiner refines at full
resolution only above the resolution the input was predicted at (``input_size``, the short
side; by default found from the maps, and a hard mask at the image's size counts as drawn
there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data.datasets import read_class_table
from .data.io import read_mask, read_npy, write_image, write_label_png, write_npy
from .diffusion.refiner import Refiner
from .errors import InputError
from .pipeline import check_pair, segment_and_refine
from .predict import is_main_process, iter_inputs
from .runs import check_same_classes


class _Priors:
    """Coarse inputs from a folder of ``<id>.npy`` maps or ``<id>.png`` masks, read the way
    other tools write them: a ``classes.txt`` there must name the refiner's classes (and may
    give colours for RGB masks, the VOC palette otherwise), and for a 2-class refiner a 0/255
    binary mask (rembg, SAM exports, thresholding) is read as background/object, with one
    notice, instead of as background and void."""

    def __init__(self, folder: Path, refiner: Refiner, notice):
        self.folder, self.refiner, self.notice = folder, refiner, notice
        self.colours, self.noticed, self.names = None, False, None
        table = folder / "classes.txt"
        if table.is_file():
            self.names, self.colours = read_class_table(table)
            if not refiner.spec.class_agnostic:  # that one takes any classes
                check_same_classes(("the masks' classes.txt", self.names),
                                   ("the refiner", refiner.class_names), table)  # fmt: skip

    def read(self, item_id: str):
        """(probs, labels, path) for one input."""
        npy, png = self.folder / f"{item_id}.npy", self.folder / f"{item_id}.png"
        if npy.exists():
            return read_npy(npy), None, npy
        if not png.exists():
            raise InputError(f"no {item_id}.npy or {item_id}.png for image '{item_id}'",
                             self.folder)  # fmt: skip
        labels = read_mask(png, self.colours)
        values = set(np.unique(labels).tolist())
        if self.refiner.num_classes == 2 and values <= {0, 255} and 255 in values:
            if not self.noticed:
                self.notice(f"{png}: a 0/255 binary mask, read as {self.refiner.class_names[0]}"
                            f" (0) / {self.refiner.class_names[1]} (255); so are the others")
                self.noticed = True
            labels = (labels == 255).astype(np.uint8)
        return None, labels, png


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
    input_size: int | None = None,
    native: bool | None = None,
    notice=None,
) -> list[str]:
    """Refine every input image; returns the ids written (see the module docstring).
    ``native``: refine at finer scales too (default: as the run was trained). ``notice``
    receives one-line notes on how inputs were read (default: printed)."""
    if (segmenter is None) == (probs_dir is None):
        raise InputError("give either a segmenter run or a folder of probabilities (--probs)")
    if segmenter is not None:
        check_pair(segmenter, refiner)
    if probs_dir is not None and not Path(probs_dir).is_dir():
        raise InputError("no such probability folder", probs_dir)
    refiner.settings(steps, strength, samples, flip, native)  # bad ones fail before any work
    if input_size is not None and segmenter is not None:
        raise InputError("--input-size is for --probs: a segmenter's own size is known")
    if input_size is not None and input_size < 1:
        raise InputError(f"--input-size must be a positive number of pixels, got {input_size}")
    cfg = refiner.spec
    inputs = iter_inputs(source, refiner.size, split, cfg.classes, cfg.binary_per_class,
                         protocol)  # fmt: skip
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output folder is a file", out)
    written = []
    priors = None
    if probs_dir is not None:
        say = notice or (lambda m: tqdm.write(m, file=sys.stderr))
        priors = _Priors(Path(probs_dir), refiner, say)
    for inp in tqdm(inputs, desc="refine", disable=not progress, leave=False):
        coarse, where = {"segmenter": segmenter}, None
        if priors is not None:
            probs, labels, where = priors.read(inp.id)
            coarse = {"probs": [probs]} if probs is not None else {"labels": [labels]}
            coarse["input_size"] = input_size
        try:
            (result,) = segment_and_refine([inp.image], refiner=refiner, steps=steps,
                                           strength=strength, samples=samples, flip=flip,
                                           native=native, seed=seed, **coarse)  # fmt: skip
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
    names = refiner.class_names
    if refiner.spec.class_agnostic:  # the output keeps the input's classes
        names = segmenter.class_names if segmenter is not None else priors.names
    if is_main_process() and names:
        (out / "classes.txt").write_text("\n".join(names) + "\n")
    return written
