"""fcntl record locks that conflict with git-annex's own.

git-annex locks with POSIX ``fcntl`` record locks (never ``flock``, which does not
conflict with them). We use Linux *open file description* (OFD) locks: they conflict
with git-annex's POSIX locks across processes, and unlike POSIX locks they are not
silently dropped when another descriptor of the same file is closed in this process,
and they exclude each other between threads of one process.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from pathlib import Path

# Not exported by Python's fcntl module on every version.
F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
F_OFD_SETLKW = getattr(fcntl, "F_OFD_SETLKW", 38)

_FLOCK = "hhqqi"  # struct flock on Linux x86_64/aarch64: type, whence, start, len, pid


class LockBusy(OSError):
    """The lock is held by another process."""


def _flock(kind: int) -> bytes:
    return struct.pack(_FLOCK + "4x", kind, os.SEEK_SET, 0, 0, 0)


class Lock:
    """A held lock on a file; release it with :meth:`release` or a ``with`` block."""

    def __init__(self, path: Path, fd: int, exclusive: bool) -> None:
        self.path = path
        self.fd = fd
        self.exclusive = exclusive

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the description drops an OFD lock
            self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_file(path: Path | str, *, exclusive: bool = True, blocking: bool = True,
              mode: int = 0o644, create: bool = True, timeout: float | None = None) -> Lock:
    """Take a whole-file lock on ``path``.

    Non-blocking attempts that find the lock held raise :class:`LockBusy`.
    With ``timeout``, a blocking attempt polls and raises :class:`LockBusy` when it expires.
    """
    path = Path(path)
    flags = os.O_RDWR | os.O_CLOEXEC
    if create:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, mode)
    except PermissionError:
        if exclusive:
            raise
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                cmd = F_OFD_SETLKW if blocking and deadline is None else F_OFD_SETLK
                fcntl.fcntl(fd, cmd, _flock(kind))
                return Lock(path, fd, exclusive)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not blocking or (deadline is not None and time.monotonic() >= deadline):
                    raise LockBusy(errno.EAGAIN, f"{path} is locked by another process") from e
                time.sleep(0.01)
    except BaseException:
        os.close(fd)
        raise


def lock_holder(path: Path | str, exclusive: bool = True) -> int | None:
    """Who holds a conflicting lock: a pid (POSIX lock), -1 (OFD lock), or None (nobody)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        kind = fcntl.F_WRLCK if exclusive else fcntl.F_RDLCK
        res = fcntl.fcntl(fd, F_OFD_GETLK, _flock(kind))
        ltype, _, _, _, pid = struct.unpack_from(_FLOCK, res)
        if ltype == fcntl.F_UNLCK:
            return None
        return pid if pid > 0 else -1
    finally:
        os.close(fd)
