"""Deterministic synthetic scenes: the embedded demo dataset and the test fixture.

Every scene is a cluttered, textured background with 0-6 objects of four classes painted on it
in z-order (``SYNTHETIC_CLASSES``: background, blob, star, worm, ring). Scenes are cheap enough
to generate on the fly, and they reproduce the hard cases a mask refiner is meant to fix:

* **camouflage** - the background palette and the clutter are drawn from the same four hue
  families as the objects, so a pixel's colour alone does not say whether it belongs to an
  object; some objects (10%) go further and copy the colour of the background under them with a
  toned-down texture;
* **overlap and occlusion** - objects are often placed against earlier ones (the mask shows the
  topmost), run out of the frame, and are sometimes crossed by straight background "twigs";
* **thin parts** - worms are curved strokes 5-8 px wide, stars have thin spikes and rings a hole,
  so a pixel of boundary error costs a large share of their IoU;
* **distractors** - rectangles, straight bars and large irregular patches in the same colours,
  now and then in the objects' textures.

What makes the task learnable is the conjunction of cues, none decisive on its own: each class
has a characteristic texture (blob: dots, star: stripes, worm: tube shading, ring: checker; 90%
of the time), a characteristic hue family (90% of the time; the background uses all of them),
its shape, a higher texture contrast than the clutter, and usually a soft drop shadow. The mix
is meant to be learnable by the demo's small U-Net while leaving missed camouflaged objects,
class confusions and thin-structure boundaries for a refiner to fix (the measured scores are in
docs/benchmarks.md). About one scene in ten holds no object at all.

Scenes are fully determined by their integer seed (a private ``numpy.random.Generator`` per
scene; the global RNG is never touched). :func:`write_synthetic_dataset` writes them in the
project's generic folder layout.

This module is the public entry point and holds the on-disk writer; the scene sampler and the
distribution's parameters are in :mod:`.synthetic_scene`, the drawing primitives (textures,
shapes, clutter, shadows) in :mod:`.synthetic_draw`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

# write_synthetic_dataset looks generate_scene up in this module's namespace, so patching
# segrefine.data.synthetic.generate_scene (as the tests do) reaches the writer too.
from .synthetic_scene import _MIN_SIZE, SYNTHETIC_CLASSES, _check_int, generate_scene

__all__ = ["SYNTHETIC_CLASSES", "generate_scene", "write_synthetic_dataset"]

# Bump whenever the scene distribution changes, so cached datasets on disk are regenerated.
_GENERATOR_VERSION = 2
_SPLITS: tuple[str, ...] = ("train", "val")


def _scene_seed(seed: int, split: str, index: int) -> int:
    """Scene seed from ``(seed, split, index)``.

    Hashing through ``SeedSequence`` keeps splits disjoint and makes a split's scenes independent
    of the other split's size (so changing ``n_train`` leaves ``val`` untouched).
    """
    sequence = np.random.SeedSequence([int(seed), _SPLITS.index(split), int(index)])
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def _params(n_train: int, n_val: int, size: int, seed: int) -> dict:
    return {
        "generator": "segrefine.data.synthetic",
        "version": _GENERATOR_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "size": size,
        "seed": seed,
        "classes": list(SYNTHETIC_CLASSES),
    }


def _ids(params: dict) -> dict[str, list[str]]:
    return {split: [f"{split}_{i:04d}" for i in range(params[f"n_{split}"])] for split in _SPLITS}


def _read_params(root: Path) -> dict | None:
    try:
        return json.loads((root / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, params: dict) -> bool:
    """True if ``root`` holds a finished dataset written with exactly ``params``."""
    if _read_params(root) != params:
        return False
    try:
        classes = (root / "classes.txt").read_text().split()
    except OSError:
        return False
    if classes != list(SYNTHETIC_CLASSES):
        return False
    return all(
        (root / kind / split / f"{name}.png").is_file()
        for split, names in _ids(params).items()
        for name in names
        for kind in ("images", "masks")
    )


def write_synthetic_dataset(
    root: str | os.PathLike[str],
    n_train: int = 200,
    n_val: int = 50,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Write a synthetic dataset in the project's folder layout, or reuse an identical one.

    Layout::

        root/images/<split>/<id>.png   RGB
        root/masks/<split>/<id>.png    mode "L", class ids
        root/classes.txt               one class name per line, in id order
        root/synthetic.json            generation parameters

    with splits ``train`` and ``val`` and ids ``train_0000``, ``val_0000``, ...

    The dataset is written into a temporary sibling folder and moved into place with
    ``os.replace``, so an interrupted run never leaves a half-written dataset at ``root``.

    Parameters
    ----------
    root : str or os.PathLike
        Target folder. It may be missing, empty, or a dataset previously written by this function
        (which is replaced if its parameters differ); anything else is refused.
    n_train, n_val : int
        Number of scenes per split (``n_val`` may be 0).
    size : int
        Image side in pixels.
    seed : int
        Dataset seed. Scene seeds derive from ``(seed, split, index)``: train and val never share
        a scene and ``val`` does not depend on ``n_train``.

    Returns
    -------
    pathlib.Path
        ``root``.

    Raises
    ------
    ValueError
        For negative counts, a negative seed or a size below 16.
    FileExistsError
        If ``root`` exists and is neither empty nor a synthetic dataset.
    """
    params = _params(
        _check_int("n_train", n_train, 0),
        _check_int("n_val", n_val, 0),
        _check_int("size", size, _MIN_SIZE),
        _check_int("seed", seed, 0),
    )
    root = Path(root)
    if root.exists():
        if _is_complete(root, params):
            return root
        if not root.is_dir() or (any(root.iterdir()) and _read_params(root) is None):
            # Never delete something this function did not write.
            raise FileExistsError(f"{root}: exists and is not a synthetic dataset; not replacing")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split, names in _ids(params).items():
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "masks" / split).mkdir(parents=True)
            for index, name in enumerate(names):
                image, mask = generate_scene(_scene_seed(params["seed"], split, index), size)
                Image.fromarray(image).save(tmp / "images" / split / f"{name}.png")
                Image.fromarray(mask).save(tmp / "masks" / split / f"{name}.png")
        (tmp / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
        (tmp / "synthetic.json").write_text(json.dumps(params, indent=2) + "\n")
        _move_into_place(tmp, root, params)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _move_into_place(tmp: Path, root: Path, params: dict) -> None:
    """Atomically put ``tmp`` at ``root``, replacing an outdated synthetic dataset if present."""
    old = None
    if root.exists() and any(root.iterdir()):
        # os.replace cannot overwrite a non-empty directory: move the stale dataset aside first.
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
        try:
            os.replace(root, old)
        except OSError:
            # Another process may have just moved it; fall through and let os.replace decide.
            shutil.rmtree(old, ignore_errors=True)
            old = None
    try:
        os.replace(tmp, root)
    except OSError:
        # A concurrent writer won the race; its result is just as good if it is complete.
        if not _is_complete(root, params):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
