"""Filesystem helpers that never leave a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path | str) -> None:
    """fsync a directory so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path | str, data: bytes, *, fsync: bool = True,
                 tmp_dir: Path | str | None = None, mode: int | None = None) -> None:
    """Write ``data`` to ``path`` atomically: temp file, (fsync), rename.

    ``tmp_dir`` must be on the same filesystem as ``path``; by default the temp file is
    created beside ``path``.
    """
    path = Path(path)
    directory = Path(tmp_dir) if tmp_dir is not None else path.parent
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def make_writable_dir(path: Path) -> None:
    """Add owner write permission to a directory (git-annex makes key dirs read-only)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if not st.st_mode & 0o200:
        os.chmod(path, st.st_mode | 0o200)
