"""One lock per run folder, so two ``genbench run`` processes on the same results
folder never train, checkpoint or write the same run at once.

A plain OS lock on ``<run>/.lock`` (``flock`` on POSIX, ``msvcrt.locking`` on
Windows): the kernel drops it when the holder dies, even by SIGKILL, so a killed
run never leaves a stale lock in the way of ``--resume``. The lock file itself
is left in place; only the lock on it matters. (Not the ``filelock`` package:
its recent releases add unlink-and-retry and soft-lock fallbacks that make a
single non-blocking attempt harder to reason about.)
"""

from __future__ import annotations

import os
from pathlib import Path

LOCK_NAME = ".lock"

try:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

except ImportError:  # Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True


class RunLock:
    """A held run-folder lock; ``release()`` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def try_lock_run(run_dir: Path) -> RunLock | None:
    """The run folder's lock, held; or None when another process (or another
    ``try_lock_run`` in this one) holds it.

    Does not wait: a second process skips a locked run rather than queueing
    behind a training job that may take hours.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if not _try_lock(fd):
        os.close(fd)
        return None
    return RunLock(fd, path)
