"""Refining a folder of images (or a dataset split) and writing the results to disk.

For an input named ``<id>`` the output folder gets:

* ``<id>.png`` -- refined class ids, palette PNG (VOC colours);
* ``<id>.npy`` -- mean refined probabilities over the samples, float16, (C, H, W);
* ``<id>_uncertainty.png`` -- uncertainty as 8-bit grey, 0 = sure, 255 = unsure (see
  :class:`~segrefine.diffusion.refiner.Refinement`: the input's own where it was kept);
* ``classes.txt`` -- class order of the probability maps.

The coarse input comes from a segmenter run, or from a folder of masks or maps from any other
tool, read by :mod:`segrefine.data.coarse` (class ids, colour masks, two-valued, soft and RGBA
masks, ``.npy`` maps; see there) and found by :class:`~segrefine.data.mask_folder.MaskFolder`
(``<id>.png``, ``<id>_mask.png``, ``<id>.npy``, ... or a pattern). Maps and masks may be smaller
than their image (same aspect ratio): they are upsampled. A native refiner refines at full
resolution only above the resolution the input was predicted at (``input_size``, the short
side; by default found from the maps, and a hard mask at the image's size counts as drawn
there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .data.io import write_image, write_label_png, write_npy, write_text
from .data.mask_folder import MaskFolder
from .diffusion.onehot import check_coarse
from .diffusion.refiner import Refiner
from .errors import InputError
from .pipeline import check_pair, segment_and_refine
from .runs import check_same_classes
from .segmenting.predict import is_main_process, iter_inputs, prepare_output


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
    mask_pattern: str | None = None,
    skip_bad: bool = False,
) -> list[str]:
    """Refine every input image; returns the ids written (see the module docstring).
    ``native``: refine at finer scales too (default: as the run was trained). ``notice``
    receives one-line notes on how inputs were read (default: printed). ``probs_dir``: a
    folder of coarse masks or maps, read by :class:`~segrefine.data.mask_folder.MaskFolder`
    (``mask_pattern``: how they are named). Every input is checked before the first output
    is written: a bad one is an input error naming it, or with ``skip_bad`` the good ones are
    refined and then :class:`BadInputs` lists the rest."""
    if (segmenter is None) == (probs_dir is None):
        raise InputError("give either a segmenter run or a folder of masks (--masks)")
    if segmenter is not None:
        check_pair(segmenter, refiner)
    refiner.settings(steps, strength, samples, flip, native)  # bad ones fail before any work
    if input_size is not None and segmenter is not None:
        raise InputError("--input-size is for --masks: a segmenter's own size is known")
    if input_size is not None and input_size < 1:
        raise InputError(f"--input-size must be a positive number of pixels, got {input_size}")
    if input_size is not None and not refiner.settings(native=native)["native"]:
        raise InputError("--input-size tells a native refiner where to start its finer "
                         "passes; this refiner runs none (trained without --native, or "
                         "--no-native)")  # fmt: skip
    say = notice or (lambda m: tqdm.write(m, file=sys.stderr))
    folder = None
    if probs_dir is not None:
        folder = MaskFolder(
            probs_dir,
            None if refiner.spec.class_agnostic else refiner.num_classes,
            mask_pattern,
            say,
            refiner.class_names,
        )
        if folder.names is not None and not refiner.spec.class_agnostic:
            check_same_classes(("the masks' classes.txt", folder.names),
                               ("the refiner", refiner.class_names),
                               folder.folder / "classes.txt")  # fmt: skip
    cfg = refiner.spec
    bad: dict[str, str] = {}
    inputs = iter_inputs(source, refiner.size, split, cfg.classes, cfg.binary_per_class,
                         protocol, bad if skip_bad else None)  # fmt: skip
    if folder is not None:
        bad.update(_check_masks(folder, inputs, refiner, say))
        if bad and not skip_bad:
            first = next(iter(bad.values()))
            more = f" (and {len(bad) - 1} more bad inputs)" if len(bad) > 1 else ""
            raise InputError(f"{first}{more}; nothing was written (--skip-bad refines the "
                             "good ones)")  # fmt: skip
        inputs = inputs.without(set(bad))
    out = prepare_output(out)
    written = []
    for inp in tqdm(inputs, desc="refine", disable=not progress, leave=False):
        coarse = {"segmenter": segmenter}
        if folder is not None:
            c = folder.read(inp.id)
            coarse = {"probs": [c]} if c.probs is not None else {"labels": [c]}
            coarse["input_size"] = input_size
        (result,) = segment_and_refine([inp.image], refiner=refiner, steps=steps,
                                       strength=strength, samples=samples, flip=flip,
                                       native=native, seed=seed, **coarse)  # fmt: skip
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
        names = segmenter.class_names if segmenter is not None else folder.names
    if is_main_process() and names:
        write_text(out / "classes.txt", "\n".join(names) + "\n")
    if bad:
        raise BadInputs(written, bad)
    return written


class BadInputs(InputError):
    """Some inputs were bad and left out (``--skip-bad``): ``written`` are the ids refined,
    ``bad`` maps each other id to its error. One line, as every input error."""

    def __init__(self, written: list[str], bad: dict[str, str]):
        self.written, self.bad = written, bad
        listed = "; ".join(f"{i}: {e}" for i, e in list(bad.items())[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        super().__init__(f"refined {len(written)} images, skipped {len(bad)} bad inputs "
                         f"({listed}{more})")  # fmt: skip


def _check_masks(folder: MaskFolder, inputs, refiner: Refiner, notice) -> dict[str, str]:
    """Read every coarse input once, as refinement will, and check it against its image:
    id -> error for the bad ones. A mask holding one class only is refined (the refiner may
    still find the object) but the user is told."""
    bad = {}
    classes = None if refiner.spec.class_agnostic else refiner.num_classes
    for item_id, shape in inputs.sizes():
        try:
            coarse = folder.read(item_id)
            check_coarse(coarse, shape, classes)
        except InputError as err:
            bad[item_id] = str(err)
            continue
        if coarse.is_empty():
            notice(f"{coarse.path}: holds one class only (nothing to refine around); "
                   "refined anyway")  # fmt: skip
    return bad
