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

A job ends early when its owner cancels it (:meth:`JobQueue.cancel`: a waiting job at once, a
running one at its next boundary) or when it runs past ``timeout`` seconds (an error saying
so). A running job is stopped at its next progress report or network evaluation: every
forward pass of a torch module in the worker thread checks first, so a refiner stops between
denoising steps and samples without the models knowing about jobs.
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import sys
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["FINISHED", "Job", "JobQueue", "QueueFull", "release_freed_memory"]

log = logging.getLogger("segrefine.web")

FINISHED = ("done", "error", "cancelled")
# seconds one job may run: ten times a 12 MP photo segmented and refined with the zoo's
# defaults on 2 cores (24-27 s, docs/benchmarks.md); more samples and steps on a large image
# would hold the single worker for many minutes
DEFAULT_TIMEOUT = 300.0


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
    cancelling: bool = False  # the owner asked; the worker stops at the next boundary
    call: tuple | None = field(default=None, repr=False)  # (fn, args, kwargs) until it runs

    def status(self) -> dict:
        now = self.finished or time.time()
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "stage": "cancelling" if self.cancelling and self.state == "running" else self.stage,
            "fraction": round(self.fraction, 3),
            "error": self.error,
            "elapsed_s": round(now - (self.started or self.created), 3),
        }


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system after a job or a refused large body.
    glibc keeps what a job freed in its arenas, fragmented by the next job's differently
    sized maps: without this a server that ran a few dozen large jobs holds over a GB it no
    longer uses (measured, docs/benchmarks.md). A no-op where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class QueueFull(Exception):
    """The queue holds ``max_pending`` unfinished jobs already."""


class _Stop(Exception):
    """Raised inside a running job to end it: its owner cancelled it, or it ran too long.
    Not an InputError, and nothing in the models catches a bare Exception, so it reaches
    :meth:`JobQueue._run` from any depth."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class JobQueue:
    def __init__(self, keep: int = 32, max_bytes: int = 256_000_000, max_pending: int = 8,
                 timeout: float | None = DEFAULT_TIMEOUT):  # fmt: skip
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segrefine-job")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep
        self.max_bytes = max_bytes
        self.max_pending = max_pending
        self.timeout = timeout  # seconds a job may run (None: no limit)

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
            finished = [i for i, j in self._jobs.items() if j.state in FINISHED]
            for job_id in finished[: max(0, len(self._jobs) - self.keep)]:
                del self._jobs[job_id]  # the oldest finished ones; never a pending job
            # held by the job, not the pool: a cancelled waiting job frees its upload at once
            job.call = (fn, args, kwargs)
        self._pool.submit(self._run, job)
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a job: a waiting one ends now (``cancelled``), a running one at its next
        progress report or network evaluation; a finished one is left as it is. None when
        there is no such job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state == "queued":
                job.state, job.stage, job.call = "cancelled", "cancelled", None
                job.finished = time.time()
            elif job is not None and job.state == "running":
                job.cancelling = True
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.state != "queued":  # cancelled while it waited
                return
            (fn, args, kwargs), job.call = job.call, None
            job.state, job.started = "running", time.time()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout

        def check() -> None:
            if job.cancelling:
                raise _Stop("cancelled")
            if deadline is not None and time.monotonic() > deadline:
                raise _Stop("timeout")

        def progress(stage: str, fraction: float) -> None:
            check()
            job.stage, job.fraction = stage, fraction

        hook = _check_before_each_forward(check)
        try:
            job.result = fn(*args, progress=progress, **kwargs)
            job.nbytes = getattr(job.result, "nbytes", 0)
            job.state, job.stage, job.fraction = "done", "done", 1.0
            self._evict(keep=job.id)
        except _Stop as stop:
            if stop.reason == "cancelled":
                job.state, job.stage = "cancelled", "cancelled"
            else:
                job.state, job.error = "error", (
                    f"took longer than {self.timeout:g} s, this server's limit for one job "
                    "(segrefine serve --job-timeout)")  # fmt: skip
        except InputError as err:
            job.state, job.error = "error", str(err)
        except Exception as err:  # the server keeps serving; the page shows what happened
            log.error("job %s failed:\n%s", job.id, traceback.format_exc())
            job.state, job.error = "error", f"internal error: {type(err).__name__}: {err}"
        finally:
            if hook is not None:
                hook.remove()
            del fn, args, kwargs  # the input's arrays go now, not when the next job comes
            job.finished = time.time()
            release_freed_memory()

    def _evict(self, keep: str) -> None:
        """Drop the oldest finished jobs while the kept results exceed ``max_bytes``."""
        with self._lock:
            total = sum(j.nbytes for j in self._jobs.values())
            for job_id in list(self._jobs):
                if total <= self.max_bytes:
                    break
                job = self._jobs[job_id]
                if job_id != keep and job.state in FINISHED:
                    total -= job.nbytes
                    del self._jobs[job_id]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _check_before_each_forward(check):
    """Run ``check`` before every torch module's forward pass in this thread (the worker's):
    the points where a long job can stop, between a refiner's steps and samples, a
    segmenter's tiles, a clustering network's iterations. The hook is global to torch, so it
    is installed for one job and removed after; other threads pass through. None when torch
    is not loaded (then no network runs either)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    me = threading.get_ident()

    def hook(module, args):
        if threading.get_ident() == me:
            check()

    return torch.nn.modules.module.register_module_forward_pre_hook(hook)
