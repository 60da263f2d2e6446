"""The daemon's log file, rotated the way git-annex rotates its own.

Theory of operation
-------------------
The assistant writes a line per event, a burst a line per file, for as long as it
runs: months, for a daemon started at login. So ``daemon.log`` is rotated once it
passes :data:`MAX_BYTES` (checked as lines are written, and when the daemon starts):
``daemon.log.8`` becomes ``daemon.log.9`` (the oldest is dropped), …,
``daemon.log`` becomes ``daemon.log.1``, and a new ``daemon.log`` is started —
git-annex's names, so either tool's log viewer finds both. At most ~10 MB in all.

A daemon started in the background has its stdout and stderr on the log too (so a
crash's traceback lands there); after a rotation they are moved onto the new file,
as git-annex's ``redirLog`` does. Writes and rotation are serialised by one lock:
services emit events from many threads.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

MAX_BYTES = 1_000_000
KEEP = 9  # daemon.log.1 … daemon.log.9


def rotate(path: Path, keep: int = KEEP) -> None:
    """Shift ``path.N`` to ``path.N+1`` (dropping ``path.keep``), then ``path`` to ``path.1``."""
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


class RotatingLog:
    """Appends lines to ``path``, rotating it past ``max_bytes``."""

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        try:
            if path.stat().st_size >= max_bytes:
                self._rotate_std(rotate_first=True)
        except FileNotFoundError:
            pass
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._size = self._file.tell()

    def write(self, line: str, *, flush: bool = True) -> None:
        """Append ``line`` (with its newline); rotate first if the file is full."""
        with self._lock:
            if self._file.closed:
                return
            if self._size >= self.max_bytes:
                self._file.flush()
                self._file.close()
                self._rotate_std(rotate_first=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
                self._size = 0
            self._file.write(line)
            self._size += len(line)
            if flush:
                self._file.flush()

    def flush(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def _rotate_std(self, *, rotate_first: bool) -> None:
        """Rotate; stdout/stderr that wrote to the old file follow to the new one."""
        old = _identity(self.path)
        following = [fd for fd in (1, 2) if old is not None and _identity(fd) == old]
        if rotate_first:
            rotate(self.path, self.keep)
        if following:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
            try:
                for std in following:
                    os.dup2(fd, std)  # (dup2 clears close-on-exec on the copy)
            finally:
                os.close(fd)


def _identity(what: Path | int) -> tuple[int, int] | None:
    """(device, inode) of a path or an open fd; None if there is none."""
    try:
        st = os.stat(what)
    except OSError:
        return None
    return st.st_dev, st.st_ino
