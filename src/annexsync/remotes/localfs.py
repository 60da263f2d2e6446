"""Safe access to files of another repository or directory on this machine.

A remote's directory tree is untrusted: a planted symlink must never make us read
or write outside it. Files are opened with ``O_NOFOLLOW`` and their real location
checked through ``/proc/self/fd`` (one ``readlink``); directories we create or
write into are walked component by component with ``O_NOFOLLOW`` directory file
descriptors, and renames use those descriptors.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence

from annexsync.annex.keys import Key
from annexsync.remotes.base import KeyNotPresent, Meter, RemoteError, Sink

READ_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def fd_path(fd: int) -> str:
    """The real path of an open file descriptor."""
    return os.readlink(f"/proc/self/fd/{fd}")


def is_beneath(root_real: str, path_real: str) -> bool:
    return path_real.startswith(root_real.rstrip("/") + "/")


def open_regular_beneath(root_real: str, path: str) -> int:
    """Open ``path`` read-only if it is a regular file really located under ``root_real``.

    Raises FileNotFoundError when it does not exist (or is not a regular file) and
    :class:`RemoteError` when it resolves outside the root.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file", path)
        if not is_beneath(root_real, fd_path(fd)):
            raise RemoteError(f"{path} resolves outside {root_real}; refusing to read it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir_beneath(root_real: str, parts: Sequence[str], *, create: bool,
                     mode: int = 0o755) -> int:
    """A directory fd for ``root_real/parts...``, never following a symlink.

    With ``create`` missing components are made. The caller closes the fd.
    """
    fd = os.open(root_real, _DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise RemoteError(f"unsafe path component {part!r}")
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:
                    pass
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise RemoteError(f"{part} in {fd_path(fd)} is not a directory "
                                      "(a symlink?); refusing to use it") from None
                raise
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_writable(dir_fd: int, name: str | None = None) -> None:
    """Add owner write permission to a directory (by fd, or ``name`` inside it)."""
    if name is None:
        st = os.fstat(dir_fd)
        if not st.st_mode & 0o200:
            os.fchmod(dir_fd, stat.S_IMODE(st.st_mode) | 0o200)
        return
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode) and not st.st_mode & 0o200:
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o200, dir_fd=dir_fd)


def remove_tree_at(dir_fd: int, name: str) -> None:
    """Remove ``name`` (a file or a directory tree) inside ``dir_fd``, not following links."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    if not st.st_mode & 0o200:
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o700, dir_fd=dir_fd)
    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    try:
        for entry in os.listdir(sub):
            remove_tree_at(sub, entry)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=dir_fd)


class LocalContent:
    """check_present and retrieve for remotes whose content is a local file.

    The subclass provides ``open_content(key) -> fd`` (opened without following a
    symlink out of the remote; KeyNotPresent when absent).
    """

    def open_content(self, key: Key) -> int:
        raise NotImplementedError

    def check_present(self, key: Key) -> bool:
        try:
            fd = self.open_content(key)
        except KeyNotPresent:
            return False
        os.close(fd)
        return True

    def retrieve(self, key: Key, sink: Sink, offset: int, meter: Meter) -> None:
        fd = self.open_content(key)
        try:
            buf = bytearray(READ_CHUNK)
            view = memoryview(buf)
            pos = offset
            while n := os.preadv(fd, [view], pos):
                sink.write(view[:n])
                pos += n
                meter(n)
        finally:
            os.close(fd)
