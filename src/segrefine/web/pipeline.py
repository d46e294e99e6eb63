"""What the web app does to an uploaded image, free of any web framework.

Every function here takes and returns plain arrays or bytes, so the page's behaviour is tested
without a browser: decoding an upload (with the size limit), segment + refine with per-stage
timings, the instance view (connected components per class), the overlays, and the scribbles
drawn in the browser rasterised into a label map for :func:`segrefine.unsupervised.cluster`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from matplotlib import colormaps
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from skimage.draw import disk, line

from ..data.datasets import resize_image, resize_mask
from ..data.io import VOC_PALETTE, as_rgb
from ..errors import InputError
from ..pipeline import check_pair
from ..pipeline import segment_and_refine as run_pipeline
from ..report import colorize
from ..report import overlay as blend

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "Figures",
    "decode_upload",
    "display_size",
    "instances",
    "overlay",
    "png_bytes",
    "npy_bytes",
    "rasterize_scribbles",
    "segment_and_refine",
    "cluster_figures",
    "uncertainty_image",
    "zoom_view",
]

DEFAULT_MAX_MEGAPIXELS = 20.0
# bounds on what one request may ask the worker to draw: a stroke of width w over n points
# costs about n * w^2 pixel writes
MAX_STROKES, MAX_POINTS, MAX_STROKE_WIDTH, MAX_LENGTH_FACTOR = 256, 4096, 64.0, 64
DISPLAY_SIDE = 512  # figures on the page are at most this many pixels on their longest side

Progress = Callable[[str, float], None]


def decode_upload(data: bytes, name: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
    """An uploaded file -> RGB ``uint8`` (H, W, 3), or :class:`InputError` naming the file.

    The pixel count is checked from the header, before the image is decoded, so an oversized
    upload costs no memory. Truncated files fail here (the image is decoded in full).
    """
    if not data:
        raise InputError("file is empty (0 bytes)", name)
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError("is not an image (cannot identify its format)", name) from err
    w, h = img.size
    if w * h > max_megapixels * 1e6:
        raise InputError(
            f"image is {w}x{h} = {w * h / 1e6:.1f} MP, over the server's limit of "
            f"{max_megapixels:g} MP (segrefine serve --max-megapixels)",
            name,
        )
    try:
        with _no_bomb_check():
            img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot decode image, truncated or corrupt ({err})", name) from err
    return as_rgb(img)


class _no_bomb_check:
    """Our own megapixel limit replaces Pillow's decompression-bomb guard while decoding."""

    def __enter__(self):
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.saved


def display_size(shape: tuple[int, int], side: int = DISPLAY_SIDE) -> tuple[int, int]:
    """(h, w) of the on-page figure: the image's own size, shrunk to ``side`` at most."""
    h, w = shape
    scale = min(1.0, side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def overlay(
    image: np.ndarray, labels: np.ndarray, clear: int | None = 0, alpha: float = 0.55
) -> np.ndarray:
    """:func:`segrefine.report.overlay` at display size (the page's figures)."""
    size = display_size(image.shape[:2])
    return blend(resize_image(image, size), resize_mask(labels.astype(np.uint8), size), clear,
                 alpha)  # fmt: skip


def uncertainty_image(uncertainty: np.ndarray) -> np.ndarray:
    """Uncertainty in [0, 1] (H, W) -> an RGB heat map (magma: black = certain), display size."""
    size = display_size(uncertainty.shape)
    u = np.clip(uncertainty, 0.0, 1.0).astype(np.float32)
    u = np.asarray(Image.fromarray(u, mode="F").resize((size[1], size[0]), Image.BILINEAR))
    return (colormaps["magma"](np.clip(u, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def _instance_colours(n: int) -> np.ndarray:
    # golden-ratio hues: neighbouring ids get very different colours, deterministically
    hues = (np.arange(n) * 0.6180339887) % 1.0
    hsv = np.stack([hues, np.full(n, 0.75), np.full(n, 0.95)], axis=1)
    from matplotlib.colors import hsv_to_rgb

    return (hsv_to_rgb(hsv) * 255).round().astype(np.uint8)


def instances(
    image: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str],
    min_pixels: int = 1,
) -> tuple[np.ndarray, list[dict]]:
    """The instance view of a semantic label map.

    Every connected component (8-connectivity) of every class except ``background`` is one
    instance, drawn in its own colour over a dimmed image. Returns the figure (display size)
    and one row per class: ``{"class", "instances", "pixels"}``. Components smaller than
    ``min_pixels`` are not counted (and not drawn).
    """
    size = display_size(image.shape[:2])
    canvas = (resize_image(image, size).astype(np.float32) * 0.35).astype(np.uint8)
    rows = []
    next_id = 0
    colours = _instance_colours(4096)
    for c, name in enumerate(class_names):
        if name == "background":
            continue
        comp, n = ndimage.label(labels == c, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)[1:]
        keep = np.flatnonzero(sizes >= min_pixels) + 1
        rows.append({"class": name, "instances": int(len(keep)), "pixels": int(sizes.sum())})
        if len(keep) == 0:
            continue
        small = resize_mask(comp.astype(np.int32), size)
        for k in keep:
            canvas[small == k] = colours[next_id % len(colours)]
            next_id += 1
    return canvas, rows


def rasterize_scribbles(strokes: list[dict], shape: tuple[int, int]) -> np.ndarray:
    """Scribbles drawn in the browser -> a label map for :func:`~segrefine.unsupervised.cluster`.

    ``strokes`` is a list of ``{"label": k, "width": w, "points": [[x, y], ...]}`` in image
    pixel coordinates (the page converts from screen coordinates); each stroke is drawn as
    round-capped segments of ``width`` pixels. Returns ``uint8`` (H, W), 255 where unmarked
    (the convention of ``segrefine cluster --scribbles``). Later strokes paint over earlier ones.
    """
    h, w = shape
    out = np.full((h, w), 255, dtype=np.uint8)
    if len(strokes) > MAX_STROKES:
        raise InputError(f"{len(strokes)} scribble strokes; at most {MAX_STROKES}")
    for i, stroke in enumerate(strokes):
        try:
            label = int(stroke["label"])
            width = float(stroke.get("width", 3))
            pts = np.asarray(stroke["points"], dtype=np.float64).reshape(-1, 2)
        except (KeyError, TypeError, ValueError, OverflowError) as err:
            raise InputError(f"scribble stroke {i} is malformed ({type(err).__name__})") from None
        if not 0 <= label < 255:
            raise InputError(f"scribble stroke {i} has label {label}; labels are 0..254")
        if not (np.isfinite(width) and 0 < width <= MAX_STROKE_WIDTH):
            raise InputError(f"scribble stroke {i} has width {width:g}; widths are "
                             f"(0, {MAX_STROKE_WIDTH}] px")  # fmt: skip
        if len(pts) > MAX_POINTS or not np.isfinite(pts).all() or \
                (np.abs(pts) > 2 * max(h, w)).any():  # fmt: skip
            raise InputError(f"scribble stroke {i} has over {MAX_POINTS} points or points far "
                             "outside the image")  # fmt: skip
        if np.abs(np.diff(pts, axis=0)).sum() > MAX_LENGTH_FACTOR * (h + w):
            raise InputError(f"scribble stroke {i} is longer than {MAX_LENGTH_FACTOR} times "
                             "the image's width + height")  # fmt: skip
        radius = max(0.5, width / 2)
        pts = np.round(pts).astype(int)
        rows, cols = [], []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] if len(pts) > 1 else pts, strict=False):
            rr, cc = line(y0, x0, y1, x1)
            rows.append(rr)
            cols.append(cc)
        rr, cc = np.concatenate(rows), np.concatenate(cols)
        # draw and thicken inside the stroke's own box (plus its radius), not the whole image
        r = int(np.ceil(radius))
        top, left = max(rr.min() - r, 0), max(cc.min() - r, 0)
        bottom, right = min(rr.max() + r + 1, h), min(cc.max() + r + 1, w)
        if top >= bottom or left >= right:
            continue  # entirely outside the image
        box = np.zeros((bottom - top + 2 * r, right - left + 2 * r), dtype=bool)
        ok = (rr >= top - r) & (rr < bottom + r) & (cc >= left - r) & (cc < right + r)
        box[rr[ok] - top + r, cc[ok] - left + r] = True
        if radius > 1:
            box = ndimage.binary_dilation(box, _disk(radius))
        region = out[top:bottom, left:right]
        region[box[r : r + bottom - top, r : r + right - left]] = label
    return out


def _disk(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    k = np.zeros((2 * r + 1, 2 * r + 1), dtype=bool)
    k[disk((r, r), radius + 0.01, shape=k.shape)] = True
    return k


def png_bytes(arr: np.ndarray, palette: list[int] | None = None) -> bytes:
    """An array as PNG bytes: RGB (H, W, 3), or labels (H, W) with ``palette`` (P mode)."""
    if palette is None:
        img = Image.fromarray(arr)
    else:
        img = Image.fromarray(arr.astype(np.uint8), mode="P")
        img.putpalette(palette)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@dataclass
class Figures:
    """The result of :func:`segment_and_refine`: files for the page, counts, timings (s), and
    the full-resolution arrays the zoom view crops from (``image``, ``segmenter``,
    ``refined`` label maps)."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # name -> (data, mime)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return (sum(len(data) for data, _ in self.files.values())
                + sum(a.nbytes for a in self.arrays.values()))  # fmt: skip


ZOOM_SIDES = (32, 64, 128, 256)  # crop sides the zoom view offers (full-resolution pixels)
ZOOM_PANEL = 256  # each panel is shown this many pixels wide


def zoom_view(figures: Figures, x: int, y: int, side: int) -> bytes:
    """A full-resolution close-up around image pixel (x, y): the image, the segmenter's
    labels and the refined labels over it, side by side, each a ``side``-px crop magnified
    (nearest neighbour, so single pixels stay visible) to :data:`ZOOM_PANEL` px. PNG bytes."""
    image = figures.arrays["image"]
    h, w = image.shape[:2]
    if side not in ZOOM_SIDES:
        raise InputError(f"zoom side must be one of {', '.join(map(str, ZOOM_SIDES))}")
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"zoom point ({x}, {y}) is outside the {w}x{h} image")
    top = int(np.clip(y - side // 2, 0, max(h - side, 0)))
    left = int(np.clip(x - side // 2, 0, max(w - side, 0)))
    win = (slice(top, top + side), slice(left, left + side))
    crop = image[win]
    names = figures.info.get("classes", [])
    clear = names.index("background") if "background" in names else None
    panels = [crop] + [blend(crop, figures.arrays[k][win], clear, 0.45)
                       for k in ("segmenter", "refined") if k in figures.arrays]  # fmt: skip
    size = (ZOOM_PANEL, round(ZOOM_PANEL * crop.shape[0] / crop.shape[1]))
    big = [np.asarray(Image.fromarray(p).resize(size, Image.NEAREST)) for p in panels]
    gap = np.full((size[1], 6, 3), 255, np.uint8)
    strip = np.concatenate([x for p in big for x in (p, gap)][:-1], axis=1)
    return png_bytes(strip)


def segment_and_refine(
    image: np.ndarray,
    segmenter,
    refiner=None,
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    flip: bool | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Figures:
    """Segment ``image`` (and refine the result when a refiner is given), timing each stage.

    Files produced (name -> PNG/NPY bytes): ``input.png``, ``segmenter.png`` (overlay),
    ``segmenter_instances.png``, ``segmenter_labels.png`` (VOC-palette label map at the
    image's size), ``segmenter_probs.npy`` (float16 C x H x W); with a refiner also
    ``refined.png``, ``refined_instances.png``, ``refined_labels.png``, ``refined_probs.npy``
    and ``uncertainty.png`` / ``uncertainty.npy``.
    """
    report = progress or (lambda stage, fraction: None)
    names = tuple(segmenter.class_names)
    if refiner is not None:
        check_pair(segmenter, refiner)
    out = Figures()
    report("segmenting", 0.1)
    (coarse,) = run_pipeline([image], segmenter, timings=out.timings)
    _add_label_files(out, "segmenter", image, coarse.labels, coarse.probs, names)
    out.arrays.update(image=image, segmenter=coarse.labels)
    if refiner is not None:
        report("refining", 0.4)
        (result,) = run_pipeline([image], refiner=refiner, probs=[coarse.probs], steps=steps,
                                 strength=strength, samples=samples, flip=flip, seed=seed,
                                 timings=out.timings)  # fmt: skip
        ref = result.refined
        _add_label_files(out, "refined", image, ref.labels, ref.probs, names)
        out.arrays["refined"] = ref.labels
        out.files["uncertainty.png"] = (png_bytes(uncertainty_image(ref.uncertainty)), "image/png")
        out.files["uncertainty.npy"] = (npy_bytes(ref.uncertainty.astype(np.float16)),
                                        "application/octet-stream")  # fmt: skip
        changed = float((ref.labels != coarse.labels).mean())
        out.info.update(nfe=ref.nfe, changed_fraction=changed,
                        mean_uncertainty=float(ref.uncertainty.mean()))  # fmt: skip
    report("drawing", 0.9)
    out.files["input.png"] = (png_bytes(resize_image(image, display_size(image.shape[:2]))),
                              "image/png")  # fmt: skip
    out.info.update(classes=list(names), width=int(image.shape[1]), height=int(image.shape[0]))
    return out


def _add_label_files(out: Figures, prefix: str, image, labels, probs, names) -> None:
    clear = names.index("background") if "background" in names else None
    out.files[f"{prefix}.png"] = (png_bytes(overlay(image, labels, clear)), "image/png")
    fig, rows = instances(image, labels, names)
    out.files[f"{prefix}_instances.png"] = (png_bytes(fig), "image/png")
    out.files[f"{prefix}_labels.png"] = (png_bytes(labels, palette=VOC_PALETTE), "image/png")
    out.files[f"{prefix}_probs.npy"] = (npy_bytes(probs.astype(np.float16)),
                                        "application/octet-stream")  # fmt: skip
    out.info[f"{prefix}_instances"] = rows
    out.info[f"{prefix}_class_fractions"] = {
        n: float((labels == c).mean()) for c, n in enumerate(names)
    }


def cluster_figures(
    image: np.ndarray,
    strokes: list[dict] | None = None,
    min_labels: int = 3,
    max_iter: int = 30,
    connected: bool = False,
    progress: Progress | None = None,
) -> Figures:
    """The unsupervised tab: :func:`~segrefine.unsupervised.cluster` on ``image``, guided by
    the browser's scribbles when there are any.

    Files: ``clusters.png`` (segments in the stable palette over the image), ``scribbles.png``
    (the strokes as the method received them, when given) and ``cluster_labels.png`` (16-bit
    segment ids at the image's size).
    """
    from ..unsupervised import ClusterConfig, cluster
    from ..unsupervised.output import colorize_segments

    report = progress or (lambda stage, fraction: None)
    scribbles = rasterize_scribbles(strokes, image.shape[:2]) if strokes else None
    marked = np.unique(scribbles[scribbles != 255]) if scribbles is not None else []
    if len(marked) == 0:
        scribbles = None
    cfg = ClusterConfig(min_labels=min_labels, max_iter=max_iter, connected=connected)
    out = Figures()
    report("clustering", 0.2)
    t0 = time.perf_counter()
    labels = cluster(image, scribbles=scribbles, config=cfg)
    out.timings["cluster_s"] = time.perf_counter() - t0
    report("drawing", 0.9)
    size = display_size(image.shape[:2])
    if scribbles is not None and not connected:  # segment k = scribble label k: same colour
        colour = colorize((labels.astype(np.int64) % 254) + 1)
    else:
        colour = colorize_segments(labels).astype(np.uint8)
    blend = (0.35 * image.astype(np.float32) + 0.65 * colour).round().astype(np.uint8)
    out.files["clusters.png"] = (png_bytes(resize_image(blend, size)), "image/png")
    out.files["input.png"] = (png_bytes(resize_image(image, size)), "image/png")
    out.files["cluster_labels.png"] = (png_bytes(labels.astype(np.uint16)), "image/png")
    if scribbles is not None:
        drawn = scribbles != 255
        sc = (image.astype(np.float32) * 0.5).astype(np.uint8)
        sc[drawn] = colorize((scribbles[drawn].astype(int) % 254) + 1)
        out.files["scribbles.png"] = (png_bytes(resize_mask(sc, size)), "image/png")
    out.info.update(
        segments=int(len(np.unique(labels))),
        scribble_labels=int(len(marked)),
        width=int(image.shape[1]), height=int(image.shape[0]),
    )
    return out
