"""Refining a clip frame by frame, streaming, with a temporal prior that keeps masks still.

A refiner run on each frame alone flickers: its samples differ, and an unsure boundary pixel
falls one way in one frame and the other way in the next. With the temporal prior, the
previous frame's output probabilities are warped to the current frame along optical flow
(:mod:`segrefine.video.flow`) and, where the flow is reliable, blended with weight ``w``:

* ``carry="output"`` (default): into the current frame's refined probabilities, a filter along
  the motion; the refiner sees only the frame's own coarse input::

      out_t = (1 - w) * refine(coarse_t) + w * warp(out_{t-1})

* ``carry="input"``: into the current frame's coarse input before refining, which reaches the
  default sampler's start state and its condition at once
  (:mod:`segrefine.diffusion.modes.default`)::

      out_t = refine((1 - w) * coarse_t + w * warp(out_{t-1}))

* ``carry="both"``: both of the above.

Carried into the input, the prior makes the refiner refine its own earlier output, frame after
frame: on Weizmann clips this gains Boundary IoU, on the synthetic scenes (objects that turn
and scale) it drifts and loses it; carried into the output, the refiner never sees its own
output and both gain consistency at no cost in accuracy (docs/benchmarks.md, "Video"). The
sampling noise is the same every frame (one seed per clip), so a pixel's draw does not change
between frames unless its probabilities do. What is kept between frames is the previous
frame's grey image and output probabilities: memory does not grow with the clip.

>>> for f in refine_video(refiner, "clip.mp4", segmenter=seg):     # doctest: +SKIP
...     f.name, f.refined.labels, f.refined.probs, f.refined.uncertainty
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.coarse import Coarse, interpret_array
from ..diffusion.agnostic import class_priors
from ..diffusion.native import effective_size
from ..diffusion.onehot import prior_for_image
from ..diffusion.refiner import Refinement, Refiner
from ..errors import InputError
from .flow import FLOW_SIDE, Motion, flow_to_previous, grey, warp_channels
from .frames import Frame, Frames, frame_name

WEIGHT = 0.5  # the previous frame's share where the flow is reliable
CARRY = ("output", "input", "both")  # where the prior is blended in (module docstring)


@dataclass
class VideoFrame:
    """One refined frame: its index and name, the RGB frame, the coarse labels (H, W), the
    refinement (labels, probs, uncertainty) and the motion from the previous frame (None for
    the first, and without the temporal prior; its flow and reliability mask, e.g. for
    :class:`~segrefine.video.consistency.TemporalConsistency`)."""

    index: int
    name: str
    image: np.ndarray
    coarse_labels: np.ndarray
    refined: Refinement
    motion: Motion | None


def refine_video(
    refiner: Refiner,
    frames: str | Path | Iterable[np.ndarray | Frame],
    segmenter=None,
    masks: Iterable | Callable[[str], Coarse] | None = None,
    *,
    temporal: bool = True,
    weight: float = WEIGHT,
    carry: str = "output",
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    native: bool | None = None,
    input_size: int | None = None,
    seed: int = 0,
    flow_side: int = FLOW_SIDE,
    timings: dict[str, float] | None = None,
) -> Iterator[VideoFrame]:
    """Refine a clip's frames one by one, yielding each as soon as it is refined.

    ``frames``: a video file or folder of frames (:class:`~segrefine.video.frames.Frames`),
    or any iterable of RGB uint8 frames (H, W, 3) of one size. The coarse input is exactly one
    of ``segmenter`` (its probabilities) or ``masks``: an iterable of one coarse input per
    frame (arrays as :meth:`Refiner.refine` takes them, or
    :class:`~segrefine.data.coarse.Coarse`), or a function from a frame's name to its
    ``Coarse`` (e.g. :meth:`MaskFolder.read <segrefine.data.mask_folder.MaskFolder.read>`).
    ``temporal`` turns the temporal prior on (module docstring) with ``weight`` in [0, 1],
    blended where ``carry`` says; off, every frame is refined alone, as ``refine`` refines
    images. ``steps``, ``strength``, ``samples``, ``native`` and ``input_size`` as for
    :meth:`Refiner.refine`; ``seed`` is the clip's noise seed, the same for every frame.
    Seconds per stage (``segment_s``, ``flow_s``, ``refine_s``) are added to ``timings`` when
    a dict is given.
    """
    if (segmenter is None) == (masks is None):
        raise InputError("give exactly one coarse input: a segmenter or per-frame masks")
    if not 0 <= weight <= 1:
        raise InputError(f"the temporal prior's weight must be in [0, 1], got {weight}")
    if carry not in CARRY:
        raise InputError(f"carry must be one of {', '.join(CARRY)}, got {carry!r}")
    if flow_side < 16:
        raise InputError(f"the flow's working side must be at least 16 px, got {flow_side}")
    refiner.settings(steps, strength, samples, None, native)  # bad settings fail before work
    if segmenter is not None:
        from ..pipeline import check_pair

        check_pair(segmenter, refiner)
        input_size = segmenter.size
    clock = timings if timings is not None else {}
    if isinstance(frames, str | Path):
        frames = Frames(frames)
    coarse_of = _coarse_source(masks, refiner)
    previous: tuple[np.ndarray, np.ndarray] | None = None  # grey frame, refined probs
    for i, item in enumerate(frames):
        frame = item if isinstance(item, Frame) else Frame(i, frame_name(i), np.asarray(item))
        t0 = time.perf_counter()
        if segmenter is not None:
            coarse = Coarse(probs=segmenter.predict(frame.image))
        else:
            coarse = coarse_of(frame)
        t1 = time.perf_counter()
        prior = _prior(refiner, frame.image, coarse)
        use_prior = temporal and weight > 0
        g = grey(frame.image, flow_side) if use_prior else None
        motion = None
        if previous is not None:  # alone (no prior), a frame needs no flow
            motion = flow_to_previous(previous[0], g, shape=frame.image.shape[:2])
        t2 = time.perf_counter()
        size = input_size
        if size is None and refiner.settings(native=native)["native"]:
            # the coarse input's own detail, judged before the blend softens it
            size = min(effective_size(prior))
        carried = w = None
        if motion is not None:
            carried = warp_channels(previous[1], motion.flow)
            w = (weight * motion.reliable).astype(np.float32)
        if carried is not None and carry in ("input", "both"):
            prior = (1 - w) * prior + w * carried
            prior /= prior.sum(0, keepdims=True)
        refined = refiner.refine(frame.image, prior, steps=steps, strength=strength,
                                 samples=samples, seed=seed, native=native,
                                 input_size=size)  # fmt: skip
        if carried is not None and carry in ("output", "both"):
            probs = (1 - w) * refined.probs + w * carried
            refined = Refinement(probs.argmax(0).astype(refined.labels.dtype), probs,
                                 refined.uncertainty, refined.nfe)  # fmt: skip
        t3 = time.perf_counter()
        for key, dt in (("segment_s", t1 - t0), ("flow_s", t2 - t1), ("refine_s", t3 - t2)):
            clock[key] = clock.get(key, 0.0) + dt
        previous = (g, refined.probs) if use_prior else None
        yield VideoFrame(frame.index, frame.name, frame.image, coarse.top_labels(), refined,
                         motion)  # fmt: skip


def _coarse_source(masks, refiner: Refiner) -> Callable[[Frame], Coarse]:
    """Each frame's coarse input from ``masks`` (see :func:`refine_video`)."""
    if masks is None:
        return lambda frame: None
    if callable(masks):
        return lambda frame: masks(frame.name)
    it = iter(masks)
    classes = None if refiner.spec.class_agnostic else refiner.num_classes

    def next_mask(frame: Frame) -> Coarse:
        try:
            given = next(it)
        except StopIteration:
            raise InputError(f"no mask for frame {frame.name}: fewer masks than "
                             "frames") from None  # fmt: skip
        return given if isinstance(given, Coarse) else interpret_array(given, classes)

    return next_mask


def _prior(refiner: Refiner, image: np.ndarray, coarse: Coarse) -> np.ndarray:
    """The coarse input as probabilities (C, H, W) at the frame's size: the refiner's
    classes, or for a class-agnostic refiner the input's own."""
    if refiner.spec.class_agnostic:
        return class_priors([image], [coarse])[0]
    return prior_for_image(image.shape[:2], refiner.num_classes, coarse.probs, coarse.labels,
                           coarse.path)  # fmt: skip
