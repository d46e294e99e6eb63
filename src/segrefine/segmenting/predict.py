"""Running a segmenter over a folder of images or a dataset split, writing label PNGs and
(optionally) probability maps that any other tool can read.

Outputs, for an input named ``<id>``:

* ``<id>.png`` -- class ids as a palette PNG (VOC colours; open it in any viewer, or read the
  ids with ``numpy.asarray(PIL.Image.open(path))``);
* ``<id>.npy`` -- with ``save_probs``: float16 probabilities, shape (C, H, W), summing to 1
  over C; the class order is the run's ``class_names`` (also written to ``classes.txt``).

Outputs are at each image's own size (H, W), or with ``protocol`` at the paper's square
protocol size (centre crop, the run's ``size``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.datasets import detect_layout, load_split
from ..data.io import (
    STARTED,
    check_image_file,
    image_size,
    list_images,
    read_image,
    remove_stale_temporaries,
    write_label_png,
    write_npy,
    write_text,
)
from ..data.transforms import check_aspect
from ..errors import InputError
from .segmenter import Segmenter


def process_share(items: list) -> list:
    """This process's share of ``items`` when the command runs in several processes
    (``accelerate launch``, ``torchrun``): contiguous parts, one per process, via Accelerate's
    ``split_between_processes``. All of them in a single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return items
    import torch
    from accelerate import PartialState

    # without a GPU Accelerate forms a process group only when told it runs on CPUs
    state = PartialState(cpu=not torch.cuda.is_available())
    with state.split_between_processes(items) as mine:
        return list(mine)


def is_main_process() -> bool:
    """Whether this is the process that writes shared files (the only one, usually)."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class InputImage:
    id: str
    image: np.ndarray  # RGB uint8


class Inputs:
    """The images a command will read, listed before any is read: sized (progress bars know
    the total) and iterable (each image is read when its turn comes)."""

    def __init__(self, entries: list, read: Callable[[object], InputImage],
                 peek: Callable[[object], tuple[str, tuple[int, int]]]):  # fmt: skip
        self.entries, self.read, self.peek = entries, read, peek

    def sizes(self) -> list[tuple[str, tuple[int, int]]]:
        """Each input's id and (H, W), found without decoding: to check what goes with an
        image before any output is written."""
        return [self.peek(entry) for entry in self.entries]

    def without(self, ids: set[str]) -> Inputs:
        """The inputs but those with these ids."""
        keep = [e for e in self.entries if self.peek(e)[0] not in ids]
        return Inputs(keep, self.read, self.peek)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[InputImage]:
        for entry in self.entries:
            yield self.read(entry)


def iter_inputs(
    source: str | Path,
    size: int,
    split: str = "val",
    classes=None,
    binary_per_class=False,
    protocol: bool = False,
    bad: dict[str, str] | None = None,
) -> Inputs:
    """Images from a plain folder, or from ``split`` of a dataset root (either layout).

    Images keep their own size, or with ``protocol`` dataset images go through the paper's
    square protocol (centre crop, resize to ``size``); dataset images take the run's class
    selection, so predictions line up with ``evaluate`` on the same split. Folder images are
    read one at a time and keep their names. In several processes each one gets
    its share (:func:`process_share`), so every output is written once. A broken image file is
    an input error, or with a ``bad`` dict it is recorded there (id -> the error) and left out.
    """
    source = Path(source)
    if not source.exists():
        raise InputError("no such image folder or dataset", source)
    if source.is_dir() and detect_layout(source) is not None:
        data = load_split(
            source,
            split,
            classes,
            binary_per_class,
            size if protocol else None,
            require_masks=False,
        )
        items = []
        for item in process_share(data.items):  # the protocol's squares need no check
            try:
                if not protocol:
                    _check_item(item, size, source)
                items.append(item)
            except InputError as err:
                if bad is None:
                    raise
                bad[item.id] = str(err)
        return Inputs(items, lambda item: InputImage(item.id, item.image),
                      lambda item: (item.id, item.image.shape[:2]))  # fmt: skip
    paths = [source] if source.is_file() else list_images(source)
    if not paths:
        raise InputError("no images found (jpg, png, bmp, tif, webp)", source)
    stems: dict[str, Path] = {}
    for path in paths:  # a.jpg and a.png would write the same outputs
        if path.stem in stems:
            raise InputError(f"{stems[path.stem].name} and {path.name} would both write "
                             f"'{path.stem}' outputs: rename one", source)  # fmt: skip
        stems[path.stem] = path
    mine = []
    for path in process_share(paths):  # a broken file fails now, before any output
        try:
            # decoded in full (a truncated JPEG passes Image.verify), one at a time, and its
            # working size bounded before any model sees it
            check_aspect(check_image_file(path), size, path)
            mine.append(path)
        except InputError as err:
            if bad is None:
                raise
            bad[path.stem] = str(err)
    return Inputs(
        mine,
        lambda path: InputImage(path.stem, read_image(path)),
        lambda path: (path.stem, image_size(path)),
    )


def _check_item(item, size: int, root: Path) -> None:
    """A dataset image's working size, its error naming the image's id and the dataset."""
    try:
        check_aspect(item.image.shape, size)
    except InputError as err:
        raise InputError(f"image '{item.id}': {err}", root) from None


def predict_to_folder(
    segmenter: Segmenter,
    source: str | Path,
    out: str | Path,
    split: str = "val",
    save_probs: bool = False,
    protocol: bool = False,
    progress: bool = True,
) -> list[str]:
    """Predict every input image and write ``<id>.png`` (+ ``<id>.npy``) under ``out``.

    Returns the ids written. Each file is written atomically; ``classes.txt`` records the
    class order of the probability maps.
    """
    cfg = segmenter.spec
    inputs = iter_inputs(source, segmenter.size, split, cfg.classes, cfg.binary_per_class, protocol)
    out = prepare_output(out)
    written = []
    for inp in tqdm(inputs, desc="predict", disable=not progress, leave=False):
        probs = segmenter.predict(inp.image, protocol=protocol)
        write_label_png(out / f"{inp.id}.png", probs.argmax(0))
        if save_probs:
            write_npy(out / f"{inp.id}.npy", probs.astype(np.float16))
        written.append(inp.id)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        write_text(out / "classes.txt", "\n".join(segmenter.class_names) + "\n")
    return written


def prepare_output(out: str | Path) -> Path:
    """The output folder, once every input is checked: refused when it is a file, and
    cleared of the temporaries a killed run of ours left (only those, and only ones older
    than this process, so another process of this command keeps its own)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output folder is a file", out)
    if out.is_dir() and is_main_process():
        remove_stale_temporaries(out, older_than=STARTED)
    return out
