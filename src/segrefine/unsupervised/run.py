"""Segmenting files: images in, colour-coded segment PNGs and id maps out (used by the CLI)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.io import IMAGE_EXTENSIONS, list_images, read_image, read_mask
from ..errors import InputError
from .cluster import ClusterConfig, check_work_size, cluster
from .output import write_segments

__all__ = ["cluster_paths", "config_for_cli", "read_scribbles"]


def config_for_cli(paper: bool = False, **settings) -> ClusterConfig:
    """The default (or paper) configuration with the given settings on top."""
    base = ClusterConfig.paper() if paper else ClusterConfig()
    if paper:  # the paper's own values win unless the user changed the CLI defaults
        defaults = ClusterConfig()
        settings = {k: v for k, v in settings.items() if v != getattr(defaults, k)}
    return replace(base, **settings)


def read_scribbles(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a scribble map (255 = unmarked) that must have the image's size ``shape``."""
    scribbles = read_mask(path)
    if scribbles.shape != tuple(shape):
        raise InputError(
            f"scribble map is {scribbles.shape[1]}x{scribbles.shape[0]}, image is "
            f"{shape[1]}x{shape[0]}",
            path,
        )
    return scribbles


def _inputs(images: Path) -> list[Path]:
    if images.is_dir():
        found = list_images(images)
        if not found:
            raise InputError("no images in folder", images)
        return found
    if not images.exists():
        raise InputError("no such file or folder", images)
    if images.suffix.lower() not in IMAGE_EXTENSIONS:
        raise InputError(
            f"not an image file (expected one of {', '.join(IMAGE_EXTENSIONS)})", images
        )
    return [images]


def cluster_paths(
    images: str | Path,
    out: str | Path,
    config: ClusterConfig | None = None,
    scribbles: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Segment an image or a folder of images into ``out``; returns the colour PNGs written.

    Every input is checked before any work starts, so a bad file fails fast and nothing is
    half-written. With ``scribbles``, each image needs ``<scribbles>/<name>.png``.
    """
    paths = _inputs(Path(images))
    jobs = []
    for path in paths:
        image = read_image(path)
        check_work_size(image.shape[:2], config or ClusterConfig(), path)
        scr = None
        if scribbles is not None:
            scr_path = Path(scribbles) / f"{path.stem}.png"
            if not scr_path.is_file():
                raise InputError("no scribble map for this image", scr_path)
            scr = read_scribbles(scr_path, image.shape[:2])
        jobs.append((path, scr))
    written = []
    for path, scr in tqdm(jobs, desc="cluster", disable=not progress or len(jobs) == 1):
        labels = cluster(read_image(path), scr, config=config, progress=progress)
        written.append(write_segments(out, path.stem, labels)[0])
    return written
