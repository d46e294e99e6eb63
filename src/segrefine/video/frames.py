"""Frames of a video, one at a time: a video file OpenCV can decode, or a folder of images.

Nothing here holds more than one decoded frame: a clip of any length streams through in the
memory of one frame (``tests/test_video.py`` checks it). A frame is named by its index,
``000000``, ``000001``, ... in a video file, and by its file's name without extension in a
folder; those names find each frame's mask in a ``--masks`` folder and name its outputs.

Inputs are checked where they enter, as images are (:mod:`segrefine.data.io`): a missing or
undecodable file, a frame of no pixels or of an aspect ratio a model refuses, a frame over
:data:`MAX_FRAME_PIXELS` or a clip over :data:`MAX_FRAMES` frames is an
:class:`~segrefine.errors.InputError` naming the file, raised by :func:`open_frames` before
the first frame is handed out when it can be known then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.io import IMAGE_EXTENSIONS, list_images, read_image
from ..data.transforms import check_aspect
from ..errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif")
# a refined frame costs about a second on 2 CPU cores at 1 MP: 10 000 frames is hours of work,
# the most a single command should be asked to do; split longer clips
MAX_FRAMES = 10_000
# 8.3 MP: a 4K UHD frame. Flow runs at a bounded working size, but the refiner's native
# passes and the written outputs are at the frame's own size
MAX_FRAME_PIXELS = 3840 * 2160
DEFAULT_FPS = 25.0  # a folder of frames has no rate: the overlay video plays it at this


@dataclass
class Frame:
    """One frame: its index in the clip, its name (for masks and outputs), RGB uint8."""

    index: int
    name: str
    image: np.ndarray


class Frames:
    """A clip opened for streaming (see the module docstring). ``len()`` is the number of
    frames (a video file's header count, which some containers only estimate); iterate for
    :class:`Frame` objects, decoded one at a time. ``size`` is (H, W) of the first frame:
    every frame must have it; ``fps`` the video's frame rate (:data:`DEFAULT_FPS` for a
    folder or a video that does not say)."""

    def __init__(self, source: str | Path, max_frames: int = MAX_FRAMES):
        self.source = Path(source)
        self.max_frames = max_frames
        if self.source.is_dir():
            self.files: list[Path] | None = list_images(self.source)
            if not self.files:
                raise InputError("no frames (image files) in this folder", self.source)
            count = len(self.files)
            first = read_image(self.files[0])
            self.fps = DEFAULT_FPS
        elif self.source.is_file():
            if self.source.suffix.lower() in IMAGE_EXTENSIONS:
                raise InputError("is one image, not a video: give a video file or a folder "
                                 "of frames", self.source)  # fmt: skip
            self.files = None
            cap = _open_capture(self.source)
            count = int(cap.get(_cv2().CAP_PROP_FRAME_COUNT) or 0)
            fps = float(cap.get(_cv2().CAP_PROP_FPS) or 0)
            self.fps = fps if 0 < fps <= 240 else DEFAULT_FPS
            ok, bgr = cap.read()
            cap.release()
            if not ok or bgr is None:
                raise InputError("no frame could be decoded: not a video OpenCV can read",
                                 self.source)  # fmt: skip
            first = _rgb(bgr)
        else:
            raise InputError("no such video file or folder of frames", self.source)
        if count > max_frames:
            raise InputError(f"{count} frames, over the {max_frames} one run refines: split "
                             "the clip", self.source)  # fmt: skip
        self.count = max(count, 1)
        self.size = _check_frame(first, self.source)

    def __len__(self) -> int:
        return self.count

    def names(self) -> list[str]:
        """Every frame's name, known without decoding (from the header count for a video)."""
        if self.files is not None:
            return [p.stem for p in self.files]
        return [frame_name(i) for i in range(self.count)]

    def __iter__(self) -> Iterator[Frame]:
        if self.files is not None:
            for i, path in enumerate(self.files):
                yield self._checked(Frame(i, path.stem, read_image(path)), path)
            return
        cap = _open_capture(self.source)
        try:
            i = 0
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    return
                if i >= self.max_frames:
                    raise InputError(f"more than {self.max_frames} frames: split the clip",
                                     self.source)  # fmt: skip
                yield self._checked(Frame(i, frame_name(i), _rgb(bgr)), self.source)
                i += 1
        finally:
            cap.release()

    def _checked(self, frame: Frame, path: Path) -> Frame:
        if frame.image.shape[:2] != self.size:
            h, w = frame.image.shape[:2]
            raise InputError(f"frame {frame.name} is {w}x{h} but the clip's first frame is "
                             f"{self.size[1]}x{self.size[0]}: every frame must have one size",
                             path)  # fmt: skip
        return frame


def open_frames(source: str | Path, max_frames: int = MAX_FRAMES) -> Frames:
    """The frames of a video file or folder of images, checked at the door (module docs)."""
    return Frames(source, max_frames)


def frame_name(index: int) -> str:
    """A video file's frame ``index`` as its outputs and masks are named: ``000042``."""
    return f"{index:06d}"


def _check_frame(image: np.ndarray, path: Path) -> tuple[int, int]:
    h, w = image.shape[:2]
    if h * w > MAX_FRAME_PIXELS:
        raise InputError(f"frames are {w}x{h} = {w * h / 1e6:.1f} MP, over the "
                         f"{MAX_FRAME_PIXELS / 1e6:.1f} MP (4K) refined: downscale the clip",
                         path)  # fmt: skip
    check_aspect((h, w), 128, path)
    return int(h), int(w)


def _cv2():
    import cv2

    return cv2


def _open_capture(path: Path):
    cv2 = _cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise InputError("cannot be opened as a video (OpenCV could not decode it)", path)
    return cap


def _rgb(bgr: np.ndarray) -> np.ndarray:
    if bgr.ndim == 2:  # a grey video
        return np.repeat(bgr[..., None], 3, axis=2)
    return np.ascontiguousarray(bgr[..., 2::-1])
