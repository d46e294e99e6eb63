"""The model zoo: trained segmenter + refiner pairs shipped inside the package, offline.

>>> from segrefine import Refiner, Segmenter                     # doctest: +SKIP
>>> seg = Segmenter.load("zoo:weizmann-horse")
>>> ref = Refiner.load("zoo:weizmann-horse")

Each entry is a folder beside this file holding a ``segmenter/`` and a ``refiner/`` run (as
the trainers write them, weights in float16) and a model card, ``README.md``. ``manifest.json``
lists every entry with its scores and the SHA-256 of each of its files; a run is loaded only
after its files match (a damaged or edited installation is an error naming the file, never a
silently different model). Entries are made and scored by ``benchmarks/zoo.py``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..errors import InputError

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "manifest.json"
PREFIX = "zoo:"
KINDS = ("segmenter", "refiner")


@functools.cache
def manifest() -> dict:
    """The manifest: ``{"entries": {name: {...}}}`` (empty when no entry is installed)."""
    if not MANIFEST.is_file():
        return {"entries": {}}
    try:
        data = json.loads(MANIFEST.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"zoo manifest is not valid JSON ({err})", MANIFEST) from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise InputError("zoo manifest has no 'entries' mapping", MANIFEST)
    return data


def names() -> list[str]:
    """The entries installed, sorted."""
    return sorted(manifest()["entries"])


def entry(name: str) -> dict:
    """One entry's manifest record; an unknown name is an input error listing the known."""
    entries = manifest()["entries"]
    if name not in entries:
        known = ", ".join(f"{PREFIX}{n}" for n in sorted(entries)) or "none installed"
        raise InputError(f"no zoo model {PREFIX}{name} (known: {known}; `segrefine zoo` "
                         "lists them)")  # fmt: skip
    return entries[name]


def is_zoo(run: str | Path) -> bool:
    """Whether ``run`` names a zoo entry (``zoo:NAME``) rather than a folder."""
    return str(run).startswith(PREFIX)


def resolve(run: str | Path, kind: str) -> Path:
    """The folder of zoo entry ``zoo:NAME``'s ``kind`` run (``segmenter`` or ``refiner``),
    its files checked against the manifest first."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    name = str(run)[len(PREFIX):]
    record = entry(name)
    if kind not in record.get("runs", {}):
        raise InputError(f"zoo model {PREFIX}{name} has no {kind}")
    folder = ROOT / record["runs"][kind]
    verify(name, only=record["runs"][kind])
    return folder


def verify(name: str, only: str | None = None) -> None:
    """Check the SHA-256 of every file of entry ``name`` (or of those under ``only``)."""
    for rel, digest in entry(name).get("files", {}).items():
        if only is not None and not rel.startswith(only.rstrip("/") + "/"):
            continue
        path = ROOT / rel
        if not path.is_file():
            raise InputError(f"zoo model {PREFIX}{name} is incomplete (missing file); "
                             "reinstall segrefine", path)  # fmt: skip
        if file_digest(path) != digest:
            raise InputError(f"zoo model {PREFIX}{name}: file does not match its checksum in "
                             "the manifest (altered or damaged); reinstall segrefine",
                             path)  # fmt: skip


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def card(name: str) -> Path:
    """The model card of entry ``name``."""
    return ROOT / entry(name)["card"]
