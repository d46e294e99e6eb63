"""Optical flow between consecutive frames, where it can be trusted, and warping along it.

Flow is OpenCV's DIS (Kroeger et al., ECCV 2016) on grey frames at a bounded working size
(:data:`FLOW_SIDE`, the long side): fast on a CPU, and a mask's consistency needs the motion
of regions, not of single pixels. The flow is scaled back to the frame's size.

:func:`flow_to_previous` gives, for each pixel of the current frame, where it was in the
previous one; :func:`warp` pulls any per-pixel map of the previous frame along it to the
current frame. Pixels whose forward and backward flows disagree (occlusions, disocclusions,
flow errors; the test of Sundaram et al., ECCV 2010) or that come from outside the previous
frame are marked unreliable: nothing is carried over there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOW_SIDE = 320  # the long side flow is computed at; 640 px frames take ~10 ms here
# forward-backward test: |f + b|^2 < ALPHA (|f|^2 + |b|^2) + BETA, in working-size pixels
ALPHA, BETA = 0.01, 0.5


@dataclass
class Motion:
    """Flow from the current frame back to the previous one, (H, W, 2) in (dx, dy) pixels at
    the current frame's size, and where it is reliable, (H, W) bool."""

    flow: np.ndarray
    reliable: np.ndarray


def _dis():
    import cv2

    # the MEDIUM preset: FAST leaves visible errors at object edges on textured backgrounds
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def grey(image: np.ndarray, side: int = FLOW_SIDE) -> np.ndarray:
    """An RGB uint8 frame as grey uint8 at a long side of at most ``side`` px."""
    import cv2

    g = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    scale = min(1.0, side / max(h, w))
    if scale < 1:
        g = cv2.resize(g, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    return g


def flow_to_previous(previous: np.ndarray, current: np.ndarray, side: int = FLOW_SIDE,
                     shape: tuple[int, int] | None = None) -> Motion:  # fmt: skip
    """Where each pixel of ``current`` was in ``previous`` (RGB uint8 frames, or grey ones
    from :func:`grey`), with the forward-backward reliability mask (module docstring), at
    ``shape`` (H, W) (default: ``current``'s)."""
    shape = current.shape[:2] if shape is None else shape
    g0 = previous if previous.ndim == 2 else grey(previous, side)
    g1 = current if current.ndim == 2 else grey(current, side)
    dis = _dis()
    back = dis.calc(g1, g0, None)  # g1(x) ~ g0(x + back(x))
    fwd = dis.calc(g0, g1, None)  # g0(x) ~ g1(x + fwd(x))
    # a round trip current -> previous -> current should come home
    fwd_there = warp(fwd, back, nearest=False)
    err = ((back + fwd_there) ** 2).sum(-1)
    bound = ALPHA * ((back**2).sum(-1) + (fwd_there**2).sum(-1)) + BETA
    reliable = (err < bound) & _lands_inside(back)
    return _at_size(Motion(back, reliable), shape)


def warp(previous: np.ndarray, flow: np.ndarray, nearest: bool = False) -> np.ndarray:
    """``previous`` (H, W) or (H, W, K) pulled to the current frame along ``flow`` (H, W, 2),
    as :func:`flow_to_previous` gives it: out[y, x] = previous[y + dy, x + dx], bilinear (or
    ``nearest``, which keeps values such as labels or noise as they were), the border pixels
    repeated outside the frame. Channels-first maps (C, H, W) go through
    :func:`warp_channels`."""
    import cv2

    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    src = np.ascontiguousarray(previous)
    if src.dtype == np.float16 or src.dtype == np.float64:
        src = src.astype(np.float32)
    if src.ndim == 3 and src.shape[2] > 4:  # remap takes at most 4 channels at once
        return np.stack([warp(src[..., k], flow, nearest) for k in range(src.shape[2])], -1)
    return cv2.remap(src, xs + flow[..., 0], ys + flow[..., 1], interp,
                     borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


def warp_channels(maps: np.ndarray, flow: np.ndarray, nearest: bool = False) -> np.ndarray:
    """:func:`warp` for a channels-first stack (C, H, W), e.g. class probabilities."""
    return np.moveaxis(warp(np.moveaxis(maps, 0, -1), flow, nearest).reshape(
        *flow.shape[:2], -1), -1, 0)  # fmt: skip


def _lands_inside(flow: np.ndarray) -> np.ndarray:
    h, w = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    return (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)


def _at_size(motion: Motion, shape: tuple[int, int]) -> Motion:
    """A working-size motion scaled to a frame of ``shape`` (H, W)."""
    import cv2

    h, w = motion.flow.shape[:2]
    if (h, w) == tuple(shape):
        return motion
    H, W = shape
    flow = cv2.resize(motion.flow, (W, H), interpolation=cv2.INTER_LINEAR)
    flow[..., 0] *= W / w
    flow[..., 1] *= H / h
    reliable = cv2.resize(motion.reliable.astype(np.uint8), (W, H),
                          interpolation=cv2.INTER_NEAREST).astype(bool)  # fmt: skip
    return Motion(flow, reliable)
