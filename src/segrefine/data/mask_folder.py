"""A folder of masks or maps found by image id: coarse inputs for ``refine``, predictions and
truth for ``evaluate``. Each file is read by :func:`~segrefine.data.coarse.read_coarse`, so the
same folder reads the same way in every command.

Names: ``<id>.npy``, ``<id>.<image extension>``, ``<id>_mask.<ext>`` or ``<id>-mask.<ext>``,
or a pattern such as ``'{id}_mask.png'``. Two candidates for one id are an error naming both
(which one a user meant is not ours to guess), except the labels and probabilities segrefine
writes side by side. A ``classes.txt`` beside the masks names their
classes (and may give each a colour, ``name R G B``, for RGB masks).
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import InputError
from .coarse import Coarse, read_coarse
from .datasets import read_class_table
from .io import IMAGE_EXTENSIONS

SUFFIXES = ("", "_mask", "-mask")


def check_pattern(pattern: str) -> str:
    """A ``--mask-pattern``: one ``{id}`` field and a plain file name (no folders)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as err:
        raise InputError(f"--mask-pattern {pattern!r} is not a valid pattern ({err})") from None
    if fields != ["id"]:
        raise InputError(f"--mask-pattern {pattern!r} must hold '{{id}}' once and no other "
                         "field, e.g. '{id}_mask.png'")  # fmt: skip
    if "/" in pattern or "\\" in pattern or pattern.startswith("."):
        raise InputError(f"--mask-pattern {pattern!r} must be a file name, not a path")
    return pattern


class MaskFolder:
    """The masks in ``folder`` for a task of ``classes`` classes (None: any, as a
    class-agnostic refiner takes them). ``notice`` receives one line per kind of reading
    that a user should be told about (e.g. a two-valued or soft mask), once per folder;
    ``names`` are the task's classes, for those lines. An ``<id>.png`` of labels beside the
    ``<id>.npy`` they came from (what segrefine writes) is read as the ``.npy``, or with
    ``labels_first`` as the ``.png``; any other pair of candidates is an error."""

    def __init__(self, folder: str | Path, classes: int | None, pattern: str | None = None,
                 notice: Callable[[str], None] | None = None,
                 names: tuple[str, ...] | None = None, labels_first: bool = False):  # fmt: skip
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError("no such mask folder", self.folder)
        self.classes, self.notice = classes, notice or (lambda message: None)
        self.pattern = None if pattern is None else check_pattern(pattern)
        self.names: tuple[str, ...] | None = None  # the folder's own classes.txt, if any
        self.colours: np.ndarray | None = None
        table = self.folder / "classes.txt"
        if table.is_file():
            self.names, self.colours = read_class_table(table)
        self._task_names = self.names or names
        self._told: set[str] = set()
        # predict --save-probs and refine write <id>.png (labels) beside <id>.npy (their
        # probabilities): a scorer of labels takes the .png of such a pair
        self.labels_first = labels_first
        self._files = {p.name for p in self.folder.iterdir() if p.is_file()}

    def path_for(self, item_id: str) -> Path:
        """The one file for ``item_id``; an input error when there is none or more than one."""
        return self._locate(item_id)[0]

    def _locate(self, item_id: str) -> tuple[Path, Coarse | None]:
        """:meth:`path_for`, and the file's reading when finding it took one (a pair)."""
        if not item_id or item_id != Path(item_id).name or item_id in (".", ".."):
            raise InputError(f"image id {item_id!r} is not a plain file name", self.folder)
        if self.pattern is not None:
            path = self.folder / self.pattern.format(id=item_id)
            if path.name not in self._files:
                raise InputError(f"no mask for image '{item_id}' (--mask-pattern "
                                 f"{self.pattern!r} gives {path.name})", self.folder)  # fmt: skip
            return path, None
        exts = (".npy", *IMAGE_EXTENSIONS)
        found = [f"{item_id}{s}{e}" for s in SUFFIXES for e in exts
                 if f"{item_id}{s}{e}" in self._files]  # fmt: skip
        if not found:
            raise InputError(f"no mask for image '{item_id}' (looked for {item_id}.png, "
                             f"{item_id}.npy, {item_id}_mask.png, {item_id}-mask.png and other "
                             "image formats; name them so or pass --mask-pattern)",
                             self.folder)  # fmt: skip
        if sorted(found) == [f"{item_id}.npy", f"{item_id}.png"]:
            return self._pair(item_id)
        if len(found) > 1:
            raise InputError(f"{' and '.join(found)} are both masks for image '{item_id}': "
                             "remove one, or pick with --mask-pattern", self.folder)  # fmt: skip
        return self.folder / found[0], None

    def _pair(self, item_id: str) -> tuple[Path, Coarse]:
        """``<id>.png`` beside ``<id>.npy``: as ``predict --save-probs`` and ``refine`` write
        them, the labels and their probabilities. Taken as such (the ``.png`` for a scorer of
        labels, the ``.npy`` otherwise) when the labels are the map's most likely classes;
        two different predictions are an error naming both."""
        png, npy = self.folder / f"{item_id}.png", self.folder / f"{item_id}.npy"
        as_png = read_coarse(png, self.classes, self.colours)
        as_npy = read_coarse(npy, self.classes)
        labels, probs = as_png.top_labels(), as_npy.probs
        if probs is not None and self.classes is not None and len(probs) != self.classes:
            return npy, as_npy  # a map for other classes: its own error says so
        # float16 maps round near-ties: the labels must be a most likely class up to that
        same = probs is not None and probs.shape[1:] == labels.shape and labels.max() < len(
            probs) and (np.take_along_axis(probs, labels[None].astype(np.int64), 0)[0]
                        >= probs.max(0) - 2e-3).all()  # fmt: skip
        if not same:
            raise InputError(f"{npy.name} and {png.name} are both masks for image '{item_id}' "
                             "and differ: remove one, or pick with --mask-pattern",
                             self.folder)  # fmt: skip
        return (png, as_png) if self.labels_first else (npy, as_npy)

    def read(self, item_id: str) -> Coarse:
        """The coarse input for ``item_id`` (see :func:`~segrefine.data.coarse.read_coarse`),
        telling ``notice`` how it was read the first time a kind appears."""
        path, coarse = self._locate(item_id)
        if coarse is None:
            coarse = read_coarse(path, self.classes, self.colours)
        if coarse.note and coarse.kind not in self._told:
            self._told.add(coarse.kind)
            self.notice(f"{coarse.path}: read as {self._named(coarse.note)}; other masks of "
                        "this kind here are read the same way")  # fmt: skip
        return coarse

    def _named(self, note: str) -> str:
        """A note with the task's own class names for background and object."""
        names = self._task_names
        if names is None or len(names) != 2:
            return note
        return note.replace("= background", f"= {names[0]}").replace(
            "= object", f"= {names[1]}").replace("the object's", f"{names[1]}'s")
