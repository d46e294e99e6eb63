"""Finding the segmenter and refiner runs the web app can offer, and loading them once.

A run is a folder with a ``config.json`` written by ``train-segmenter`` or ``train-refiner``.
:func:`scan_runs` walks ``--runs`` a few levels deep and does not descend into a run (its
sub-folders, such as a refiner's out-of-fold segmenters, are its internals). Folders that look
like runs but are not readable ones come back as notes, so the page can say why a folder the
user expected is missing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .. import checkpoint, zoo
from ..errors import InputError
from ..runs import EXAMPLES, list_examples

__all__ = ["RunIndex", "ModelCache", "scan_runs"]

MAX_DEPTH = 3


@dataclass
class RunIndex:
    """Runs found under a folder: ``name`` (path relative to the root) -> description."""

    root: Path | None
    segmenters: dict[str, dict] = field(default_factory=dict)
    refiners: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def path(self, name: str, kind: str = "segmenter") -> Path:
        """The folder of the run called ``name`` (a zoo entry, ``zoo:NAME``, holds a run of
        each ``kind``)."""
        if zoo.is_zoo(name):
            return zoo.ROOT / zoo.entry(name[len(zoo.PREFIX) :])["runs"][kind]
        return self.root / name

    def example_path(self, example_id: str) -> Path:
        """The file behind ``run:<run name>:<file>``, an id :meth:`examples` gave, resolved;
        anything else (another run, another file, a path, a link out of the run) is an input
        error."""
        _, _, rest = example_id.partition("run:")
        name, _, file = rest.rpartition(":")
        info = self.segmenters.get(name) or self.refiners.get(name)
        if not example_id.startswith("run:") or info is None or file not in info["examples"]:
            raise InputError(f"no example {example_id!r}")
        # checked again when served: the folder may have changed since it was scanned
        path = _inside(self.path(name), f"{EXAMPLES}/{file}")
        if path is None:
            raise InputError(f"no example {example_id!r}")
        return path

    def examples(self) -> list[dict]:
        """The example images the runs carry (from their validation splits), one entry each."""
        seen, out = set(), []
        for name, info in [*self.segmenters.items(), *self.refiners.items()]:
            for file in info["examples"]:
                if (name, file) not in seen:
                    seen.add((name, file))
                    out.append({"id": f"run:{name}:{file}", "name": f"{name}: {file}"})
        return out

    def as_json(self) -> dict:
        return {
            "root": None if self.root is None else str(self.root),
            "segmenters": [{"name": k, **v} for k, v in self.segmenters.items()],
            "refiners": [{"name": k, **v} for k, v in self.refiners.items()],
            "notes": self.notes,
        }


def _inside(run: Path, name: str) -> Path | None:
    """``run / name`` resolved, when it is a regular file inside ``run``; else None. A run
    folder is shared and unpacked by others: a symlink in it (``examples/a.jpg`` ->
    ``/home/you/private.jpg``) must not make the server hand out a file from elsewhere."""
    try:
        root = run.resolve(strict=True)
        path = (run / name).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a loop of links
        return None
    return path if path.is_relative_to(root) and path.is_file() else None


def _describe(run: Path, config: dict) -> dict:
    info = {"classes": list(config.get("class_names", [])), "size": config.get("size")}
    if config["kind"] == "segmenter":
        model = config.get("model", {})
        info["model"] = model.get("name", "?") if isinstance(model, dict) else str(model)
    else:
        info["mode"] = config.get("mode", "default")
        info["class_agnostic"] = bool(config.get("class_agnostic", False))
        info["defaults"] = {k: config.get("inference", {}).get(k)
                            for k in ("steps", "strength", "samples")}  # fmt: skip
    if not (run / checkpoint.WEIGHTS).is_file():
        raise InputError(f"no {checkpoint.WEIGHTS} (training not finished?)", run)
    info["examples"] = [f for f in list_examples(run) if _inside(run, f"{EXAMPLES}/{f}")]
    return info


def _spec_type(kind: str):
    """The spec class that checks a config of this kind (the loaders' own schema check)."""
    from ..diffusion.refiner import RefinerSpec
    from ..segmenting.segmenter import SegmenterSpec

    return SegmenterSpec if kind == "segmenter" else RefinerSpec


def scan_runs(root: str | Path | None) -> RunIndex:
    """The zoo's entries and every readable run under ``root`` (sorted by relative path; None:
    the zoo alone), plus notes on folders that carry a ``config.json`` but are not usable
    runs, and on a root that does not exist."""
    root = Path(root) if root is not None else None
    index = RunIndex(root=root)
    if root is None:  # the zoo alone
        _add_zoo(index)
        return index
    if not root.is_dir():
        index.notes.append(f"{root}: runs folder does not exist (segrefine serve --runs DIR)")
        _add_zoo(index)
        return index

    def visit(folder: Path, depth: int) -> None:
        if (folder / checkpoint.CONFIG).is_file():
            name = folder.relative_to(root).as_posix() or "."
            try:
                config = checkpoint.read_config(folder, kind=("segmenter", "refiner"))
                _spec_type(config["kind"]).from_json(config, folder / checkpoint.CONFIG)
                info = _describe(folder, config)
            except InputError as err:  # one bad folder is listed as unusable, never fatal
                index.notes.append(f"{name}: not a usable segrefine run ({err.message})")
                return
            target = index.segmenters if config["kind"] == "segmenter" else index.refiners
            target[name] = info
            return
        if depth >= MAX_DEPTH:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            if not child.name.startswith("."):
                visit(child, depth + 1)

    visit(root, 0)
    _add_zoo(index)  # after the user's own: the page picks the first run it lists
    if not any(not zoo.is_zoo(name) for name in index.segmenters):
        index.notes.append(
            f"{root}: no segmenter runs found; train one with `segrefine train-segmenter` or "
            "`segrefine demo --out DIR` and serve with `--runs DIR`"
        )
    return index


def _add_zoo(index: RunIndex) -> None:
    """The zoo's entries (``zoo:NAME``, shipped inside the package), offered beside the
    user's runs: each is a segmenter and a refiner."""
    try:
        names = zoo.names()
    except InputError as err:
        index.notes.append(f"zoo: not usable ({err.message})")
        return
    for name in names:
        for kind in zoo.KINDS:
            label = zoo.PREFIX + name
            try:
                folder = index.path(label, kind)
                info = _describe(folder, checkpoint.read_config(folder, kind=kind))
                info["examples"] = []  # the zoo ships no images (their licences)
            except (InputError, KeyError) as err:
                index.notes.append(f"{label}: not usable ({getattr(err, 'message', err)})")
                continue
            (index.segmenters if kind == "segmenter" else index.refiners)[label] = info


class ModelCache:
    """Loaded models by run name; each run is loaded once and kept (runs are small)."""

    def __init__(self, index: RunIndex, device: str = "cpu", backend: str = "torch"):
        self.index = index
        self.device = device
        self.backend = backend  # torch, or onnxruntime (segrefine.deploy)
        self._models: dict[tuple[str, str], object] = {}
        self._lock = threading.Lock()

    def get(self, kind: str, name: str):
        from ..diffusion import Refiner
        from ..segmenting.segmenter import Segmenter

        known = self.index.segmenters if kind == "segmenter" else self.index.refiners
        if name not in known:
            raise InputError(f"no {kind} run called {name!r} under {self.index.root}")
        weights = self.index.path(name, kind) / checkpoint.WEIGHTS
        with self._lock:
            key = (kind, name, weights.stat().st_mtime_ns if weights.exists() else 0)
            if key not in self._models:
                for stale in [k for k in self._models if k[:2] == key[:2]]:  # retrained since
                    del self._models[stale]
                cls = Segmenter if kind == "segmenter" else Refiner
                # a zoo entry loads by its name: its files are checked against the manifest
                target = name if zoo.is_zoo(name) else self.index.path(name)
                self._models[key] = cls.load(target, device=self.device, backend=self.backend)
            return self._models[key]
