"""One trainer per run folder: a lock file that a second ``--resume`` (or a fresh run on the
same ``--out``) finds held, so two processes never interleave one run's log and weights.

The lock is ``train.lock`` in the run folder, holding the owner's pid and host for the
message the second process prints. It is held with ``flock``, not by the file's mere
existence: the kernel drops it when its process ends, however it ends, so a lock left by a
run killed with ``kill -9`` (or a reboot, or a reused pid) is taken over with nothing to
clean up, and two processes can never both judge the same leftover file stale and both run.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ..errors import InputError

LOCK = "train.lock"


class RunLock:
    """The exclusive lock on training the run in ``folder`` (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise an :class:`InputError` naming the run and its holder."""
        import fcntl  # POSIX only, like the trainers' other assumptions (fork, /dev/shm)

        if self._fd is not None:
            return
        for _ in range(10):  # a racing release may unlink the file between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise InputError(f"is being trained by {holder}; wait for it to finish (two "
                                 "trainers would interleave its log and weights)",
                                 self.path.parent) from None  # fmt: skip
            except BaseException:
                os.close(fd)
                raise
            # the file we locked must still be the one at the path: a releasing owner
            # unlinks it, and a lock on the unlinked file would exclude nobody
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                owner = {"pid": os.getpid(), "host": socket.gethostname()}
                os.write(fd, (json.dumps(owner) + "\n").encode())
                self._fd = fd
                return
            os.close(fd)
        raise InputError("could not take the training lock (it kept changing hands)",
                         self.path)  # fmt: skip

    def release(self) -> None:
        """Give the lock up (and remove the file: a finished run carries no lock)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # before the lock goes: see acquire
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _holder(fd: int) -> str:
    """Who holds the lock, as its file says (a lock being written may say nothing yet)."""
    try:
        owner = json.loads(os.pread(fd, 200, 0).decode())
        return f"process {int(owner['pid'])} on {str(owner['host'])[:64]}"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process"
