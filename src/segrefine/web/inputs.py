"""What a request sends, checked before any work: uploaded images and masks (their size read
from the header, one decode at a time), the page's JSON fields (a box, scribbles), the
attention tab's class names, and GrabCut's mask for a box. Everything is bounded and every
failure is one :class:`~segrefine.errors.InputError` line."""

from __future__ import annotations

import io
import json
import math
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.coarse import Coarse, interpret_image
from ..data.datasets import resize_image, resize_mask
from ..data.io import as_rgb, read_error_reason
from ..data.transforms import MAX_ASPECT
from ..diffusion.onehot import check_size
from ..errors import InputError
from ..weak.annotations import Box

# a 12 MP phone photo (4032 x 3024 = 12.2 MP) with some margin; its job peaks under 1.5 GB
# (docs/benchmarks.md, "A 12 MP photo in the web app")
DEFAULT_MAX_MEGAPIXELS = 13.0


def decode_upload(data: bytes, name: str, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS):
    """An uploaded file -> RGB ``uint8`` (H, W, 3), or :class:`InputError` naming the file.

    The pixel count is checked from the header, before the image is decoded, so an oversized
    upload costs no memory; so is the aspect ratio, which bounds the size the models work at
    (the short side at their training size: a 1 x 1000 PNG of 299 bytes was a 128 x 128000
    working image, 6 GB, in the job). Truncated files fail here (the image is decoded in full).
    """

    def fits(w: int, h: int) -> str | None:
        if w * h > max_megapixels * 1e6:
            return (f"image is {w}x{h} = {w * h / 1e6:.1f} MP, over the server's limit of "
                    f"{max_megapixels:g} MP (segrefine serve --max-megapixels)")  # fmt: skip
        if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):  # as predict refuses it
            return (f"image is {w}x{h}: at most {MAX_ASPECT}:1 is accepted, as the models "
                    "work on an image with its short side at their training size (a strip "
                    "would be many times their working area): crop or split it")  # fmt: skip
        return None

    return as_rgb(_decode(data, name, fits, "image"))


def decode_mask(data: bytes, name: str, shape: tuple[int, int], refiner) -> Coarse:
    """An uploaded mask for an image of ``shape`` (H, W), read for ``refiner`` as ``segrefine
    refine`` reads mask files (:func:`~segrefine.data.coarse.interpret_image`: class ids,
    colours, two-valued, soft and RGBA masks), or :class:`InputError` naming the file. It may
    be smaller than the image (it is upsampled), never larger, and its size is checked from
    the header first."""

    def fits(w: int, h: int) -> str | None:
        if h > shape[0] or w > shape[1]:
            return f"mask is {w}x{h}, larger than its {shape[1]}x{shape[0]} image"
        return None

    classes = None if refiner.spec.class_agnostic else refiner.num_classes
    coarse = interpret_image(_decode(data, name, fits, "mask"), classes, path=name)
    check_size(coarse.shape, shape, "mask", name)
    return coarse


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
            reason = read_error_reason(err)
            if reason != str(err):  # a bomb in a metadata chunk is an image, refused as such
                raise InputError(f"cannot read {what} ({reason})", name) from err
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
