"""Clips with exact truth for every frame, from fixed seeds (issue 33's benchmark data).

* :func:`camera_clip`: a virtual camera moving over one photo (a pan, a zoom, small shakes):
  each frame is the photo seen through an affine window, JPEG-compressed at a quality drawn
  per frame, its brightness drifting; the truth is the photo's mask through the same window
  (nearest neighbour), so it is exact wherever the photo's is.
* :func:`scene_clip`: a synthetic scene (:func:`segrefine.data.synthetic_scene.generate_scene`)
  whose objects move and deform: each object on its own path (a drift, a slow turn, a
  breathing scale), over the scene's background with the objects painted out, then the same
  camera noise (JPEG, brightness).

A clip is a list of (RGB uint8 frame, uint8 truth) pairs: clips here are short (20 frames).
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

from segrefine.data.synthetic_scene import generate_scene

PATHS = ("pan", "zoom", "shake")


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _camera_noise(image: np.ndarray, t: int, rng: np.random.Generator, drift: float):
    """Brightness drifting linearly over the clip (``drift`` per frame) and a JPEG quality
    drawn per frame: what a real camera adds between two frames of a still scene."""
    gain = 1.0 + drift * t
    out = np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    return _jpeg(out, int(rng.integers(55, 90)))


def _window(path: str, t: int, n: int, shape, rng: np.random.Generator, shake):
    """The affine map (2 x 3, output -> photo) of frame ``t`` of ``n`` on ``path``: a window of
    80% of the photo's sides, panning across it, zooming in on it, or still but shaking."""
    h, w = shape
    s = 0.8  # the window's share of the photo: room to pan and zoom
    u = t / max(1, n - 1)
    cx, cy, zoom = w / 2, h / 2, 1.0
    if path == "pan":
        cx = w * (0.5 - 0.1 + 0.2 * u)
        cy = h * (0.5 + 0.03 * np.sin(2 * np.pi * u))
    elif path == "zoom":
        zoom = 1.0 + 0.25 * u
    dx, dy, rot = shake[t]
    cx, cy = cx + dx, cy + dy
    a = np.deg2rad(rot)
    scale = s / zoom
    c, si = np.cos(a) * scale, np.sin(a) * scale
    ow, oh = round(w * s), round(h * s)
    # photo = R * (out - out_centre) + centre
    m = np.array([[c, -si, 0.0], [si, c, 0.0]])
    m[:, 2] = [cx, cy] - m[:, :2] @ [ow / 2, oh / 2]
    return m, (oh, ow)


def camera_clip(image: np.ndarray, mask: np.ndarray, path: str, seed: int, n: int = 20,
                out_side: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """``n`` frames of a camera moving over ``image`` along ``path`` (see :data:`PATHS`),
    its ``mask`` moved the same way (module docstring). ``out_side``: resize the window so its
    long side is this many px (default: as the photo)."""
    rng = np.random.default_rng(seed)
    h, w = mask.shape
    amp = 0.006 * max(h, w) if path == "shake" else 0.0015 * max(h, w)
    shake = [(rng.normal(0, amp), rng.normal(0, amp), rng.normal(0, 0.3 if path == "shake"
                                                                  else 0.05))
             for _ in range(n)]  # fmt: skip
    drift = float(rng.uniform(-0.012, 0.012))
    frames = []
    for t in range(n):
        m, (oh, ow) = _window(path, t, n, (h, w), rng, shake)
        if out_side is not None:
            f = out_side / max(oh, ow)
            m = m @ np.array([[1 / f, 0, 0], [0, 1 / f, 0], [0, 0, 1]])
            oh, ow = round(oh * f), round(ow * f)
        flags = cv2.WARP_INVERSE_MAP
        img = cv2.warpAffine(image, m, (ow, oh), flags=cv2.INTER_LINEAR | flags,
                             borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        truth = cv2.warpAffine(mask, m, (ow, oh), flags=cv2.INTER_NEAREST | flags,
                               borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        frames.append((_camera_noise(img, t, rng, drift), truth))
    return frames


def scene_clip(seed: int, n: int = 20, size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` frames of a synthetic scene whose objects move and deform (module docstring)."""
    image, mask = generate_scene(seed, size)
    rng = np.random.default_rng(seed + 1)
    objects = mask > 0
    hole = ndimage.binary_dilation(objects, iterations=3).astype(np.uint8)
    background = cv2.inpaint(image, hole, 5, cv2.INPAINT_TELEA)
    parts, count = ndimage.label(objects)
    moves = []
    for k in range(1, count + 1):
        ys, xs = np.nonzero(parts == k)
        moves.append({
            "k": k, "centre": (xs.mean(), ys.mean()),
            "v": rng.normal(0, size * 0.006, 2), "turn": rng.normal(0, 0.8),
            "breathe": rng.uniform(0.02, 0.06), "phase": rng.uniform(0, 2 * np.pi),
        })  # fmt: skip
    drift = float(rng.uniform(-0.012, 0.012))
    frames = []
    for t in range(n):
        img, truth = background.copy(), np.zeros_like(mask)
        for mv in moves:  # later objects over earlier ones, as generate_scene paints them
            cx, cy = mv["centre"]
            scale = 1 + mv["breathe"] * np.sin(0.4 * t + mv["phase"])
            m = cv2.getRotationMatrix2D((cx, cy), mv["turn"] * t, scale)
            m[:, 2] += mv["v"] * t
            part = ((parts == mv["k"]) * mask).astype(np.uint8)
            moved = cv2.warpAffine(part, m, (size, size), flags=cv2.INTER_NEAREST)
            pixels = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR)
            on = moved > 0
            img[on], truth[on] = pixels[on], moved[on]
        frames.append((_camera_noise(img, t, rng, drift), truth))
    return frames
