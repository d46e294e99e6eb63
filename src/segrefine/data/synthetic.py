"""Deterministic synthetic scenes: the embedded demo dataset and the test fixture.

Every scene is a cluttered, textured background with 0-6 objects of four classes painted on it
in z-order (``SYNTHETIC_CLASSES``: background, blob, star, worm, ring). At 128 px a scene takes
a few milliseconds, and it reproduces the hard cases a mask refiner is meant to fix:

* **camouflage** - the background palette and the clutter are drawn from the same four hue
  families as the objects, so a pixel's colour does not say whether it belongs to an object
  (a per-pixel colour classifier is near chance); some objects (10%) go further and copy the
  colour of the background under them with a toned-down texture;
* **overlap and occlusion** - objects are often placed against earlier ones (the mask shows the
  topmost), run out of the frame, and are sometimes crossed by straight background "twigs";
* **thin parts** - worms are curved strokes 5-8 px wide, stars have thin spikes and rings a hole,
  so a pixel of boundary error costs a large share of their IoU;
* **distractors** - rectangles, straight bars and large irregular patches in the same colours,
  now and then in the objects' textures.

What makes the task learnable is the conjunction of cues, none decisive on its own: each class
has a characteristic texture (blob: dots, star: stripes, worm: tube shading, ring: checker; 90%
of the time), a characteristic hue family (90% of the time; the background uses all of them),
its shape, a higher texture contrast than the clutter, and usually a soft drop shadow. The
demo's U-Net (width 16, 25 epochs on 200 scenes, about 3 CPU minutes) scored 66 mIoU on val
(background 95, blob 67, star 62, worm 49, ring 59; Boundary IoU 47): learnable, yet with
missed camouflaged objects, class confusions and thin-structure boundaries left for a refiner.
About one scene in ten holds no object at all.

Scenes are fully determined by their integer seed (a private ``numpy.random.Generator`` per
scene; the global RNG is never touched). :func:`write_synthetic_dataset` writes them in the
project's generic folder layout.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.draw import polygon as draw_polygon

__all__ = ["SYNTHETIC_CLASSES", "generate_scene", "write_synthetic_dataset"]

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "blob", "star", "worm", "ring")
"""Class names in id order; id 0 is the background. Masks have no void label."""

# Bump whenever the scene distribution changes, so cached datasets on disk are regenerated.
_GENERATOR_VERSION = 2
_SPLITS: tuple[str, ...] = ("train", "val")
_MIN_SIZE = 16

_TEXTURES: tuple[str, ...] = ("dots", "stripes", "tube", "checker", "speckle", "smooth")
_CLASS_TEXTURE: dict[int, str] = {1: "dots", 2: "stripes", 3: "tube", 4: "checker"}
# A class wears its own texture this often; otherwise a random one (texture is a cue, not a key).
_P_CHARACTERISTIC_TEXTURE = 0.9
# Clutter favours the plain textures, so that texture is informative without being decisive.
_CLUTTER_TEXTURE_P = np.array([0.02, 0.02, 0.02, 0.02, 0.46, 0.46])  # same order as _TEXTURES
_N_CLUTTER = (2, 6)  # distractor shapes per scene, [low, high)
# Object class frequencies (blob, star, worm, ring): thin worms cover few pixels, so they are
# drawn more often to keep the classes' pixel shares within a factor of a few of each other.
_CLASS_P = np.array([0.2, 0.2, 0.4, 0.2])
_P_EMPTY_SCENE = 0.1
# Hue (degrees) of each object class's colour family (blob, star, worm, ring). The background
# palette is drawn from the same families, so a colour hints at which class an object is but not
# at whether a pixel belongs to an object at all.
_FAMILY_HUES = np.array([0.0, 90.0, 180.0, 270.0])
# How often a background palette colour comes from each family: the families' measured shares of
# object pixels, so that background and object pixels have the same colour distribution.
_PALETTE_FAMILY_P = np.array([0.35, 0.19, 0.24, 0.22])
# An object takes its class's colour family this often, otherwise a random family.
_P_CHARACTERISTIC_COLOUR = 0.9
# Chance that an object copies the colour of the background under it (camouflage).
_P_CAMOUFLAGE = 0.1
# Chance that a later object is placed against an earlier one, so that they overlap.
_P_OVERLAP = 0.5
_P_OCCLUDER = 0.3
# Chance that an object casts a soft shadow (objects lie on top of the clutter): a shape cue
# that owes nothing to colour.
_P_SHADOW = 0.8

_Mask = np.ndarray  # bool (size, size)


# --------------------------------------------------------------------------- helpers


def _smooth_field(
    size: int, rng: np.random.Generator, max_cycles: float, terms: int = 6
) -> np.ndarray:
    """Random low-frequency field, float32 (size, size), roughly zero-mean and in [-1, 1].

    A sum of a few random plane waves is smooth and has no border artefacts, unlike upsampled or
    heavily blurred white noise at this image size. Each wave ``sin(a x + b y + p)`` splits into
    ``sin(a x + p) cos(b y) + cos(a x + p) sin(b y)``, so the whole sum is one small matrix
    product instead of ``terms`` full-frame ``sin`` evaluations.
    """
    theta = rng.uniform(0.0, np.pi, terms)
    freq = rng.uniform(0.3, max_cycles, terms) * 2.0 * np.pi / size
    phase = rng.uniform(0.0, 2.0 * np.pi, terms)
    coord = np.arange(size, dtype=np.float64)[:, None]
    ax = coord * (freq * np.cos(theta))[None, :] + phase[None, :]  # (size, terms), along x
    by = coord * (freq * np.sin(theta))[None, :]  # along y
    rows = np.concatenate([np.cos(by), np.sin(by)], axis=1)
    cols = np.concatenate([np.sin(ax), np.cos(ax)], axis=1)
    field = rows @ cols.T / np.sqrt(terms / 2.0) / 2.0
    return field.astype(np.float32)


def _texture(kind: str, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Texture values in [0, 1] at pixel coordinates ``(yy, xx)``, at a random angle and period.

    Working on the coordinates of the painted region only (not the full frame) keeps the cost
    proportional to the area actually painted.
    """
    theta = rng.uniform(0.0, np.pi)
    cos_t, sin_t = float(np.cos(theta)), float(np.sin(theta))  # python floats keep float32
    u = xx * cos_t + yy * sin_t
    v = yy * cos_t - xx * sin_t
    if kind == "stripes":
        period = float(rng.uniform(6.0, 10.0))
        wave = np.sin(u * float(2.0 * np.pi / period) + float(rng.uniform(0.0, 2.0 * np.pi)))
        # Sharpen the sine into near-square stripes so they survive the final blur.
        return np.clip(wave * 1.5 + 0.5, 0.0, 1.0)
    if kind == "dots":
        period = float(rng.uniform(7.0, 11.0))
        radius = period * float(rng.uniform(0.2, 0.35))
        du = np.mod(u + float(rng.uniform(0.0, period)), period) - period / 2.0
        dv = np.mod(v + float(rng.uniform(0.0, period)), period) - period / 2.0
        return (du * du + dv * dv < radius * radius).astype(np.float32)
    if kind == "checker":
        period = float(rng.uniform(6.0, 11.0))
        cells = np.floor(u / period) + np.floor(v / period)
        return np.mod(cells, 2.0).astype(np.float32)
    if kind == "smooth":
        # A gentle shading ramp: "no texture" that still is not a flat colour. The ramp is
        # centred on the region so that it does not shift the region's mean colour.
        length = float(rng.uniform(40.0, 120.0))
        return np.clip(0.5 + (u - float(u.mean())) / length, 0.0, 1.0) if u.size else u
    if kind == "speckle":
        # Per-pixel grain; the final camera blur gives it a little spatial correlation.
        return rng.random(u.shape, dtype=np.float32)
    raise ValueError(f"unknown texture {kind!r}")


def _paint(
    image: np.ndarray,
    region: np.ndarray,
    kind: str,
    base: np.ndarray,
    rng: np.random.Generator,
    contrast: tuple[float, float] = (20.0, 60.0),
) -> None:
    """Paint ``region`` of ``image`` in place with texture ``kind`` around colour ``base``.

    The two texture colours sit symmetrically around ``base`` with a random offset direction, so
    texturing does not move the region's mean colour (which keeps the camouflage statistics
    honest). ``contrast`` is the range of the brightness difference between the two colours.
    """
    yy, xx = np.nonzero(region)
    if yy.size == 0:
        return
    if kind == "tube":
        # Shading by depth inside the region: a rounded, tube-like look that stays visible on
        # strokes only a few pixels wide, where periodic textures vanish.
        box = _bbox(region, 1)
        depth = ndimage.distance_transform_edt(region[box])[yy - box[0].start, xx - box[1].start]
        t = np.clip((depth - 0.5) / float(rng.uniform(1.5, 3.0)), 0.0, 1.0).astype(np.float32)
    else:
        t = _texture(kind, yy.astype(np.float32), xx.astype(np.float32), rng)
    # Mostly a brightness offset with a little hue, like real surface patterns.
    offset = rng.uniform(*contrast) * rng.choice([-1.0, 1.0]) + rng.normal(0.0, 12.0, 3)
    image[yy, xx] = base[None, :] + (t[:, None] - 0.5) * offset[None, :].astype(np.float32)


def _polygon_mask(rows: np.ndarray, cols: np.ndarray, size: int) -> _Mask:
    mask = np.zeros((size, size), bool)
    rr, cc = draw_polygon(rows, cols, shape=(size, size))
    mask[rr, cc] = True
    return mask


def _radial_shape(cy: float, cx: float, radii: np.ndarray, angles: np.ndarray, size: int) -> _Mask:
    return _polygon_mask(cy + radii * np.sin(angles), cx + radii * np.cos(angles), size)


def _radial_noise(n: int, rng: np.random.Generator, amplitude: float, max_harmonic: int = 5):
    """Smooth periodic perturbation of a radius, sampled at ``n`` angles."""
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    out = np.zeros(n)
    for k in range(2, max_harmonic + 1):
        out += (
            rng.uniform(0.0, amplitude)
            / np.sqrt(k - 1)
            * np.cos(k * angles + rng.uniform(0.0, 2.0 * np.pi))
        )
    return out


def _stroke(points: np.ndarray, half_width: float, size: int) -> _Mask:
    """Pixels within ``half_width`` of the polyline through ``points`` (row, col)."""
    # Rasterise on a padded canvas so strokes leaving the frame keep their width at the border.
    pad = int(np.ceil(half_width)) + 2
    canvas = np.zeros((size + 2 * pad, size + 2 * pad), bool)
    pts = np.round(points).astype(int) + pad
    lim = size + 2 * pad - 1
    for (r0, c0), (r1, c1) in zip(pts[:-1], pts[1:], strict=True):
        if min(r0, r1, c0, c1) < 0 or max(r0, r1, c0, c1) > lim:
            continue  # segment outside the canvas: invisible anyway
        rr, cc = draw_line(r0, c0, r1, c1)
        canvas[rr, cc] = True
    if not canvas.any():
        return np.zeros((size, size), bool)
    # The distance transform only matters near the line: run it on the line's bounding box.
    box = _bbox(canvas, pad)
    stroke = np.zeros_like(canvas)
    stroke[box] = ndimage.distance_transform_edt(~canvas[box]) <= half_width
    return stroke[pad:-pad, pad:-pad]


def _bbox(mask: np.ndarray, margin: int) -> tuple[slice, slice]:
    """Bounding box of ``mask`` (which must not be empty), grown by ``margin``, clipped."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (
        slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, mask.shape[0])),
        slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, mask.shape[1])),
    )


# --------------------------------------------------------------------------- object shapes


def _blob(cy: float, cx: float, scale: float, rng: np.random.Generator, size: int) -> _Mask:
    """Irregular smooth blob: a circle with low-harmonic radial noise."""
    n = 64
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    radii = scale * np.clip(1.0 + _radial_noise(n, rng, 0.3), 0.35, None)
    return _radial_shape(cy, cx, radii, angles, size)


def _star(cy: float, cx: float, scale: float, rng: np.random.Generator, size: int) -> _Mask:
    """Pointy star with 4-7 uneven, often thin spikes."""
    points = int(rng.integers(4, 8))
    angles = np.linspace(0.0, 2.0 * np.pi, 2 * points, endpoint=False) + rng.uniform(0, np.pi)
    angles += rng.normal(0.0, 0.15, 2 * points)
    radii = np.empty(2 * points)
    radii[0::2] = scale * rng.uniform(0.8, 1.2, points)
    radii[1::2] = scale * rng.uniform(0.3, 0.55) * rng.uniform(0.85, 1.15, points)
    return _radial_shape(cy, cx, radii, angles, size)


def _worm(cy: float, cx: float, scale: float, rng: np.random.Generator, size: int) -> _Mask:
    """Thin curved stroke, 2-5 px wide: the thin-structure hard case."""
    steps = max(int(2.2 * scale / 2.0), 6)
    heading = rng.uniform(0.0, 2.0 * np.pi)
    # Curvature itself drifts, giving S-bends and hooks rather than circles.
    curvature = np.cumsum(rng.normal(0.0, 0.015, steps)) + rng.normal(0.0, 0.05)
    headings = heading + np.cumsum(curvature)
    path = np.cumsum(2.0 * np.stack([np.sin(headings), np.cos(headings)], axis=1), axis=0)
    path -= path.mean(axis=0)
    return _stroke(path + np.array([cy, cx]), rng.uniform(2.5, 4.0), size)


def _ring(cy: float, cx: float, scale: float, rng: np.random.Generator, size: int) -> _Mask:
    """Irregular annulus: its hole shows background, so 'filled' predictions are wrong."""
    n = 64
    angles = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    wobble = _radial_noise(n, rng, 0.15, max_harmonic=3)
    outer = scale * (1.0 + wobble)
    thickness = scale * rng.uniform(0.35, 0.55)
    inner = np.clip(outer - thickness * rng.uniform(0.8, 1.2, n).clip(0.9, 1.1), 1.0, None)
    return _radial_shape(cy, cx, outer, angles, size) & ~_radial_shape(cy, cx, inner, angles, size)


_SHAPES: dict[int, Callable[[float, float, float, np.random.Generator, int], _Mask]] = {
    1: _blob,
    2: _star,
    3: _worm,
    4: _ring,
}
# Object scale range as a fraction of the image size (radius, or half length for worms).
_SCALES: dict[int, tuple[float, float]] = {
    1: (0.13, 0.28),
    2: (0.16, 0.32),
    3: (0.35, 0.6),
    4: (0.14, 0.26),
}


# --------------------------------------------------------------------------- background clutter


def _rectangle(rng: np.random.Generator, size: int) -> _Mask:
    cy, cx = rng.uniform(-0.1, 1.1, 2) * size
    h, w = rng.uniform(0.06, 0.3, 2) * size
    theta = rng.uniform(0.0, np.pi)
    corners = np.array([[-h, -w], [-h, w], [h, w], [h, -w]])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = corners @ rot.T + np.array([cy, cx])
    return _polygon_mask(pts[:, 0], pts[:, 1], size)


def _bar(rng: np.random.Generator, size: int, thin: bool = False) -> _Mask:
    """Straight bar across much of the frame (a twig); thin ones mimic worms but are straight."""
    cy, cx = rng.uniform(0.0, 1.0, 2) * size
    theta = rng.uniform(0.0, np.pi)
    half_len = rng.uniform(0.2, 0.6) * size
    d = half_len * np.array([np.sin(theta), np.cos(theta)])
    pts = np.array([[cy, cx] - d, [cy, cx] + d])
    half_width = rng.uniform(1.0, 2.5) if thin else rng.uniform(3.0, 7.0)
    return _stroke(pts, half_width, size)


def _terrain(rng: np.random.Generator, size: int) -> _Mask:
    """Large irregular region (a thresholded smooth field), bigger than any object.

    Being large and running out of the frame is what tells it apart from a blob.
    """
    field = _smooth_field(size, rng, max_cycles=1.5, terms=4)
    return field > np.quantile(field, rng.uniform(0.45, 0.7))


def _family_colour(family: int, rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour (0-255) of one hue family, with random saturation and brightness."""
    hue = float((_FAMILY_HUES[family] + rng.normal(0.0, 10.0)) / 360.0 % 1.0)
    rgb = colorsys.hsv_to_rgb(hue, float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.3, 0.95)))
    return np.array(rgb, np.float32) * 255.0


def _palette_colour(palette: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    colour = palette[rng.integers(len(palette))] + rng.normal(0.0, jitter, 3)
    return colour.astype(np.float32)


def _local_colour(image: np.ndarray, region: _Mask, cy: float, cx: float) -> np.ndarray:
    """Mean colour of ``image`` under ``region`` (at the clipped centre if nothing is visible)."""
    if region.any():
        return image[region].mean(axis=0)
    size = image.shape[0]
    return image[int(np.clip(round(cy), 0, size - 1)), int(np.clip(round(cx), 0, size - 1))]


def _clutter_texture(rng: np.random.Generator) -> str:
    return _TEXTURES[rng.choice(len(_TEXTURES), p=_CLUTTER_TEXTURE_P)]


def _cast_shadow(image: np.ndarray, region: _Mask, shift: np.ndarray, strength: float) -> None:
    """Darken, in place, a blurred copy of ``region`` moved by ``shift`` (rows, cols)."""
    if not region.any():
        return
    dy, dx = int(shift[0]), int(shift[1])
    size = region.shape[0]
    moved = np.zeros(region.shape, np.float32)
    moved[max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)] = region[
        max(-dy, 0) : size + min(-dy, 0), max(-dx, 0) : size + min(-dx, 0)
    ]
    # Blur only around the shadow; the margin covers the Gaussian's support (4 sigma = 6 px).
    box = _bbox(region, abs(dy) + abs(dx) + 8)
    shade = ndimage.gaussian_filter(moved[box], 1.5)
    image[box] *= (1.0 - strength * shade)[..., None]


# --------------------------------------------------------------------------- scenes


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def generate_scene(seed: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Generate one synthetic scene.

    Parameters
    ----------
    seed : int
        Non-negative seed; the scene is a pure function of ``(seed, size)``.
    size : int, default 128
        Height and width in pixels (at least 16). Shapes scale with the image.

    Returns
    -------
    image : numpy.ndarray
        RGB image, uint8, shape ``(size, size, 3)``.
    mask : numpy.ndarray
        Class ids, uint8, shape ``(size, size)``, values in ``0 .. len(SYNTHETIC_CLASSES) - 1``
        (0 is background; there is no void label).

    Raises
    ------
    ValueError
        If ``seed`` is negative or ``size`` is below 16.
    """
    seed = _check_int("seed", seed, 0)
    size = _check_int("size", size, _MIN_SIZE)
    rng = np.random.default_rng(seed)

    # One palette per scene from the objects' colour families: the source of the camouflage.
    n_families = len(_FAMILY_HUES)
    families = rng.choice(n_families, size=int(rng.integers(3, 6)), p=_PALETTE_FAMILY_P)
    palette = np.stack([_family_colour(int(f), rng) for f in families])

    # Background: palette colours blended by smooth fields, then fine grain.
    weights = np.exp(4.0 * np.stack([_smooth_field(size, rng, 2.0) for _ in palette]))
    weights /= weights.sum(axis=0, keepdims=True)
    image = np.einsum("khw,kc->hwc", weights, palette).astype(np.float32)
    grain = rng.random((size, size), dtype=np.float32) - 0.5
    image += grain[..., None] * np.float32(rng.uniform(10.0, 40.0))
    mask = np.zeros((size, size), np.uint8)

    # Distractor clutter in the objects' colour families, mostly in plain low-contrast textures.
    for _ in range(int(rng.integers(*_N_CLUTTER))):
        kind = rng.choice(3, p=[0.45, 0.3, 0.25])
        if kind == 0:
            region = _rectangle(rng, size)
        elif kind == 1:
            region = _bar(rng, size)
        else:
            region = _terrain(rng, size)
        colour = _palette_colour(palette, rng, 15.0)
        _paint(image, region, _clutter_texture(rng), colour, rng, contrast=(5.0, 30.0))

    # Objects, painted back to front; the mask keeps the topmost.
    # One light direction per scene, so that all shadows fall the same way.
    light = rng.uniform(0.0, 2.0 * np.pi)
    shadow_shift = np.rint(rng.uniform(1.5, 4.0) * np.array([np.sin(light), np.cos(light)]))
    n_objects = 0 if rng.random() < _P_EMPTY_SCENE else int(rng.integers(2, 7))
    placed: list[tuple[float, float, float]] = []
    for _ in range(n_objects):
        cls = int(rng.choice(len(_CLASS_P), p=_CLASS_P)) + 1
        scale = rng.uniform(*_SCALES[cls]) * size
        if placed and rng.random() < _P_OVERLAP:
            py, px, pscale = placed[int(rng.integers(len(placed)))]
            angle = rng.uniform(0.0, 2.0 * np.pi)
            dist = (pscale + scale) * rng.uniform(0.3, 0.8)
            cy, cx = py + dist * np.sin(angle), px + dist * np.cos(angle)
        else:
            # A margin beyond the frame makes some objects only partly visible.
            cy, cx = rng.uniform(-0.05, 1.05, 2) * size
        placed.append((cy, cx, scale))
        region = _SHAPES[cls](cy, cx, scale, rng, size)
        camouflaged = bool(rng.random() < _P_CAMOUFLAGE)
        if camouflaged:
            colour = _local_colour(image, region, cy, cx) + rng.normal(0.0, 15.0, 3)
        else:
            own = rng.random() < _P_CHARACTERISTIC_COLOUR
            colour = _family_colour(cls - 1 if own else int(rng.integers(n_families)), rng)
        colour = colour.astype(np.float32)
        if rng.random() < _P_CHARACTERISTIC_TEXTURE:
            texture = _CLASS_TEXTURE[cls]
        else:
            texture = _TEXTURES[rng.integers(len(_TEXTURES))]
        if rng.random() < _P_SHADOW:
            _cast_shadow(image, region, shadow_shift, rng.uniform(0.15, 0.35))
        # Camouflaged objects also tone their texture down to the clutter's contrast.
        contrast = (5.0, 30.0) if camouflaged else (60.0, 100.0)
        _paint(image, region, texture, colour, rng, contrast=contrast)
        mask[region] = cls

    # Background twigs in front of objects: occlusion by clutter, labelled background.
    if n_objects and rng.random() < _P_OCCLUDER:
        for _ in range(int(rng.integers(1, 3))):
            region = _bar(rng, size, thin=bool(rng.random() < 0.5))
            colour = _palette_colour(palette, rng, 15.0)
            _paint(image, region, _clutter_texture(rng), colour, rng)
            mask[region] = 0

    # Camera: uneven illumination over everything, slight defocus and sensor noise.
    image *= (1.0 + 0.15 * _smooth_field(size, rng, 1.5))[..., None]
    sigma = rng.uniform(0.3, 0.9)
    image = ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0.0))
    image += rng.normal(0.0, rng.uniform(2.0, 8.0), image.shape).astype(np.float32)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------- dataset on disk


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
