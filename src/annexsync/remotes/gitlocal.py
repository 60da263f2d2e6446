"""A git remote whose URL is a local path: another clone, bare or not, maybe on a drive.

Theory of operation
-------------------
The remote repository is opened lazily and read-only: its git directory is found
(``PATH/.git``, a ``gitdir:`` file, or ``PATH`` itself when bare) and its
``annex.uuid`` read from its config. The remote is *available* only when that UUID
is the one we expect (a different repository mounted at the same path is not our
remote). Everything inside it is untrusted: content is opened with
``O_NOFOLLOW`` and its real path checked (:mod:`annexsync.remotes.localfs`), and
every directory we write into is walked without following symlinks.

* Retrieval hands the transfer layer a file descriptor (:meth:`open_content`) so
  it can copy with ``copy_file_range``/reflink and hash what it wrote.
* Storing copies into the remote's ``annex/tmp``, fsyncs, renames into its object
  store (hashdirmixed, or hashdirlower when bare) and freezes it, like git-annex.
* :meth:`lock_content` takes a *shared* fcntl lock on the remote's
  ``<object>.lck`` — the same lock git-annex takes to answer ``LOCKCONTENT`` — and
  yields True while the content is present and locked: a real LockedCopy proof.
  :meth:`remove` takes the *exclusive* lock first, so it cannot remove content
  someone else is counting on.
* The transfer layer also keeps transfer records in the remote (:meth:`peer_annex_dir`)
  and writes the remote's own location log through its journal
  (:meth:`location_recorder`), as git-annex does for local remotes.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from annexsync.annex.keys import Key
from annexsync.annex.locks import Lock, LockBusy, lock_file
from annexsync.annex.repo import AnnexRepo
from annexsync.git.config import GitConfig
from annexsync.git.runner import FOREIGN_CONFIG, Git
from annexsync.remotes.base import (
    KeyNotPresent,
    Meter,
    RemoteError,
    RemoteInfo,
    RemoteUnavailable,
)
from annexsync.remotes.localfs import (
    LocalContent,
    fd_path,
    is_beneath,
    open_dir_beneath,
    open_regular_beneath,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from annexsync.transfers.locationlog import LocationRecorder


def find_git_dir(path: Path) -> tuple[Path, Path | None] | None:
    """(git dir, work tree or None) of the repository at ``path``, if it is one."""
    dotgit = path / ".git"
    if dotgit.is_dir():
        return dotgit, path
    if dotgit.is_file():
        try:
            text = dotgit.read_text().strip()
        except OSError:
            return None
        if text.startswith("gitdir:"):
            gd = Path(text[len("gitdir:"):].strip())
            gd = gd if gd.is_absolute() else path / gd
            if gd.is_dir():
                return gd, path
        return None
    if (path / "HEAD").is_file() and (path / "objects").is_dir():
        return path, None
    return None


def read_remote_uuid(path: Path) -> str | None:
    """``annex.uuid`` of the repository at ``path`` (None if missing or not annexed)."""
    found = find_git_dir(path)
    if found is None:
        return None
    git_dir, work_tree = found
    return GitConfig.read(Git(git_dir, work_tree)).get("annex.uuid") or None


_RECHECK_SECONDS = 0.5
"""How long reading content trusts an opened repository to still be there (an
unplugged drive is noticed by the read that fails)."""

_UUID_CACHE: dict[str, tuple[tuple[int, int, int, int], str | None]] = {}


def unavailable_reason(path: Path, expected_uuid: str) -> str | None:
    """Why the repository expected at ``path`` cannot be used now, or None if it can.

    Cheap enough to ask before every fetch or push: a few ``stat`` calls, and the
    remote's ``annex.uuid`` is re-read only when its config file changed. A drive that
    is not mounted (``path`` missing), an empty mount point, or a different repository
    at that path (another ``annex.uuid``) all make the remote *unavailable*, never
    "empty": nothing is concluded about the content it holds.
    """
    if not path.is_dir():
        return f"{path} is not accessible (not mounted?)"
    found = find_git_dir(path)
    if found is None:
        return f"{path} is not a git repository (not mounted?)"
    if not expected_uuid:
        return None
    cfg = found[0] / "config"
    try:
        st = os.stat(cfg)
    except OSError:
        return f"{path} has no git config"
    sig = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    hit = _UUID_CACHE.get(str(cfg))
    if hit is not None and hit[0] == sig:
        uuid = hit[1]
    else:
        uuid = read_remote_uuid(path)
        _UUID_CACHE[str(cfg)] = (sig, uuid)
    if uuid != expected_uuid:
        return f"{path} is a different repository (uuid {uuid}, expected {expected_uuid})"
    return None


class GitLocalRemote(LocalContent):
    """A git-annex repository reachable as a local path (see the module docstring)."""

    def __init__(self, info: RemoteInfo, path: Path) -> None:
        self.info = info
        self.path = path
        self._opened: tuple[Path, Path | None, str] | None = None
        self._annex_real: str | None = None
        self._annex_path: Path | None = None
        self._checked_at = 0.0  # when the opened repository was last seen on disk

    # -- opening -------------------------------------------------------------------------
    def _open(self, *, recent_ok: bool = False) -> tuple[Path, Path | None, str]:
        if self._opened is not None:
            now = time.monotonic()
            if recent_ok and now - self._checked_at < _RECHECK_SECONDS:
                return self._opened  # a burst reads per key: look at the disk seldom
            if self._annex_real is not None and os.path.isdir(self._annex_real):
                self._checked_at = now
                return self._opened
            self._opened = None  # unplugged since: look again
        if not self.path.is_dir():
            raise RemoteUnavailable(f"{self.info.name}: {self.path} is not accessible "
                                    "(not mounted?)")
        found = find_git_dir(self.path)
        if found is None:
            raise RemoteUnavailable(f"{self.info.name}: {self.path} is not a git repository")
        git_dir, work_tree = found
        uuid = GitConfig.read(Git(git_dir, work_tree)).get("annex.uuid") or ""
        if not uuid:
            raise RemoteUnavailable(f"{self.info.name}: {self.path} is not a git-annex "
                                    "repository")
        if self.info.uuid and uuid != self.info.uuid:
            raise RemoteUnavailable(
                f"{self.info.name}: {self.path} is a different repository (uuid {uuid}, "
                f"expected {self.info.uuid})")
        annex = git_dir / "annex"
        annex.mkdir(exist_ok=True)
        self._annex_real = os.path.realpath(annex)
        self._annex_path = Path(self._annex_real)
        if not is_beneath(os.path.realpath(git_dir), self._annex_real):
            raise RemoteError(f"{self.info.name}: {annex} is a symlink out of the repository")
        self._opened = (git_dir, work_tree, uuid)
        self._checked_at = time.monotonic()
        return self._opened

    @property
    def bare(self) -> bool:
        return self._open()[1] is None

    @property
    def annex_dir(self) -> Path:
        return self._open()[0] / "annex"

    def available(self) -> bool:
        try:
            self._open()
            return True
        except (RemoteError, OSError):
            self._opened = None
            return False

    def _annex(self) -> str:
        self._open()
        assert self._annex_real is not None
        return self._annex_real

    def _object_paths(self, key: Key) -> list[str]:
        root = self._annex()
        first = key.object_path(bare=self.bare)
        return [os.path.join(root, first), os.path.join(root, key.object_path(not self.bare))]

    # -- reading -------------------------------------------------------------------------
    def open_content(self, key: Key) -> int:
        """A read-only fd on the key's content in the remote (checked to be inside it)."""
        # (A failed open below checks again whether the remote is still there.)
        opened = self._open(recent_ok=True)
        root = self._annex_real
        assert root is not None
        bare = opened[1] is None
        for b in (bare, not bare):
            try:
                return open_regular_beneath(root, f"{root}/{key.object_path(b)}")
            except FileNotFoundError:
                continue
        if not os.path.isdir(root):
            self._opened = None
            raise RemoteUnavailable(f"{self.info.name}: {self.path} is not accessible")
        raise KeyNotPresent(f"{self.info.name} does not have {key}")

    # -- writing ----------------------------------------------------------------------------
    def store(self, key: Key, src: Path, meter: Meter) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        if self.check_present(key):
            meter(key.size or 0)
            return
        root = self._annex()
        objpath = key.object_path(bare=self.bare).split("/")  # objects/h1/h2/kf/kf
        tmp_fd = open_dir_beneath(root, ["tmp"], create=True)
        tmp_name = f"{key.key_file}.annexsync-{os.getpid()}-{secrets.token_hex(4)}"
        dst = -1
        try:
            dst = os.open(tmp_name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444,
                          dir_fd=tmp_fd)
            # Imported here: sync imports this module for find_git_dir alone.
            from annexsync.transfers.localcopy import copy_verify

            srcfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            try:
                total = copy_verify(srcfd, dst, start=0, size=None, hasher=None, meter=meter)
            finally:
                os.close(srcfd)
            if key.size is not None and total != key.size:
                raise RemoteError(f"{src} changed size while it was sent")
            os.fsync(dst)
            os.close(dst)
            dst = -1
            self._move_in(root, objpath, tmp_fd, tmp_name, durable=True)
        except BaseException:
            if dst >= 0:
                os.close(dst)
            _unlink_at(tmp_name, tmp_fd)
            raise
        finally:
            os.close(tmp_fd)

    def _move_in(self, root: str, objpath: list[str], tmp_fd: int, tmp_name: str, *,
                 durable: bool) -> None:
        """Rename ``tmp/tmp_name`` to the object path, every directory opened beneath
        the root without following a symlink (``durable``: and fsync the key dir)."""
        key_fd = open_dir_beneath(root, objpath[:-1], create=True)
        try:
            st = os.fstat(key_fd)
            if not st.st_mode & 0o200:
                os.fchmod(key_fd, st.st_mode | 0o200)
            os.rename(tmp_name, objpath[-1], src_dir_fd=tmp_fd, dst_dir_fd=key_fd)
            os.fchmod(key_fd, 0o555)
            if durable:
                os.fsync(key_fd)
        finally:
            os.close(key_fd)

    # -- small uploads in batches (transfers.runner makes them durable) ----------------------
    def stage_object(self, key: Key, data: bytes) -> str:
        """Write ``data`` (the verified content of ``key``) to a new file in the remote's
        tmp directory, not synced; returns its name there, for :meth:`commit_object`
        once the caller has made the remote's filesystem durable."""
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        tmp_fd = open_dir_beneath(self._annex(), ["tmp"], create=True)
        name = f"{key.key_file}.annexsync-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444,
                         dir_fd=tmp_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        except BaseException:
            _unlink_at(name, tmp_fd)
            raise
        finally:
            os.close(tmp_fd)
        return name

    def commit_object(self, key: Key, name: str) -> None:
        """Move a file :meth:`stage_object` wrote (durable by now) into the store;
        if the content arrived there meanwhile (another process), it is left alone
        and ours removed."""
        root = self._annex()
        tmp_fd = open_dir_beneath(root, ["tmp"], create=False)
        try:
            if self.check_present(key):
                _unlink_at(name, tmp_fd)
                return
            self._move_in(root, key.object_path(bare=self.bare).split("/"), tmp_fd, name,
                          durable=False)
        finally:
            os.close(tmp_fd)

    def discard_staged(self, name: str) -> None:
        """Remove a file :meth:`stage_object` wrote (best effort)."""
        try:
            tmp_fd = open_dir_beneath(self._annex(), ["tmp"], create=False)
        except (RemoteError, OSError):
            return
        try:
            _unlink_at(name, tmp_fd)
        finally:
            os.close(tmp_fd)

    def _lock_path(self, key: Key) -> tuple[str, str] | None:
        """(object path, lock path) of present content, verified to be inside the remote."""
        root = self._annex()
        for p in self._object_paths(key):
            try:
                fd = open_regular_beneath(root, p)
            except FileNotFoundError:
                continue
            real = fd_path(fd)
            os.close(fd)
            return real, real + ".lck"
        return None

    def _take(self, lck: str, exclusive: bool) -> Lock:
        keydir = os.path.dirname(lck)
        st = os.stat(keydir)
        writable = bool(st.st_mode & 0o200)
        if not writable:
            os.chmod(keydir, st.st_mode | 0o200)
        try:
            return lock_file(lck, exclusive=exclusive, blocking=False)
        finally:
            if not writable:
                try:
                    os.chmod(keydir, st.st_mode)
                except OSError:
                    pass

    def remove(self, key: Key) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        found = self._lock_path(key)
        if found is None:
            return
        obj, lck = found
        try:
            lock = self._take(lck, exclusive=True)
        except LockBusy:
            raise RemoteError(f"{self.info.name}: content is locked (in use by another "
                              "process); not removed") from None
        try:
            keydir = os.path.dirname(obj)
            os.chmod(keydir, 0o755)
            os.unlink(obj)
            try:
                os.unlink(lck)
            except FileNotFoundError:
                pass
            d = keydir
            for _ in range(3):
                try:
                    os.rmdir(d)
                except OSError:
                    break
                d = os.path.dirname(d)
        finally:
            lock.release()

    @contextmanager
    def lock_content(self, key: Key) -> Iterator[bool]:
        found = self._lock_path(key)
        if found is None:
            yield False
            return
        obj, lck = found
        try:
            lock = self._take(lck, exclusive=False)
        except (LockBusy, PermissionError):
            yield False  # being removed right now (or we may not lock): no proof
            return
        try:
            if not os.path.isfile(obj):
                yield False
                return
            yield True
        finally:
            lock.release()

    # -- bookkeeping in the remote -----------------------------------------------------------
    def peer_annex_dir(self) -> Path:
        self._open(recent_ok=True)  # asked per key of a burst, as open_content is
        assert self._annex_path is not None
        return self._annex_path

    def location_recorder(self) -> LocationRecorder:
        from annexsync.transfers.locationlog import LocationRecorder

        git_dir, work_tree, _ = self._open()
        # Its branch is committed by us: none of the clone's own commands may run.
        return LocationRecorder(AnnexRepo(Git(git_dir, work_tree, config=FOREIGN_CONFIG)),
                                mode="journal")

    def close(self) -> None:
        return None


def _unlink_at(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
