"""``export``: a run folder as it should be shared -- its config, weights, log and example
images, without the training state and caches, and nothing from outside the run.

A run folder is shared and received like any download, so it is copied as input: a file
that is a link out of the run (``log.jsonl -> /etc/passwd``) or not a regular file stops the
export, before anything is written, with a line naming it. Weights written before segrefine
kept checksums are given one in the copy (the way to add one to an old run).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .. import checkpoint
from ..data.io import atomic_path
from ..errors import InputError
from ..runs import EXAMPLES, list_examples

SHARED_FILES = (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.LOG)


def own_file(run_dir: Path, name: str) -> Path | None:
    """The file ``run_dir / name`` resolved, when it is a regular file inside the run; None
    when it does not exist; an :class:`InputError` naming it when it leads elsewhere or is
    something else (a folder, a device, a pipe)."""
    path = run_dir / name
    if not os.path.lexists(path):
        return None
    real = path.resolve()
    if not real.is_relative_to(run_dir.resolve()):
        raise InputError("leads outside the run (a link); export copies only the run's own "
                         "files", path)  # fmt: skip
    if not stat.S_ISREG(real.stat().st_mode):
        raise InputError("is not a regular file; export copies only the run's own files", path)
    return real


def export_run(run_dir: str | Path, out: str | Path) -> list[Path]:
    """Copy what a run needs to be used elsewhere -- ``config.json``, ``model.safetensors``,
    ``log.jsonl`` and its example images -- into ``out``, leaving the training state and
    caches behind (a refiner's out-of-fold cache is hundreds of MB). The run is read and
    every file checked first, so a broken run or one holding links out of itself writes
    nothing; ``out`` must not hold a run already."""
    run_dir, out = Path(run_dir), Path(out)
    checkpoint.read_config(run_dir, kind=("segmenter", "refiner"))
    names = [*SHARED_FILES, *(f"{EXAMPLES}/{n}" for n in list_examples(run_dir))]
    sources = {name: own_file(run_dir, name) for name in names}
    if sources[checkpoint.WEIGHTS] is None:
        raise InputError(f"no {checkpoint.WEIGHTS} (training not finished?)", run_dir)
    # readable, or a one-line error; a file without a checksum gets one in the copy
    tensors, meta, checked = checkpoint.read_tensors(sources[checkpoint.WEIGHTS])
    if (out / checkpoint.CONFIG).exists():
        raise InputError("already holds a run", out)
    if out.exists() and not out.is_dir():
        raise InputError("output folder is a file", out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in sources.items():
        if source is None:
            continue
        (out / name).parent.mkdir(exist_ok=True)
        if name == checkpoint.WEIGHTS and not checked:
            checkpoint.save_tensors(out / name, tensors, meta)
        else:
            with atomic_path(out / name) as tmp:
                shutil.copyfile(source, tmp)
        written.append(out / name)
    return written
