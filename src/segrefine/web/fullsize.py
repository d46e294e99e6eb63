"""A job's full-size outputs made a strip of rows at a time: the label map, the probabilities
as a float16 ``.npy`` file and each class's share of the image.

Probabilities may come smaller than the image (a segmenter's, at its working size, or a mask
smaller than its image): each strip is upsampled as
:func:`~segrefine.data.transforms.resize_probs` upsamples the whole map (bilinear, then
renormalised), so the job never holds a full-size float32 map of its own beside the
refiner's. A 12 MP photo's two-class map is 96 MB in float32, and making it whole cost three
such maps at once (docs/benchmarks.md, "A 12 MP photo in the web app").
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["STRIP_ROWS", "label_map_and_file", "probs_in_strips"]

STRIP_ROWS = 256  # a 4000-px-wide strip of two classes: 8 MB in float32


def probs_in_strips(
    probs: np.ndarray, shape: tuple[int, int], rows: int = STRIP_ROWS
) -> Iterator[tuple[slice, np.ndarray]]:
    """Probabilities (C, h, w) at ``shape`` (H, W), h <= H and w <= W, as (row slice, (C, n, W)
    float32 strip) pairs from top to bottom. Equal to ``resize_probs(probs, shape)[:, rows]``
    to float32 rounding; a map already at ``shape`` is returned in views of itself."""
    c, h, w = probs.shape
    height, width = shape
    if h > height or w > width:
        raise ValueError(f"probabilities are {w}x{h}, larger than {width}x{height}")
    if (h, w) == (height, width):
        for top in range(0, height, rows):
            yield slice(top, min(top + rows, height)), probs[:, top : top + rows]
        return
    small = torch.from_numpy(np.ascontiguousarray(probs, dtype=np.float32))
    # bilinear is separable: along the width once (h rows: small), then along the height per
    # strip with the weights F.interpolate computes (align_corners=False: a float32 scale, the
    # source row in double, clamped at 0, then float32), so the two agree to a float32 ulp
    wide = F.interpolate(small[None], size=(h, width), mode="bilinear", align_corners=False)[0]
    scale = float(np.float32(h) / np.float32(height))
    for top in range(0, height, rows):
        y = torch.arange(top, min(top + rows, height), dtype=torch.float64)
        src = ((y + 0.5) * scale - 0.5).clamp_min(0).float()
        y0 = src.long().clamp_max(h - 1)
        y1 = (y0 + 1).clamp_max(h - 1)
        lam = (src - y0)[:, None]
        strip = wide[:, y0] * (1 - lam) + wide[:, y1] * lam
        strip /= strip.sum(0, keepdim=True)
        yield slice(top, top + len(y)), strip.numpy()


def label_map_and_file(
    probs: np.ndarray, shape: tuple[int, int], labels: np.ndarray | None = None
) -> tuple[np.ndarray, bytes, np.ndarray]:
    """From probabilities (C, h, w) at ``shape`` (H, W) or smaller: the label map (H, W)
    ``uint8`` (each pixel's most likely class, or ``labels`` when given), the ``.npy`` bytes
    of the float16 (C, H, W) map and each class's share of the pixels (C,)."""
    c = probs.shape[0]
    height, width = shape
    out = np.empty(shape, np.uint8) if labels is None else labels
    file, view, half = _npy_file((c, height, width), np.float16)
    counts = np.zeros(c, np.int64)
    for rows, strip in probs_in_strips(probs, shape):
        if labels is None:
            out[rows] = strip.argmax(0)
        counts += np.bincount(out[rows].ravel(), minlength=c)[:c]
        half[:, rows] = strip
    del half
    view.release()  # then the file's bytes are handed over, not copied
    return out, file.getvalue(), counts / float(height * width)


def _npy_file(shape: tuple[int, ...], dtype) -> tuple[io.BytesIO, memoryview, np.ndarray]:
    """An in-memory ``.npy`` file of an array of ``shape`` (zeros) and that array, writable
    in place: filled a strip at a time, it is never held twice (``np.save`` would copy)."""
    file = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
              "shape": tuple(shape)}  # fmt: skip
    np.lib.format.write_array_header_1_0(file, header)
    start, count = file.tell(), int(np.prod(shape))
    file.seek(start + count * np.dtype(dtype).itemsize - 1)
    file.write(b"\0")  # the gap reads as zeros
    view = file.getbuffer()
    return file, view, np.frombuffer(view, dtype, count, start).reshape(shape)
