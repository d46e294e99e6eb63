"""Reading and writing images, masks and arrays, validated at the door.

Every reader here either returns a well-formed array or raises :class:`~segrefine.errors.InputError`
naming the file. Every writer writes to a temporary file in the same folder and renames it into
place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VOID = 255  # the void / ignore label of PASCAL VOC and CamVid


def _voc_palette() -> list[int]:
    """The PASCAL VOC colour map (bit-interleaved label id -> RGB), 256 entries, 255 = cream."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.extend((r, g, b))
    return palette


VOC_PALETTE: list[int] = _voc_palette()


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError("no such file", path)
    if path.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", path)
    try:
        # our own line replaces Pillow's warning (raw, with a source line, on every read)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            _check_jpeg_data(img, path)
            img.load()  # decode now: a truncated file fails here, not later in a worker
    except InputError:
        raise
    except Image.DecompressionBombError as err:
        raise InputError(f"image is too large to read safely ({err})", path) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read image ({read_error_reason(err)})", path) from err
    _say_if_large(img, path)
    # a phone photo is often stored rotated with an EXIF orientation tag: every viewer shows
    # it upright, so masks must be made for the upright pixels too
    return ImageOps.exif_transpose(img)


def read_error_reason(err: Exception) -> str:
    """Pillow's error in words a user can act on (the web app's upload reader can use it too:
    Image.open raises these as it reads the chunks, before any pixel)."""
    text = str(err)
    if "Decompressed data too large" in text or "Too much memory used in text chunks" in text:
        return ("a PNG text or ICC-profile chunk decompresses beyond the reader's limit: a "
                "decompression bomb, or metadata to strip")  # fmt: skip
    return text


_warned: set[Path] = set()


def _say_if_large(img: Image.Image, path: Path) -> None:
    """One line, once per file, for an image over Pillow's decompression-bomb threshold (up
    to twice it is read; beyond, Pillow refuses it)."""
    limit = Image.MAX_IMAGE_PIXELS
    w, h = img.size
    if limit and w * h > limit and path not in _warned:
        _warned.add(path)
        print(
            f"segrefine: warning: {path}: image is {w}x{h} = {w * h / 1e6:.0f} MP, over "
            f"{limit / 1e6:.0f} MP: reading it takes time and memory",
            file=sys.stderr,
        )


# SOF markers of the Huffman-coded JPEGs: baseline, extended sequential, progressive
_HUFFMAN_SOF = (0xC0, 0xC1, 0xC2)


def _check_jpeg_data(img: Image.Image, path: Path) -> None:
    """Refuse a JPEG whose entropy-coded data is too short for the size in its header.

    libjpeg fills whatever data is missing with grey and Pillow does not report it, so a
    64 x 64 file whose header says 13000 x 13000 decoded (in 22 s) to 169 MP of garbage.
    Huffman coding spends at least one bit on every 8 x 8 block of the full-resolution
    component (a DC code, in sequential and progressive files alike), so fewer bits than
    blocks means missing data, found from the file's size before anything is decoded.
    """
    if img.format != "JPEG":
        return
    sof, data_start = _jpeg_layout(path)
    size = path.stat().st_size
    if sof not in _HUFFMAN_SOF or data_start > size:
        return  # arithmetic-coded or hierarchical (very rare): no such bound; or unparsed
    w, h = img.size
    blocks = -(-w // 8) * -(-h // 8)
    bits = (size - data_start) * 8
    if bits < blocks:
        raise InputError(f"JPEG header says {w}x{h} but the file holds data for at most "
                         f"{bits * 64 / 1e6:.2g} MP: truncated or corrupt", path)  # fmt: skip


def _jpeg_layout(path: Path) -> tuple[int | None, int]:
    """The SOF marker (its second byte) and the offset of the first scan's data: the marker
    segments are walked up to the first SOS, reading only their headers."""
    sof = None
    with open(path, "rb") as f:
        f.seek(2)  # SOI
        while True:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0xFF:
                return sof, f.tell()
            if head[1] == 0xFF:  # a fill byte before a marker
                f.seek(-3, os.SEEK_CUR)
                continue
            marker, length = head[1], int.from_bytes(head[2:4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                sof = marker
            f.seek(length - 2, os.SEEK_CUR)
            if marker == 0xDA:  # SOS: entropy-coded data follows its header
                return sof, f.tell()


def check_image_file(path: str | Path) -> tuple[int, int]:
    """Check that ``path`` is a readable image by decoding it in full (and dropping the
    pixels): a truncated JPEG passes ``Image.verify``, and only a full decode finds it.
    Run over a whole folder before the first output is written, one image at a time.
    Returns its (H, W) as :func:`read_image` reads it."""
    with _open(Path(path)) as img:
        return img.height, img.width


def image_size(path: str | Path) -> tuple[int, int]:
    """An image file's (H, W) as :func:`read_image` returns it (EXIF orientation applied),
    from its header: nothing is decoded."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            turned = img.getexif().get(0x0112) in (5, 6, 7, 8)  # stored rotated by 90 degrees
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read image ({err})", path) from err
    return (w, h) if turned else (h, w)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB ``uint8`` (H, W, 3).

    Grayscale, palette, 16-bit and RGBA images are converted (alpha is composited on black
    by dropping it), never rejected; an EXIF orientation is applied.
    """
    return as_rgb(_open(Path(path)))


def as_rgb(img: Image.Image) -> np.ndarray:
    """A decoded Pillow image as RGB ``uint8`` (H, W, 3), converted as :func:`read_image` says
    and turned upright by its EXIF orientation."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.max() > 0 else 1.0
        img = Image.fromarray((arr / top * 255).astype(np.uint8))
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def read_mask(path: str | Path, colours: np.ndarray | None = None) -> np.ndarray:
    """Read a label mask as ``uint8`` (H, W) of class ids (255 = void).

    Palette PNGs (PASCAL VOC) give their palette indices; mode "L" PNGs give their values. An
    RGB(A) colour mask is read through a colour table, ``colours`` (K, 3) with row k the
    colour of class k (default: the VOC palette, whose 255th colour is void); a colour that is
    not in the table is an input error naming it.
    """
    path = Path(path)
    return mask_ids(_open(path), colours, path)


def mask_ids(img: Image.Image, colours: np.ndarray | None = None,
             path: str | Path | None = None) -> np.ndarray:  # fmt: skip
    """An opened mask image -> ``uint8`` (H, W) class ids, as :func:`read_mask` reads them."""
    if img.mode in ("RGB", "RGBA"):
        return _ids_from_colours(np.asarray(img.convert("RGB")), colours, path)
    if img.mode in ("P", "L"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I", "I;16", "I;16B"):
        arr = np.asarray(img)
        if arr.max(initial=0) > 255:
            raise InputError(f"mask has label ids above 255 (max {arr.max()})", path)
        return arr.astype(np.uint8)
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8).copy()
    raise InputError(
        f"mask must be a palette or single-channel PNG of class ids, got mode {img.mode}", path
    )


def _ids_from_colours(rgb: np.ndarray, colours: np.ndarray | None, path: Path) -> np.ndarray:
    table = np.asarray(VOC_PALETTE, np.uint8).reshape(256, 3) if colours is None else colours
    table, rgb = np.asarray(table, np.int64), rgb.astype(np.int64)
    codes = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    pixels = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    first = {}
    for k, code in enumerate(codes.tolist()):  # the first class of a repeated colour wins
        first.setdefault(code, k)
    found, inverse = np.unique(pixels, return_inverse=True)
    ids = np.array([first.get(code, -1) for code in found.tolist()])
    if (ids < 0).any():
        r, g, b = (int(found[ids < 0][0]) >> s & 255 for s in (16, 8, 0))
        where = "the VOC palette" if colours is None else "the colour table"
        raise InputError(f"colour mask has colour ({r}, {g}, {b}), which is not in {where}", path)
    return ids[inverse].reshape(rgb.shape[:2]).astype(np.uint8)


MAX_NPY_ELEMENTS = 500_000_000  # 2 GB of float32: more than any probability map we accept


def read_npy(path: str | Path) -> np.ndarray:
    """A numeric ``.npy`` array, its header checked before anything is allocated: no pickled
    objects, no structured or complex dtypes, at most :data:`MAX_NPY_ELEMENTS` elements, and a
    file long enough for what the header promises."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)  # fmt: skip
            shape, _, dtype = read_header(f, max_header_size=100_000)
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as err:
        raise InputError(f"not a readable .npy file ({err})", path) from err
    if dtype.hasobject or dtype.names is not None or dtype.kind not in "biuf":
        raise InputError(f".npy array has dtype {dtype}; expected real numbers", path)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count > MAX_NPY_ELEMENTS:
        raise InputError(f".npy array has shape {shape}, over {MAX_NPY_ELEMENTS} elements", path)
    if path.stat().st_size < offset + count * dtype.itemsize:
        raise InputError(f".npy file is truncated (its header says shape {shape})", path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise InputError(f"cannot read .npy file ({err})", path) from err


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success. A
    failure to write (a full disk, a read-only folder) is an ``OSError`` naming ``path``,
    not the temporary (or nothing, as a full disk's error does)."""
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp makes the file 0600; a result should be readable like any file made here
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        with open(tmp_path, "rb") as f:  # on disk before the rename: a power cut between the
            os.fsync(f.fileno())  # two leaves the old file or the new one, never an empty one
        os.replace(tmp_path, path)
    except OSError as err:
        raise OSError(err.errno, f"cannot write ({err.strerror or err})", str(path)) from err
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


# what atomic_path's mkstemp names: ".<name>." + 8 of [a-z0-9_] + ".tmp"; a user's own
# ".cache.tmp" or "notes.tmp" never matches
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
STARTED = time.time()  # this process's start, near enough: it imports this module first


def remove_stale_temporaries(folder: str | Path, older_than: float | None = None) -> int:
    """Delete the hidden ``.<name>.<8 characters>.tmp`` files :func:`atomic_path` leaves when
    a process is killed mid-write, and no other file; with ``older_than`` (a time, e.g.
    :data:`STARTED`) only those last written before it, so that a writer that is still at
    work (another process of the same command) keeps its own. Returns how many were
    removed."""
    stale = [
        p
        for p in Path(folder).glob(".*.tmp")
        if _TEMPORARY.fullmatch(p.name)
        and p.is_file()
        and (older_than is None or p.stat().st_mtime < older_than)
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_label_png(path: str | Path, labels: np.ndarray) -> None:
    """Write class ids as a palette PNG with the VOC colour map (viewable and re-readable)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError(f"labels must be a 2-D array of ids in 0..255, got {labels.shape}")
    img = Image.fromarray(labels.astype(np.uint8), mode="P")
    img.putpalette(VOC_PALETTE)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write an RGB/gray ``uint8`` array as an image (format from the suffix), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(
            tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG")
        )


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Save an array as ``.npy``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_json(path: str | Path, obj: object) -> None:
    """Write JSON (indented, UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name. Missing folder -> InputError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such folder", folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
