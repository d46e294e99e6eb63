"""Drawing primitives of the synthetic scenes (:mod:`.synthetic`).

Smooth random fields, textures and painting them into a region, rasterised masks (polygons,
radial shapes, strokes), the four object shapes, the background clutter shapes and drop
shadows. Nothing here knows about classes or how often anything is drawn: that is the scene
distribution, in :mod:`.synthetic_scene`. Every function draws its randomness from the
``rng`` it is given, in a fixed order, so a scene stays a pure function of its seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import line as draw_line
from skimage.draw import polygon as draw_polygon

# The texture kinds _paint understands.
_TEXTURES: tuple[str, ...] = ("dots", "stripes", "tube", "checker", "speckle", "smooth")

_Mask = np.ndarray  # bool (size, size)


# ---------------------------------------------------------------------- fields, textures, masks


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
    """Thin curved stroke, 5-8 px wide: the thin-structure hard case."""
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


# --------------------------------------------------------------------------- shadows


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
