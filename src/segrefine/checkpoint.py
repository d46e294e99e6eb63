"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, no pickle.

A run folder (``RUN_DIR``) holds

* ``config.json`` -- what the run is (``"kind": "segmenter"`` or ``"refiner"``), the model's
  architecture and classes, and the settings it was trained with;
* ``model.safetensors`` -- the weights to use (the best validation epoch);
* ``last.safetensors`` -- weights *and* optimizer state of the newest epoch, with the trainer's
  progress in the file's metadata, so one atomic file is all ``--resume`` needs;
* ``log.jsonl`` -- one JSON line per epoch.

Every file is written to a temporary name and renamed into place. A run is given by its
folder or as a zoo entry, ``zoo:NAME`` (:func:`run_folder`); a new run may start from a
trained one's weights (:func:`init_from`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .data.io import atomic_path, write_json
from .errors import InputError

FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LAST = "last.safetensors"
LOG = "log.jsonl"
MAX_CONFIG_BYTES = 1_000_000


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].contiguous().reshape(-1)  # 0-d tensors cannot be viewed as bytes
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict | None = None):
    """Write tensors (+ optional JSON-able ``meta``) to one safetensors file, atomically, with a
    checksum of the tensors in the file's metadata."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"segrefine": json.dumps(meta or {}), "sha256": _digest(flat)}
    data = memoryview(save(flat, metadata=metadata))
    n = int.from_bytes(data[:8], "little")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data[:8])
        f.write(_canonical_header(bytes(data[8 : 8 + n])))
        f.write(data[8 + n :])  # the tensors' bytes, not copied again


def _canonical_header(header: bytes) -> bytes:
    """A safetensors header with its metadata's keys in sorted order, same length. safetensors
    writes them in a hash map's order, which changes from one save to the next, so the same
    tensors and metadata gave files with other bytes (and another SHA-256 in the zoo's
    manifest)."""
    parsed = json.loads(header)
    if "__metadata__" in parsed:
        parsed["__metadata__"] = dict(sorted(parsed["__metadata__"].items()))
    text = json.dumps(parsed, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > len(header):  # not the writer's own formatting: keep its bytes
        return header
    return text + b" " * (len(header) - len(text))


class UncheckedWeightsWarning(UserWarning):
    """Weights written before segrefine kept checksums: damage to them would go unnoticed."""


_UNCHECKED_WARNED: set[Path] = set()


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors`: (tensors, meta). A file whose tensors no
    longer match its checksum (a flipped bit, an edit) is refused; weights written before
    checksums existed carry none: they are read as they are, with one warning per file that
    says how to add one."""
    tensors, meta, checked = read_tensors(path)
    path = Path(path)
    # a training state is rewritten, checksum and all, at the next save: no warning
    if not checked and path.name != LAST and path.resolve() not in _UNCHECKED_WARNED:
        _UNCHECKED_WARNED.add(path.resolve())
        warnings.warn(UncheckedWeightsWarning(
            f"{path} has no checksum (written by an older segrefine), so damage to it would "
            f"go unnoticed; 'segrefine export --run {path.parent} --out COPY' writes a copy "
            "that has one"), stacklevel=2)  # fmt: skip
    return tensors, meta


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, bool]:
    """:func:`load_tensors` without the warning: (tensors, meta, whether a checksum was
    there and matched)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such checkpoint file", path)
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("segrefine", "{}"))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"not a readable safetensors checkpoint ({err})", path) from err
    if not isinstance(meta, dict):
        raise InputError("checkpoint metadata is not a JSON object", path)
    if "sha256" in header and header["sha256"] != _digest(tensors):
        raise InputError("tensors do not match the file's checksum (altered or damaged)", path)
    return tensors, meta, "sha256" in header


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state into tensors and a JSON-able remainder (no pickle needed)."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    """Inverse of :func:`optimizer_to_tensors`: load the state back into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    # load_state_dict takes a partial state and the first step fails later: check it whole
    kinds = {frozenset(v) for v in state.values()}
    params = sum(len(g["params"]) for g in meta["param_groups"])
    if len(kinds) > 1 or (state and len(state) != params):
        raise ValueError("optimizer state is incomplete")
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def load_weights(model: torch.nn.Module, run_dir: str | Path) -> None:
    """Load a run's best weights (``model.safetensors``) into ``model``; a file that does not
    fit the architecture described by the run's config is an input error."""
    path = Path(run_dir) / WEIGHTS
    tensors, _ = load_tensors(path)
    _refuse_non_finite(tensors, path)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise InputError("weights do not match the architecture in config.json", path) from err


def run_folder(run: str | Path, kind: str) -> Path:
    """The folder of a run given by path or as a zoo entry (``zoo:NAME``)."""
    from . import zoo  # the zoo names its runs; it imports nothing of ours

    return zoo.resolve(run, kind) if zoo.is_zoo(run) else Path(run)


def check_init_from(run: str | Path, kind: str) -> Path:
    """The weights file of ``run`` (a folder or ``zoo:NAME``) to start a new ``kind`` run
    from; an input error, before any training folder is made, when it is no such run."""
    folder = run_folder(run, kind)
    read_config(folder, kind=kind)
    return folder / WEIGHTS


def init_from(net: torch.nn.Module, run: str | Path, kind: str) -> dict:
    """Start ``net`` from a trained ``kind`` run: every tensor whose name and shape match is
    copied, the rest (e.g. the class layers when the classes differ) keep their fresh
    initialisation. Returns what the new run records: where it started and how many tensors
    were copied and left fresh."""
    tensors, _ = load_tensors(check_init_from(run, kind))
    own = net.state_dict()
    same = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    if not same:
        raise InputError(f"no tensor of {run} fits this {kind}'s architecture (another "
                         "model, width or depth?)")  # fmt: skip
    net.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in same.items()}})
    return {"run": str(run), "copied": len(same), "fresh": len(own) - len(same)}


def save_training_state(run_dir: str | Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, meta: dict,
                        extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``last.safetensors``: model and optimizer state plus ``meta`` (for resuming), and
    any ``extra`` tensors the trainer keeps besides (e.g. an exponential moving average)."""
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    model_tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    extra_tensors = {f"extra.{k}": v for k, v in (extra or {}).items()}
    save_tensors(Path(run_dir) / LAST, {**model_tensors, **opt_tensors, **extra_tensors},
                 {**meta, "optimizer": opt_meta})


def load_training_state(run_dir: str | Path, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_training_state` wrote; returns its ``meta``, with the
    ``extra`` tensors under ``meta["extra"]`` (empty when none were saved)."""
    path = Path(run_dir) / LAST
    tensors, meta = load_tensors(path)
    _refuse_non_finite(tensors, path)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        # an edited or foreign file: whatever broke, resuming from it is impossible
        raise InputError(f"training state does not fit this run ({type(err).__name__}); "
                         "remove it to start over from the kept weights", path) from err
    meta["extra"] = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta


def _refuse_non_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not v.isfinite().all()]
    if broken:  # a corrupted or diverged file would predict garbage without a word
        raise InputError(f"weights hold NaN or infinite values (first in {broken[0]})", path)


def write_config(run_dir: str | Path, config: dict) -> None:
    write_json(Path(run_dir) / CONFIG, {"format_version": FORMAT_VERSION, **config})


def read_config(run_dir: str | Path, kind: str | tuple[str, ...]) -> dict:
    """Read a run folder's config, checking that it is a segrefine run of the expected ``kind``
    (or of one of several kinds)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError("no such run folder", run_dir)
    path = run_dir / CONFIG
    if not path.is_file():
        raise InputError(f"not a segrefine run (no {CONFIG})", run_dir)
    if path.stat().st_size > MAX_CONFIG_BYTES:  # a config is a few KB; a shared one is input
        raise InputError(f"run config is over {MAX_CONFIG_BYTES // 1000} KB", path)
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"run config is not valid JSON ({err})", path) from err
    except RecursionError:
        raise InputError("run config is nested too deeply to be a run's", path) from None
    found = config.get("kind") if isinstance(config, dict) else None
    kinds = (kind,) if isinstance(kind, str) else kind
    if found not in kinds:
        what = f"is a {found} run" if found else "is not a segrefine run (no run kind)"
        raise InputError(f"{what}, expected a {' or '.join(kinds)} run", run_dir)
    version = config.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InputError(f"run config's format_version must be a whole number, got "
                         f"{json.dumps(version)[:40]}", path)  # fmt: skip
    if version > FORMAT_VERSION:
        raise InputError("run was written by a newer segrefine; upgrade to read it", path)
    return config


def append_log(run_dir: str | Path, record: dict) -> None:
    """Append one JSON line to the run's log (a line is written whole or not at all). A
    failed write (a full disk) names the log: the error alone names no file."""
    path = Path(run_dir) / LOG
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as err:
        raise OSError(err.errno, f"cannot write ({err.strerror or err})", str(path)) from err
