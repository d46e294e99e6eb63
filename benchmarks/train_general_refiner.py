"""Retrain the general (class-agnostic) refiner from scratch: one command, fixed seeds.

It sees synthetic scenes (our own generator: no data terms attached), rendered at several
sizes so that native refinement learns every scale between the working size and the original
one, and with ``--extra ROOT`` real labelled datasets too (their terms then apply), each class
as object against the rest, with coarse masks from degradations (``--boundary-only``: boundary
errors alone, no missing or extra regions):

    python benchmarks/train_general_refiner.py --out runs/general

writes ``OUT/data`` (the scenes, folder layout) and the run ``OUT/run``; ``segrefine export
--run OUT/run --out DIR`` then copies what loading needs (``segrefine/pretrained/general`` is
where a shipped one would go). None ships yet: docs/benchmarks.md ("The general refiner")
has each attempt's command, machine, time and what it scored on data it never saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segrefine.data.synthetic import SYNTHETIC_CLASSES
from segrefine.data.synthetic_scene import generate_scene
from segrefine.diffusion import RefinerConfig, train_refiner

SIZES = (256, 512, 768, 1024)  # scene sides, in turn
# coarse masks with boundary errors only (too smooth, too fat or thin, shifted): a refiner
# that has never seen an object cannot know which regions it has, only where its edges lie
BOUNDARY_ERRORS = {"p_delete": 0.0, "p_insert": 0.0, "p_swap": 0.0, "p_coarse": 0.6}


def write_scenes(root: Path, n_train: int, n_val: int, seed: int) -> Path:
    """Scenes of :data:`SIZES` px in turn, in the folder layout (skipped when present)."""
    done = root / "scenes.json"
    params = {"n_train": n_train, "n_val": n_val, "seed": seed, "sizes": list(SIZES)}
    if done.is_file() and json.loads(done.read_text()) == params:
        return root
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 1_000_000)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = generate_scene(seed * 10_000_019 + offset + i, SIZES[i % len(SIZES)])
            Image.fromarray(image).save(root / "images" / split / f"{split}_{i:04d}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{split}_{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(SYNTHETIC_CLASSES) + "\n")
    done.write_text(json.dumps(params))
    return root


def add_dataset(root: Path, extra: Path, names: list[str]) -> list[str]:
    """Copy the train and val splits of the dataset ``extra`` (either layout) into the scene
    root ``root``, its classes appended to ``names`` (prefixed with the dataset's folder name;
    its background, if any, is the shared background). Returns the new class list."""
    from segrefine.data.datasets import load_split
    from segrefine.data.io import VOID

    first = load_split(extra, "train", None, False, size=None)
    own = [c for c in first.class_names if c != "background"]
    ids = {c: len(names) + k for k, c in enumerate(own)}
    lut = np.full(256, VOID, np.uint8)
    for k, c in enumerate(first.class_names):
        lut[k] = 0 if c == "background" else ids[c]
    for split in ("train", "val"):
        data = first if split == "train" else load_split(extra, split, None, False, size=None)
        for it in data.items:
            name = f"{extra.name}_{it.id}".replace("/", "_")
            Image.fromarray(it.image).save(root / "images" / split / f"{name}.png")
            Image.fromarray(lut[it.mask]).save(root / "masks" / split / f"{name}.png")
    return names + [f"{extra.name}:{c}" for c in own]


def add_bsds(root: Path, bsds: Path, names: list[str], segments: int = 8,
             min_share: float = 0.01) -> list[str]:
    """Copy BSDS500's train and val images into ``root`` with segments as objects: of each
    image's coarsest human annotation (fewest segments: object-level boundaries), the
    ``segments`` largest covering at least ``min_share`` of the image become classes
    ``bsds:seg1`` ... by rank of area, the rest is background (part of every "rest")."""
    from segrefine.unsupervised.bsds import list_bsds, load_bsds_sample

    first = len(names)
    for split in ("train", "val"):
        for image_id in list_bsds(bsds, split):
            sample = load_bsds_sample(bsds, split, image_id)
            ann = min(sample.truths, key=lambda t: len(np.unique(t)))
            area = np.bincount(ann.ravel())
            ranked = [s for s in np.argsort(-area, kind="stable")[:segments]
                      if area[s] >= min_share * ann.size]  # fmt: skip
            lut = np.zeros(len(area), np.uint8)
            lut[ranked] = first + np.arange(len(ranked))
            Image.fromarray(sample.image).save(root / "images" / split / f"bsds_{image_id}.png")
            Image.fromarray(lut[ann]).save(root / "masks" / split / f"bsds_{image_id}.png")
    return names + [f"bsds:seg{k + 1}" for k in range(segments)]


def general_config(data: Path, iterations: int, seed: int, init_encoder: Path | None = None,
                   boundary_only: bool = False, native_share: float = 0.25,
                   ) -> RefinerConfig:  # fmt: skip
    """The shipped refiner's settings: the default network, native scales, class-agnostic."""
    return RefinerConfig(data=str(data), class_agnostic=True, native=True, truth_share=0.3,
                         iterations=iterations, seed=seed, native_share=native_share,
                         degrade=dict(BOUNDARY_ERRORS) if boundary_only else {},
                         init_encoder=str(init_encoder) if init_encoder else None)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-train", type=int, default=240)
    p.add_argument("--n-val", type=int, default=16)
    p.add_argument("--iterations", type=int, default=6000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--extra", type=Path, action="append", default=[],
                   help="a labelled dataset root (either layout) to train on too; repeatable")
    p.add_argument("--init-encoder", type=Path, default=None,
                   help="a U-Net segmenter run to start the encoder from (mind what it saw)")
    p.add_argument("--bsds", type=Path, default=None,
                   help="a BSDS500 root: its human segments as further objects")
    p.add_argument("--boundary-only", action="store_true",
                   help="coarse masks with boundary errors only (no missing or extra regions)")
    p.add_argument("--native-share", type=float, default=0.25,
                   help="share of each batch cropped at finer scales than the working size")
    args = p.parse_args()
    t0 = time.perf_counter()
    data = write_scenes(args.out / "data", args.n_train, args.n_val, args.seed)
    names = list(SYNTHETIC_CLASSES)
    for extra in args.extra:  # real data beside the scenes (mind their terms of use)
        names = add_dataset(data, extra, names)
    if args.bsds is not None:
        names = add_bsds(data, args.bsds, names)
    (data / "classes.txt").write_text("\n".join(names) + "\n")
    t1 = time.perf_counter()
    print(f"scenes: {t1 - t0:.0f} s")
    cfg = general_config(data, args.iterations, args.seed, args.init_encoder,
                         args.boundary_only, args.native_share)
    best = train_refiner(cfg, args.out / "run", device=args.device)
    print(f"trained in {time.perf_counter() - t1:.0f} s; best validation: {best}")


if __name__ == "__main__":
    main()
