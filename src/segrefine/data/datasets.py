"""Dataset layouts on disk, class selection, and the paper's preprocessing protocol.

Two layouts are read:

* **PASCAL VOC** -- ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNG),
  ``ImageSets/Segmentation/<split>.txt`` (one id per line); the 21 VOC class names.
* **folder** -- ``images/<split>/<id>.<ext>``, ``masks/<split>/<id>.png`` (class-id PNG, mode L
  or P), ``classes.txt`` (one class name per line, in id order).

In both, label 255 is void and is ignored everywhere.

Class selection (the paper's protocol as one option set, see :func:`make_tasks`) turns the
dataset's classes into one or more *tasks*; preprocessing crops the longer side to a centred
square (for the usual landscape photo: the left/right edges, as in the paper) and resizes to
``size`` (bilinear for images, nearest for masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .io import IMAGE_EXTENSIONS, VOID, read_image, read_mask

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One image on disk and (if annotated) its mask."""

    id: str
    image: Path
    mask: Path | None


@dataclass
class DatasetIndex:
    """What a dataset root holds for one split: its layout, class names and samples."""

    root: Path
    layout: str  # "voc" or "folder"
    split: str
    class_names: tuple[str, ...]
    samples: list[Sample]


def detect_layout(root: str | Path) -> str | None:
    """``"voc"``, ``"folder"`` or ``None`` when ``root`` is neither kind of dataset root."""
    root = Path(root)
    if (root / "JPEGImages").is_dir() and (root / "ImageSets" / "Segmentation").is_dir():
        return "voc"
    if (root / "images").is_dir() and (root / "classes.txt").is_file():
        return "folder"
    return None


def read_class_names(path: Path) -> tuple[str, ...]:
    """Class names from a ``classes.txt`` (blank lines skipped); must be non-empty and unique."""
    return read_class_table(path)[0]


MAX_CLASS_FILE_BYTES = 1_000_000  # 255 names fit in a few KB; the file is input
MAX_DATASET_CLASSES = 255  # ids 0..254: 255 is void


def read_class_table(path: Path) -> tuple[tuple[str, ...], np.ndarray | None]:
    """A ``classes.txt``: one class per line in id order, either ``name`` or ``name R G B``
    (the class's colour in RGB colour masks; the name may hold spaces, the colour is the
    last three numbers). Returns the names and, when every line has a colour, the (K, 3)
    colour table. At most 255 classes (255 is void); UTF-8 text."""
    if path.stat().st_size > MAX_CLASS_FILE_BYTES:
        raise InputError(f"class list is over {MAX_CLASS_FILE_BYTES // 1000} KB", path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"class list is not UTF-8 text (byte {err.start})", path) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError("class list is empty", path)
    if len(lines) > MAX_DATASET_CLASSES:
        raise InputError(f"class list has {len(lines)} classes; at most "
                         f"{MAX_DATASET_CLASSES} fit (label 255 is void)", path)  # fmt: skip
    rows = [line.rsplit(None, 3) for line in lines]
    colours = None
    if all(len(r) == 4 and all(_is_int(v) for v in r[1:]) for r in rows):
        colours = np.array([[int(v) for v in r[1:]] for r in rows])
        if ((colours < 0) | (colours > 255)).any():
            raise InputError("class colours must be R G B values in 0..255", path)
    names = tuple(r[0] for r in rows) if colours is not None else tuple(lines)
    if len(set(names)) != len(names):
        raise InputError("class list has duplicate names", path)
    return names, colours


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def open_dataset(root: str | Path, split: str) -> DatasetIndex:
    """Index ``split`` of the dataset at ``root`` (either layout); nothing is decoded yet."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("no such dataset folder", root)
    layout = detect_layout(root)
    if layout == "voc":
        split_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise InputError(f"no split '{split}' (missing split list)", split_file)
        ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise InputError(f"split '{split}' is empty", split_file)
        for sid in ids:  # an id names files to read and outputs to write: a name, never a path
            if sid in (".", "..") or sid != Path(sid).name or "\\" in sid:
                raise InputError(f"split list holds {sid!r}, which is not a plain file name",
                                 split_file)  # fmt: skip
        samples = []
        for sid in ids:
            image = root / "JPEGImages" / f"{sid}.jpg"
            if not image.is_file():
                matches = sorted((root / "JPEGImages").glob(f"{sid}.*"))
                image = matches[0] if matches else image
            mask = root / "SegmentationClass" / f"{sid}.png"
            samples.append(Sample(sid, image, mask if mask.is_file() else None))
        return DatasetIndex(root, "voc", split, VOC_CLASSES, samples)
    if layout == "folder":
        class_names = read_class_names(root / "classes.txt")
        image_dir = root / "images" / split
        if not image_dir.is_dir():
            raise InputError(f"no split '{split}'", image_dir)
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise InputError(f"split '{split}' has no images", image_dir)
        mask_dir = root / "masks" / split
        samples = []
        for image in images:
            mask = mask_dir / f"{image.stem}.png"
            samples.append(Sample(image.stem, image, mask if mask.is_file() else None))
        return DatasetIndex(root, "folder", split, class_names, samples)
    raise InputError(
        "not a dataset root: expected a PASCAL VOC layout (JPEGImages/, ImageSets/Segmentation/)"
        " or a folder layout (images/<split>/, masks/<split>/, classes.txt)",
        root,
    )


@dataclass(frozen=True)
class Task:
    """A segmentation task made from a dataset's classes.

    ``lut`` maps every dataset label id (0..255) to the task's id; void stays 255. Ids the
    dataset does not define map to -1 so that :meth:`remap` can reject them.
    ``required`` is the dataset id an image must contain to belong to the task (the paper's
    per-class binary tasks use only the images showing that class), or ``None``.
    """

    name: str
    class_names: tuple[str, ...]
    lut: np.ndarray = field(repr=False)
    required: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def remap(self, mask: np.ndarray, path: Path | None = None) -> np.ndarray:
        """Dataset ids -> task ids; an id outside the dataset's class list raises InputError."""
        out = self.lut[mask]
        if (out < 0).any():
            bad = sorted(set(np.unique(mask[out < 0]).tolist()))
            raise InputError(
                f"mask has label ids {bad} outside the class list "
                f"(0..{int((self.lut >= 0).sum()) - 2} and 255 = void)",
                path,
            )
        return out.astype(np.uint8)


def make_tasks(
    class_names: Sequence[str],
    classes: Sequence[str] | None = None,
    binary_per_class: bool = False,
) -> list[Task]:
    """Turn a dataset's classes into tasks (the paper's protocol options).

    * ``classes=None``: one task with all the dataset's classes, ids unchanged.
    * ``classes=["horse"]``: one binary task, background (everything else) vs horse.
    * ``classes=["cat", "dog"]``: one task background/cat/dog, other classes become background.
    * ``binary_per_class=True``: one binary task per listed class (the paper's setting:
      ``bird,cat,dog,horse,sheep`` each as animal-vs-background), each over the images that
      contain that class.
    """
    n = len(class_names)
    base = np.full(256, -1, dtype=np.int16)
    base[VOID] = VOID
    if not classes:
        if binary_per_class:
            raise InputError("--binary-per-class needs --classes")
        lut = base.copy()
        lut[:n] = np.arange(n)
        return [Task("all", tuple(class_names), lut)]
    unknown = [c for c in classes if c not in class_names]
    if unknown:
        raise InputError(f"unknown classes {unknown}; this dataset has: {', '.join(class_names)}")
    ids = [class_names.index(c) for c in classes]

    def selection(chosen: list[int], name: str, required: int | None) -> Task:
        lut = base.copy()
        lut[:n] = 0  # every valid class not chosen becomes background
        for new_id, old_id in enumerate(chosen, start=1):
            lut[old_id] = new_id
        names = ("background", *(class_names[i] for i in chosen))
        return Task(name, names, lut, required)

    if binary_per_class:
        return [selection([i], class_names[i], i) for i in ids]
    return [selection(ids, "+".join(classes), None)]


def crop_square(array: np.ndarray) -> np.ndarray:
    """Centre-crop the longer side so the array is square (left/right edges of a landscape)."""
    h, w = array.shape[:2]
    if w > h:
        x0 = (w - h) // 2
        return array[:, x0 : x0 + h]
    y0 = (h - w) // 2
    return array[y0 : y0 + w]


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` (int = square, or (height, width)), bilinear."""
    h, w = (size, size) if isinstance(size, int) else size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a label mask to ``size`` with nearest neighbour (ids are never blended)."""
    h, w = (size, size) if isinstance(size, int) else size
    if mask.shape[:2] == (h, w):
        return mask
    return np.asarray(Image.fromarray(mask).resize((w, h), Image.NEAREST))


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """The protocol for an image: square crop, then resize to ``size`` x ``size``."""
    return resize_image(crop_square(image), size)


def preprocess_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """The protocol for a mask: the same square crop, nearest-neighbour resize."""
    return resize_mask(crop_square(mask), size)


@dataclass
class Item:
    """One preprocessed example: image (size, size, 3) uint8, mask (size, size) task ids."""

    id: str
    task: str
    image: np.ndarray
    mask: np.ndarray | None


@dataclass
class LoadedSplit:
    """A split read into memory under a task definition."""

    tasks: list[Task]
    items: list[Item]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.tasks[0].class_names

    @property
    def num_classes(self) -> int:
        return self.tasks[0].num_classes


def read_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a sample's image and raw mask, checking that their sizes agree."""
    image = read_image(sample.image)
    if sample.mask is None:
        return image, None
    mask = read_mask(sample.mask)
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"mask size {mask.shape[1]}x{mask.shape[0]} does not match its image "
            f"{sample.image.name} ({image.shape[1]}x{image.shape[0]})",
            sample.mask,
        )
    return image, mask


def load_split(
    root: str | Path,
    split: str,
    classes: Sequence[str] | None = None,
    binary_per_class: bool = False,
    size: int | None = 128,
    require_masks: bool = True,
) -> LoadedSplit:
    """Read, validate and preprocess a whole split into memory.

    ``size=None`` keeps each image at its own resolution (no crop, no resize). With
    ``binary_per_class`` an image appears once per listed class it contains, with id
    ``<class>/<image id>``.
    """
    index = open_dataset(root, split)
    tasks = make_tasks(index.class_names, classes, binary_per_class)
    items: list[Item] = []
    for sample in index.samples:
        if require_masks and sample.mask is None:
            raise InputError(f"image {sample.image.name} has no mask", sample.image.parent)
        image, raw = read_pair(sample)
        if size is not None:
            image = preprocess(image, size)
        for task in tasks:
            mask = None
            if raw is not None:
                if task.required is not None and not (raw == task.required).any():
                    continue
                mask = task.remap(raw, sample.mask)
                if size is not None:
                    mask = preprocess_mask(mask, size)
            item_id = sample.id if len(tasks) == 1 else f"{task.name}/{sample.id}"
            items.append(Item(item_id, task.name, image, mask))
    if not items:
        raise InputError(f"split '{split}' has no images for the chosen classes", index.root)
    return LoadedSplit(tasks, items)
