"""git-annex's ``directory`` special remote: content in a plain directory tree.

Layout (verified with git-annex 10.20261026, ``encryption=none``, no chunking)::

    DIR/<hashdirlower>/<keyfile>/<keyfile>      content (file 0444, key dir 0555)
    DIR/tmp/<keyfile>/<keyfile>                 while being stored

A store writes ``tmp/<keyfile>/<keyfile>``, fsyncs it, then renames the whole
``tmp/<keyfile>`` directory to ``<hashdirlower><keyfile>`` (replacing any leftover)
and freezes it, as git-annex's ``finalizeStoreGeneric`` does, so a reader never sees
a partial object. Readers also look under the mixed hash directories, which old
git-annex versions wrote. The remote cannot lock content: it only gives
RecentlyVerifiedCopy proofs (``check_present``). A missing directory means the
drive is not mounted: the remote is unavailable rather than empty.

The directory's path is per-clone git config (``remote.NAME.annex-directory``);
remote.log holds only ``type=directory encryption=none name=NAME`` (plus
``chunk=...`` if it was made chunked, which this implementation refuses).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from annexsync.annex.keys import Key
from annexsync.remotes.base import (
    KeyNotPresent,
    Meter,
    RemoteError,
    RemoteInfo,
    RemoteUnavailable,
)
from annexsync.remotes.localfs import (
    LocalContent,
    open_dir_beneath,
    open_regular_beneath,
    remove_tree_at,
)
from annexsync.transfers.localcopy import copy_verify


class DirectoryRemote(LocalContent):
    """A directory special remote (see the module docstring)."""

    def __init__(self, info: RemoteInfo, directory: Path) -> None:
        self.info = info
        self.directory = directory
        chunk = info.config.get("chunk") or info.config.get("chunksize")
        if chunk:
            raise RemoteError(f"{info.name}: chunked directory remotes are not supported yet")
        if info.config.get("encryption", "none") != "none":
            raise RemoteError(f"{info.name}: encrypted directory remotes are not supported")

    def _root(self) -> str:
        if not self.directory.is_dir():
            raise RemoteUnavailable(f"directory {self.directory} is not accessible")
        return os.path.realpath(self.directory)

    def available(self) -> bool:
        return self.directory.is_dir()

    def _paths(self, key: Key) -> list[str]:
        root = self._root()
        kf = key.key_file
        return [os.path.join(root, key.hashdir_lower, kf, kf),
                os.path.join(root, key.hashdir_mixed, kf, kf)]

    def open_content(self, key: Key) -> int:
        """A read-only fd on the key's content (checked to be inside the directory)."""
        root = self._root()
        for p in self._paths(key):
            try:
                return open_regular_beneath(root, p)
            except FileNotFoundError:
                continue
        if not os.path.isdir(root):
            raise RemoteUnavailable(f"directory {self.directory} is not accessible")
        raise KeyNotPresent(f"{self.info.name} does not have {key}")

    def store(self, key: Key, src: Path, meter: Meter) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        root = self._root()
        kf = key.key_file
        tmp_fd = open_dir_beneath(root, ["tmp"], create=True)
        try:
            remove_tree_at(tmp_fd, kf)
            os.mkdir(kf, 0o755, dir_fd=tmp_fd)
            kd = os.open(kf, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=tmp_fd)
            try:
                dst = os.open(kf, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644,
                              dir_fd=kd)
                try:
                    srcfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
                    try:
                        total = copy_verify(srcfd, dst, start=0, size=None, hasher=None,
                                            meter=meter)
                    finally:
                        os.close(srcfd)
                    if key.size is not None and total != key.size:
                        raise RemoteError(f"{src} changed size while it was sent")
                    os.fsync(dst)
                    os.fchmod(dst, 0o444)
                finally:
                    os.close(dst)
            finally:
                os.close(kd)
            h1, h2 = key.hashdir_lower.strip("/").split("/")
            parent = open_dir_beneath(root, [h1, h2], create=True)
            try:
                remove_tree_at(parent, kf)
                os.rename(kf, kf, src_dir_fd=tmp_fd, dst_dir_fd=parent)
                os.chmod(kf, 0o555, dir_fd=parent)
                os.fsync(parent)
            finally:
                os.close(parent)
        except BaseException:
            try:
                remove_tree_at(tmp_fd, kf)
            except OSError:
                pass
            raise
        finally:
            os.close(tmp_fd)

    def remove(self, key: Key) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        root = self._root()
        kf = key.key_file
        for hashdir in (key.hashdir_lower, key.hashdir_mixed):
            h1, h2 = hashdir.strip("/").split("/")
            try:
                parent = open_dir_beneath(root, [h1, h2], create=False)
            except FileNotFoundError:
                continue
            try:
                remove_tree_at(parent, kf)
            finally:
                os.close(parent)

    @contextmanager
    def lock_content(self, key: Key) -> Iterator[bool]:
        yield False

    def close(self) -> None:
        return None
