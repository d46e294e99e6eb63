"""What the web app does to an uploaded image, free of any web framework.

Every function here takes and returns plain arrays or bytes, so the page's behaviour is tested
without a browser: decoding an upload (with the size limit), segment + refine with per-stage
timings, and clustering with the browser's scribbles. The figures are drawn in
:mod:`.figures`, the scribbles rasterised in :mod:`.scribbles`.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.datasets import resize_image, resize_mask
from ..data.io import VOC_PALETTE, VOID, as_rgb, mask_ids
from ..diffusion.onehot import prior_for_image
from ..errors import InputError
from ..pipeline import Segmentation, check_pair
from ..pipeline import segment_and_refine as run_pipeline
from ..report import colorize
from ..weak.annotations import Box
from .figures import (
    Figures,
    display_size,
    instances,
    layer,
    npy_bytes,
    overlay,
    png_bytes,
    uncertainty_image,
    zoom_view,
)
from .scribbles import rasterize_scribbles

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "attention_figures",
    "parse_classes",
    "Figures",
    "decode_mask",
    "decode_upload",
    "parse_json_field",
    "mask_class_names",
    "mask_from_box",
    "parse_box",
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

Progress = Callable[[str, float], None]


def decode_upload(data: bytes, name: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
    """An uploaded file -> RGB ``uint8`` (H, W, 3), or :class:`InputError` naming the file.

    The pixel count is checked from the header, before the image is decoded, so an oversized
    upload costs no memory. Truncated files fail here (the image is decoded in full).
    """

    def fits(w: int, h: int) -> str | None:
        if w * h > max_megapixels * 1e6:
            return (f"image is {w}x{h} = {w * h / 1e6:.1f} MP, over the server's limit of "
                    f"{max_megapixels:g} MP (segrefine serve --max-megapixels)")  # fmt: skip
        return None

    return as_rgb(_decode(data, name, fits, "image"))


MAX_MASK_CLASSES = 32  # classes one uploaded mask may hold (each is one refinement pass)


def decode_mask(data: bytes, name: str, shape: tuple[int, int]) -> np.ndarray:
    """An uploaded mask -> class ids (h, w) for an image of ``shape`` (H, W), or
    :class:`InputError` naming the file. Read as ``read_mask`` reads files (class ids, VOC
    colours); a 0/255 mask is object/background. It may be smaller than the image (it is
    upsampled), never larger, and its size is checked from the header first."""

    def fits(w: int, h: int) -> str | None:
        if h > shape[0] or w > shape[1]:
            return f"mask is {w}x{h}, larger than its {shape[1]}x{shape[0]} image"
        return None

    ids = mask_ids(_decode(data, name, fits, "mask"), path=name)
    values = np.unique(ids)
    if set(values.tolist()) == {0, 255}:  # what rembg, SAM exports and thresholds write
        return (ids == 255).astype(np.uint8)
    if len(values[values != VOID]) > MAX_MASK_CLASSES:
        raise InputError(f"mask holds {len(values)} classes; at most {MAX_MASK_CLASSES}", name)
    return ids


MAX_BOX_CHARS = 1000  # the box field: one small JSON object
GRABCUT_MAX_PIXELS = 1_000_000  # a larger crop around the box is cut at a reduced scale
BOX_MARGIN = 0.25  # of the box's size on each side: the background model's pixels


def parse_json_field(raw: str, what: str, max_chars: int):
    """A form field holding JSON, bounded in length and nesting: the value or one line."""
    if len(raw) > max_chars:
        raise InputError(f"{what}: over {max_chars} characters")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as err:
        raise InputError(f"{what}: not valid JSON ({type(err).__name__})") from None


def parse_box(raw: str, shape: tuple[int, int], refiner) -> Box:
    """The page's ``box`` field, JSON ``{"x", "y", "w", "h", "label"}`` in pixels of an image
    of ``shape`` (H, W) -> a :class:`Box`, or :class:`InputError` naming the problem: the
    numbers must be integers, the size positive, the box inside the image and the label one
    of ``refiner``'s classes other than background (0)."""
    entry = parse_json_field(raw, "box", MAX_BOX_CHARS)
    keys = ("x", "y", "w", "h", "label")
    if not isinstance(entry, dict) or not set(keys) <= entry.keys():
        raise InputError("box needs x, y, w, h and label")
    values = []
    for key in keys:
        v = entry[key]
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise InputError(f"box {key} must be an integer, got {json.dumps(v)[:40]}")
        values.append(v)
    x, y, w, h, label = values
    H, W = shape
    if w <= 0 or h <= 0:
        raise InputError(f"box size {w}x{h} is not positive")
    if x < 0 or y < 0 or x + w > W or y + h > H:
        raise InputError(f"box (x={x}, y={y}, w={w}, h={h}) is outside the {W}x{H} image")
    if label == 0:
        raise InputError("box label 0 is the background; choose the object's class")
    if not 0 < label < refiner.num_classes:
        raise InputError(f"box label {label} is not a class of the refiner (1 to "
                         f"{refiner.num_classes - 1})")  # fmt: skip
    return Box(label, x, y, w, h)


def mask_from_box(image: np.ndarray, box: Box) -> np.ndarray:
    """A label map (H, W) from one box: GrabCut's object inside it (``box.label``),
    background everywhere else (:func:`~segrefine.weak.boxes.pseudo_mask_from_boxes`, no void
    ring). GrabCut sees only a crop around the box, reduced to at most
    :data:`GRABCUT_MAX_PIXELS`, so a large image costs no more than a megapixel's cut."""
    from ..weak.boxes import pseudo_mask_from_boxes

    H, W = image.shape[:2]
    my, mx = max(int(box.h * BOX_MARGIN), 8), max(int(box.w * BOX_MARGIN), 8)
    top, left = max(box.y - my, 0), max(box.x - mx, 0)
    bottom, right = min(box.y + box.h + my, H), min(box.x + box.w + mx, W)
    crop = image[top:bottom, left:right]
    scale = min(1.0, math.sqrt(GRABCUT_MAX_PIXELS / crop.shape[0] / crop.shape[1]))
    ch, cw = crop.shape[:2]
    x0, y0, x1, y1 = box.x - left, box.y - top, box.x - left + box.w, box.y - top + box.h
    if scale < 1.0:
        ch, cw = max(1, round(ch * scale)), max(1, round(cw * scale))
        crop = resize_image(np.ascontiguousarray(crop), (ch, cw))
        x0, y0 = min(int(x0 * scale), cw - 1), min(int(y0 * scale), ch - 1)
        x1, y1 = max(min(math.ceil(x1 * scale), cw), x0 + 1), max(min(math.ceil(y1 * scale), ch),
                                                                   y0 + 1)  # fmt: skip
    small = Box(box.label, x0, y0, x1 - x0, y1 - y0)
    cut = pseudo_mask_from_boxes(np.ascontiguousarray(crop), [small], method="grabcut",
                                 void_ring=0, margin=BOX_MARGIN)  # fmt: skip
    cut = resize_mask(cut, (bottom - top, right - left))
    out = np.zeros((H, W), np.uint8)
    inside = out[box.y : box.y + box.h, box.x : box.x + box.w]  # nothing outside the box
    inside[...] = cut[box.y - top : box.y - top + box.h, box.x - left : box.x - left + box.w]
    return out


_DECODE_LOCK = threading.Lock()


def _decode(data: bytes, name: str, fits, what: str) -> Image.Image:
    """Open ``data``, refuse it when ``fits(w, h)`` (from the header) names a problem, then
    decode it in full. One upload is decoded at a time: that bounds the memory decoding
    takes, and Pillow's own bomb guard (a process-wide setting, replaced by ``fits`` here)
    is switched safely."""
    if not data:
        raise InputError("file is empty (0 bytes)", name)
    with _DECODE_LOCK, _no_bomb_check():
        try:
            img = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise InputError("is not an image (cannot identify its format)", name) from err
        problem = fits(*img.size)
        if problem:
            raise InputError(problem, name)
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"cannot decode {what}, truncated or corrupt ({err})", name) from err
    return img


class _no_bomb_check:
    """Our own megapixel limit replaces Pillow's decompression-bomb guard while decoding."""

    def __enter__(self):
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.saved


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
    mask: np.ndarray | None = None,
    box: Box | None = None,
) -> Figures:
    """Segment ``image`` (and refine the result when a refiner is given), timing each stage;
    with a ``mask`` (class ids, at most the image's size) instead of a segmenter, refine that;
    with a ``box``, refine the mask GrabCut makes in it (:func:`mask_from_box`).

    Files produced (name -> PNG/NPY bytes): ``input.png``, ``segmenter.png`` (overlay),
    ``segmenter_layer.png`` (the label colours alone, transparent background),
    ``segmenter_instances.png``, ``segmenter_labels.png`` (VOC-palette label map at the
    image's size), ``segmenter_probs.npy`` (float16 C x H x W); with a refiner also
    ``refined.png``, ``refined_instances.png``, ``refined_labels.png``, ``refined_probs.npy``
    and ``uncertainty.png`` / ``uncertainty.npy``.
    """
    report = progress or (lambda stage, fraction: None)
    out = Figures()
    if box is not None:  # the user's box: GrabCut makes the mask, refined like an upload
        report("GrabCut in your box", 0.05)
        t0 = time.perf_counter()
        mask = mask_from_box(image, box)
        out.timings["grabcut_s"] = time.perf_counter() - t0
    if mask is not None:  # the user's own mask is the coarse input
        names = mask_class_names(mask, refiner)
        probs = prior_for_image(image.shape[:2], len(names), labels=mask)
        coarse = Segmentation(probs, probs.argmax(0).astype(np.uint8))
        coarse_input = {"labels": [mask]}
        out.info["coarse"] = "mask"
        if box is not None:
            out.info["coarse"] = "box"
            out.info["box"] = {"x": box.x, "y": box.y, "w": box.w, "h": box.h,
                               "label": box.label}  # fmt: skip
    else:
        names = tuple(segmenter.class_names)
        if refiner is not None:
            check_pair(segmenter, refiner)
        report("segmenting", 0.1)
        (coarse,) = run_pipeline([image], segmenter, timings=out.timings)
        coarse_input = {"probs": [coarse.probs]}
        out.info["coarse"] = "segmenter"
    _add_label_files(out, "segmenter", image, coarse.labels, coarse.probs, names)
    out.arrays.update(image=image, segmenter=coarse.labels)
    if refiner is not None:
        report("refining", 0.4)
        (result,) = run_pipeline([image], refiner=refiner, steps=steps, strength=strength,
                                 samples=samples, flip=flip, seed=seed, timings=out.timings,
                                 **coarse_input)  # fmt: skip
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


def mask_class_names(mask: np.ndarray, refiner) -> tuple[str, ...]:
    """Class names for an uploaded mask: the refiner's, or for a class-agnostic refiner
    background / object for two classes and background / class 1 / ... for more. Ids the
    refiner does not know are an input error."""
    top = int(mask[mask != VOID].max(initial=0))
    if not refiner.spec.class_agnostic:
        if top >= refiner.num_classes:
            raise InputError(f"mask has class id {top} but the refiner knows "
                             f"{refiner.num_classes} classes")  # fmt: skip
        return tuple(refiner.class_names)
    if top <= 1:
        return tuple(refiner.class_names)
    return ("background", *(f"class {k}" for k in range(1, top + 1)))


def _add_label_files(out: Figures, prefix: str, image, labels, probs, names) -> None:
    clear = names.index("background") if "background" in names else None
    out.files[f"{prefix}.png"] = (png_bytes(overlay(image, labels, clear)), "image/png")
    out.files[f"{prefix}_layer.png"] = (png_bytes(layer(labels, clear)), "image/png")
    fig, rows = instances(image, labels, names)
    out.files[f"{prefix}_instances.png"] = (png_bytes(fig), "image/png")
    out.files[f"{prefix}_labels.png"] = (png_bytes(labels, palette=VOC_PALETTE), "image/png")
    out.files[f"{prefix}_probs.npy"] = (npy_bytes(probs.astype(np.float16)),
                                        "application/octet-stream")  # fmt: skip
    out.info[f"{prefix}_instances"] = rows
    out.info[f"{prefix}_class_fractions"] = {
        n: float((labels == c).mean()) for c, n in enumerate(names)
    }


MAX_ATTENTION_CLASSES = 20  # classes one attention request may name
MAX_CLASS_CHARS = 40  # characters in one class name


def parse_classes(raw) -> list[str]:
    """The attention tab's ``classes`` field, comma-separated names -> the names, or
    :class:`InputError` in one line: at least one, at most :data:`MAX_ATTENTION_CLASSES`,
    each at most :data:`MAX_CLASS_CHARS` characters, none empty or repeated."""
    if raw is not None and not isinstance(raw, str):
        raise InputError("classes must be a form field, not a file")
    names = [" ".join(c.split()) for c in (raw or "").split(",")]
    if not any(names):
        raise InputError("give the classes to find, comma-separated, e.g. 'horse, grass, sky'")
    if len(names) > MAX_ATTENTION_CLASSES:
        raise InputError(f"{len(names)} classes; at most {MAX_ATTENTION_CLASSES}")
    if not all(names):
        raise InputError("empty class name (two commas in a row, or one at an end)")
    long = next((n for n in names if len(n) > MAX_CLASS_CHARS), None)
    if long is not None:
        raise InputError(f"class name {long[:MAX_CLASS_CHARS]!r}... is over "
                         f"{MAX_CLASS_CHARS} characters")  # fmt: skip
    lowered = [n.lower() for n in names]
    repeats = sorted({n for n in lowered if lowered.count(n) > 1})
    if repeats:
        raise InputError(f"class names given more than once: {', '.join(repeats)}")
    return names


def attention_figures(
    image: np.ndarray,
    model,
    classes: list[str],
    threshold: float | None = None,
    progress: Progress | None = None,
) -> Figures:
    """The attention tab: ``model.segment`` (an :class:`~segrefine.attention.AttentionModel`,
    no training) on ``image`` for ``classes``.

    Files: ``input.png``, ``attention.png`` (the labels over the image, VOC colours),
    ``attention_labels.png`` (VOC-palette label map at the image's size) and
    ``attention_probs.npy`` (float16 K x H x W); ``info.classes`` are the result's class
    names (``background`` first when it was added).
    """
    report = progress or (lambda stage, fraction: None)
    out = Figures()
    report("attention: one U-Net pass", 0.1)
    t0 = time.perf_counter()
    kwargs = {} if threshold is None else {"threshold": threshold}
    result = model.segment(image, list(classes), **kwargs)
    out.timings["attention_s"] = time.perf_counter() - t0
    report("drawing", 0.9)
    names = tuple(result.class_names)
    lowered = [n.lower() for n in names]
    clear = lowered.index("background") if "background" in lowered else None
    labels = result.labels
    out.files["attention.png"] = (png_bytes(overlay(image, labels, clear)), "image/png")
    out.files["attention_labels.png"] = (png_bytes(labels, palette=VOC_PALETTE), "image/png")
    out.files["attention_probs.npy"] = (npy_bytes(result.probs.astype(np.float16)),
                                        "application/octet-stream")  # fmt: skip
    out.files["input.png"] = (png_bytes(resize_image(image, display_size(image.shape[:2]))),
                              "image/png")  # fmt: skip
    out.info.update(
        classes=list(names),
        class_fractions={n: float((labels == c).mean()) for c, n in enumerate(names)},
        width=int(image.shape[1]), height=int(image.shape[0]),
    )
    if threshold is not None:
        out.info["threshold"] = float(threshold)
    return out


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
    # the legend: each segment's colour and share, largest first (64 at most)
    ids, first, counts = np.unique(labels.ravel(), return_index=True, return_counts=True)
    swatches = colour.reshape(-1, 3)[first]
    legend = [{"id": int(ids[k]), "colour": [int(v) for v in swatches[k]],
               "fraction": float(counts[k] / labels.size)}
              for k in np.argsort(-counts, kind="stable")[:64]]  # fmt: skip
    out.info.update(
        segments=int(len(ids)), legend=legend,
        scribble_labels=int(len(marked)),
        width=int(image.shape[1]), height=int(image.shape[0]),
    )
    return out
