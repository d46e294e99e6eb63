"""What ``segrefine refine --video`` writes, frame by frame, for a clip of any length.

For each frame named ``<name>`` (``000042`` in a video file, the file's stem in a folder):

* ``<name>.png`` -- refined class ids, palette PNG (VOC colours), as ``refine`` writes them;
* ``<name>_uncertainty.png`` -- uncertainty as 8-bit grey (0 = sure, 255 = unsure);
* ``<name>.npy`` -- with ``save_probs``: float16 probabilities (C, H, W);
* ``overlay.mp4`` -- the refined masks over the frames (OpenCV's ``mp4v``), or, where no mp4
  encoder is present, ``overlay/<name>.jpg`` frames;
* ``classes.txt`` -- the class order of the probabilities.

Everything is checked before the first output (the video opens and its first frame decodes,
every frame has its mask, each mask is read and fits its frame), and the outputs are written
into a hidden folder beside ``out`` and moved into ``out`` only when the clip is done: a run
that fails half-way leaves ``out`` as it found it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..benchmarking.report import overlay
from ..data.io import write_image, write_label_png, write_npy, write_text
from ..data.mask_folder import MaskFolder
from ..diffusion.onehot import check_coarse
from ..diffusion.refiner import Refiner
from ..errors import InputError
from ..runs import check_same_classes
from .frames import Frames
from .temporal import WEIGHT, refine_video


def refine_video_to_folder(
    refiner: Refiner,
    video: str | Path,
    out: str | Path,
    *,
    segmenter=None,
    masks: str | Path | None = None,
    mask_pattern: str | None = None,
    weight: float = WEIGHT,
    save_probs: bool = False,
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    native: bool | None = None,
    input_size: int | None = None,
    seed: int = 0,
    notice: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """Refine every frame of ``video`` into ``out`` (module docstring); returns the frames'
    names. ``weight``: the temporal prior's (0 = every frame alone,
    :func:`~segrefine.video.temporal.refine_video`). ``progress(done, total)`` is called
    after each frame."""
    if (segmenter is None) == (masks is None):
        raise InputError("give exactly one of --segmenter or --masks")
    if input_size is not None and segmenter is not None:
        raise InputError("--input-size is for --masks: a segmenter's own size is known")
    if not 0 <= weight <= 1:
        raise InputError(f"--temporal-weight must be in [0, 1], got {weight}")
    refiner.settings(steps, strength, samples, None, native)
    frames = Frames(video)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output folder is a file", out)
    folder = None
    if masks is not None:
        folder = _check_masks(refiner, frames, masks, mask_pattern, notice)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        names = _write(refiner, frames, work, segmenter, folder, weight, save_probs,
                       dict(steps=steps, strength=strength, samples=samples, native=native,
                            input_size=input_size, seed=seed), progress)  # fmt: skip
        class_names = refiner.class_names
        if refiner.spec.class_agnostic:
            class_names = segmenter.class_names if segmenter is not None else folder.names
        if class_names:
            write_text(work / "classes.txt", "\n".join(class_names) + "\n")
        out.mkdir(exist_ok=True)
        for item in sorted(work.iterdir()):
            target = out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            item.replace(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return names


def _check_masks(refiner: Refiner, frames: Frames, masks, pattern, notice) -> MaskFolder:
    """Every frame's mask found, read and checked against the frame size before any work."""
    classes = None if refiner.spec.class_agnostic else refiner.num_classes
    folder = MaskFolder(masks, classes, pattern, notice, refiner.class_names)
    if folder.names is not None and not refiner.spec.class_agnostic:
        check_same_classes(("the masks' classes.txt", folder.names),
                           ("the refiner", refiner.class_names),
                           folder.folder / "classes.txt")  # fmt: skip
    for name in frames.names():
        check_coarse(folder.read(name), frames.size, classes)
    return folder


def _write(refiner, frames: Frames, work: Path, segmenter, folder, weight, save_probs,
           settings: dict, progress) -> list[str]:  # fmt: skip
    import cv2

    names, writer, total = [], None, len(frames)
    coarse = {"segmenter": segmenter} if segmenter is not None else {"masks": folder.read}
    try:
        for f in refine_video(refiner, frames, temporal=weight > 0, weight=weight,
                              **coarse, **settings):  # fmt: skip
            r = f.refined
            write_label_png(work / f"{f.name}.png", r.labels)
            write_image(work / f"{f.name}_uncertainty.png",
                        (r.uncertainty * 255).round().astype(np.uint8))  # fmt: skip
            if save_probs:
                write_npy(work / f"{f.name}.npy", r.probs.astype(np.float16))
            shown = overlay(f.image, r.labels)
            if writer is None:
                writer = _video_writer(work / "overlay.mp4", frames.fps, shown.shape[:2])
            if writer is not False:
                writer.write(np.ascontiguousarray(shown[..., ::-1]))
            else:  # no mp4 encoder in this OpenCV build: the overlay as frames
                (work / "overlay").mkdir(exist_ok=True)
                cv2.imwrite(str(work / "overlay" / f"{f.name}.jpg"), shown[..., ::-1])
            names.append(f.name)
            if progress is not None:
                progress(len(names), total)
    finally:
        if writer:
            writer.release()
    return names


def _video_writer(path: Path, fps: float, shape: tuple[int, int]):
    """An mp4 writer for frames of ``shape`` (H, W), or False where OpenCV has no encoder."""
    import cv2

    h, w = shape
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        writer.release()
        path.unlink(missing_ok=True)
        return False
    return writer
