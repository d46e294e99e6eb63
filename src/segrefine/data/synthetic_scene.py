"""The synthetic scene distribution and its sampler, :func:`generate_scene`.

The class list, the distribution's parameters (class frequencies, colour families, how often
an object wears its class's texture or colour, camouflage, overlap, occlusion and shadows) and
the colour sampling live here; :mod:`.synthetic` describes the resulting scenes and writes them
to disk, :mod:`.synthetic_draw` holds the drawing primitives. Any change to what
:func:`generate_scene` draws must bump ``_GENERATOR_VERSION`` in :mod:`.synthetic`, so that
cached datasets on disk are regenerated.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .synthetic_draw import (
    _TEXTURES,
    _bar,
    _blob,
    _cast_shadow,
    _Mask,
    _paint,
    _rectangle,
    _ring,
    _smooth_field,
    _star,
    _terrain,
    _worm,
)

__all__ = ["SYNTHETIC_CLASSES", "generate_scene"]

SYNTHETIC_CLASSES: tuple[str, ...] = ("background", "blob", "star", "worm", "ring")
"""Class names in id order; id 0 is the background. Masks have no void label."""

_MIN_SIZE = 16

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
# How often a background palette colour comes from each family: the families' shares of object
# pixels (as generated), so that background and object pixels have the same colour distribution.
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
