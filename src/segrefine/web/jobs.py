"""Background jobs for the web app: one worker, so two browser tabs never fight for the cores.

A request submits a function and gets a job id back at once; the page polls the job's state
(``queued`` -> ``running`` with a stage and a fraction -> ``done`` or ``error``). An
:class:`~segrefine.errors.InputError` becomes the job's one-line message; any other exception
is reported as an internal error with its type, and the worker carries on with the next job.
Job ids are random (a job's files are reachable only by whoever started it). At most
``max_pending`` jobs wait or run at a time: one more is refused with :class:`QueueFull` (the
server answers 429), and a queued or running job is never dropped. Of the finished jobs only
the newest ``keep`` stay in memory, and older results are dropped while all kept results
together exceed ``max_bytes`` (a 20 MP image's probability maps alone are tens to hundreds
of MB).
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["Job", "JobQueue", "QueueFull"]

log = logging.getLogger("segrefine.web")


@dataclass
class Job:
    id: str
    kind: str
    name: str = "image"  # the input's file name, for download names
    state: str = "queued"
    stage: str = "waiting for the worker"
    fraction: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    nbytes: int = 0  # size of the result's files

    def status(self) -> dict:
        now = self.finished or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "stage": self.stage,
            "fraction": round(self.fraction, 3),
            "error": self.error,
            "elapsed_s": round(now - (self.started or self.created), 3),
        }


def _release_freed_memory() -> None:
    """Hand the heap's free pages back to the system after a job. glibc keeps what a job
    freed in its arenas, fragmented by the next job's differently sized maps: without this a
    server that ran a few dozen large jobs holds over a GB it no longer uses (measured,
    docs/benchmarks.md). A no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class QueueFull(Exception):
    """The queue holds ``max_pending`` unfinished jobs already."""


class JobQueue:
    def __init__(self, keep: int = 32, max_bytes: int = 256_000_000, max_pending: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segrefine-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep
        self.max_bytes = max_bytes
        self.max_pending = max_pending

    def submit(self, kind: str, name: str, fn, *args, **kwargs) -> Job:
        """Queue ``fn(*args, progress=callback, **kwargs)``; its return value is the result.
        ``name`` is the input's file name (used to name downloads). Raises
        :class:`QueueFull` when ``max_pending`` jobs are queued or running."""
        job = Job(id=secrets.token_urlsafe(12), kind=kind, name=name)
        with self._lock:
            pending = sum(j.state in ("queued", "running") for j in self._jobs.values())
            if pending >= self.max_pending:
                raise QueueFull(f"the server is busy with {pending} jobs; try again shortly")
            self._jobs[job.id] = job
            finished = [i for i, j in self._jobs.items() if j.state in ("done", "error")]
            for job_id in finished[: max(0, len(self._jobs) - self.keep)]:
                del self._jobs[job_id]  # the oldest finished ones; never a pending job
        self._pool.submit(self._run, job, fn, args, kwargs)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job, fn, args, kwargs) -> None:
        job.state, job.started = "running", time.time()

        def progress(stage: str, fraction: float) -> None:
            job.stage, job.fraction = stage, fraction

        try:
            job.result = fn(*args, progress=progress, **kwargs)
            job.nbytes = getattr(job.result, "nbytes", 0)
            job.state, job.stage, job.fraction = "done", "done", 1.0
            self._evict(keep=job.id)
        except InputError as err:
            job.state, job.error = "error", str(err)
        except Exception as err:  # the server keeps serving; the page shows what happened
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            job.state, job.error = "error", f"internal error: {type(err).__name__}: {err}"
        finally:
            job.finished = time.time()
            _release_freed_memory()

    def _evict(self, keep: str) -> None:
        """Drop the oldest finished jobs while the kept results exceed ``max_bytes``."""
        with self._lock:
            total = sum(j.nbytes for j in self._jobs.values())
            for job_id in list(self._jobs):
                if total <= self.max_bytes:
                    break
                job = self._jobs[job_id]
                if job_id != keep and job.state in ("done", "error"):
                    total -= job.nbytes
                    del self._jobs[job_id]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
