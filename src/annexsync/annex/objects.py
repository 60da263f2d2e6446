"""The object store: ``.git/annex/objects`` holding one file per key.

Theory of operation
-------------------
A key's content lives at ``objects/<hashdir>/<keyfile>/<keyfile>`` under the annex
directory. Non-bare repositories use the *mixed* hash directories, bare ones the
*lower* ones; readers check both, as git-annex does.

Content only ever enters the store by ``rename`` from a file on the same filesystem
whose bytes have been verified against the key (a work-tree file that was hashed in
place, or a download in ``.git/annex/tmp``): a reader never sees a partial object.
Objects are made read-only (file 0444, key directory 0555) like git-annex does.

Locks: ``<object>.lck`` inside the key directory. A *shared* lock means "keep this
content" (held while another repository counts on our copy during its drop); an
*exclusive* lock is held while content is removed. Both conflict with git-annex's.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from annexsync.annex.keys import Key
from annexsync.annex.locks import Lock, lock_file
from annexsync.errors import AnnexError
from annexsync.util.fs import fsync_dir, make_writable_dir


class ObjectStore:
    """Content of keys in one repository's annex directory."""

    def __init__(self, annex_dir: Path, bare: bool = False) -> None:
        self.annex_dir = annex_dir
        self.bare = bare
        self.objects_dir = annex_dir / "objects"
        self.tmp_dir = annex_dir / "tmp"
        self._annex = str(annex_dir)

    # -- paths -----------------------------------------------------------------
    def path_for(self, key: Key) -> Path:
        """Where new content for ``key`` goes."""
        return self.annex_dir / key.object_path(bare=self.bare)

    def candidate_paths(self, key: Key) -> list[Path]:
        """Every place content for ``key`` may already be (preferred first)."""
        first = self.annex_dir / key.object_path(bare=self.bare)
        other = self.annex_dir / key.object_path(bare=not self.bare)
        return [first, other]

    def _find(self, key: Key) -> str | None:
        # Plain strings: this runs once or twice per key of a get of many files.
        for bare in (self.bare, not self.bare):
            p = f"{self._annex}/{key.object_path(bare)}"
            try:
                st = os.stat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                return p
        return None

    def find(self, key: Key) -> Path | None:
        """Path of ``key``'s content if it is present here."""
        p = self._find(key)
        return Path(p) if p is not None else None

    def has(self, key: Key) -> bool:
        return self._find(key) is not None

    def tmp_path(self, key: Key) -> Path:
        """Where a partial download of ``key`` lives (resumable)."""
        return self.tmp_dir / key.key_file

    # -- adding content ------------------------------------------------------------
    def _prepare_dir(self, dest: Path) -> None:
        keydir = dest.parent
        try:
            os.mkdir(keydir)
        except FileExistsError:
            make_writable_dir(keydir)
        except FileNotFoundError:
            os.makedirs(keydir, exist_ok=True)

    def move_in(self, key: Key, src: Path, *, durable: bool = False) -> Path:
        """Move verified content at ``src`` into the store (atomic rename).

        If the content is already present the store is left alone and ``src`` is
        removed. ``durable`` fsyncs the file and directory (downloads); content that
        was hashed in place from the work tree is already on disk.
        """
        existing = self.find(key)
        if existing is not None:
            os.unlink(src)
            return existing
        dest = self.path_for(key)
        self._prepare_dir(dest)
        if durable:
            fd = os.open(src, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        try:
            os.rename(src, dest)
        except OSError as e:
            if e.errno == errno.EXDEV:
                raise AnnexError(f"{src} is on another filesystem than the annex") from e
            raise
        self._freeze(dest)
        if durable:
            fsync_dir(dest.parent)
        return dest

    @staticmethod
    def _freeze(dest: Path) -> None:
        os.chmod(dest, 0o444)
        os.chmod(dest.parent, 0o555)

    # -- locks -------------------------------------------------------------------
    def lock_path(self, key: Key) -> Path:
        p = self.find(key) or self.path_for(key)
        return p.with_name(p.name + ".lck")

    def lock_shared(self, key: Key, *, blocking: bool = False) -> Lock:
        """Keep ``key``'s content present while the lock is held."""
        lp = self.lock_path(key)
        make_writable_dir(lp.parent)
        try:
            return lock_file(lp, exclusive=False, blocking=blocking)
        finally:
            _restore_readonly(lp.parent)

    def lock_exclusive(self, key: Key, *, blocking: bool = False) -> Lock:
        """Lock ``key``'s content for removal (nobody may be counting on it)."""
        lp = self.lock_path(key)
        make_writable_dir(lp.parent)
        try:
            return lock_file(lp, exclusive=True, blocking=blocking)
        finally:
            _restore_readonly(lp.parent)

    # -- removing content ------------------------------------------------------------
    def remove(self, key: Key, lock: Lock) -> bool:
        """Remove ``key``'s content; the caller holds ``lock_exclusive(key)``.

        Returns False if it was not present. Empty directories are cleaned up.
        """
        if not lock.exclusive:
            raise AnnexError("internal error: removing content needs the exclusive lock")
        path = self.find(key)
        if path is None:
            return False
        keydir = path.parent
        make_writable_dir(keydir)
        os.unlink(path)
        try:
            os.unlink(lock.path)
        except FileNotFoundError:
            pass
        remove_empty_key_dirs(keydir)
        return True

    def iter_keys(self) -> list[Key]:
        """Every key with content present (walks the store)."""
        keys: list[Key] = []
        if not self.objects_dir.is_dir():
            return keys
        for dirpath, _dirnames, filenames in os.walk(self.objects_dir):
            base = os.path.basename(dirpath)
            for f in filenames:
                if f == base:
                    try:
                        keys.append(Key.from_key_file(f))
                    except ValueError:
                        continue
        return keys


def remove_empty_key_dirs(keydir: Path) -> None:
    """Remove a key's directory and its two hash directories, as far as they are empty."""
    for d in (keydir, keydir.parent, keydir.parent.parent):
        try:
            os.rmdir(d)
        except OSError:
            break


def _restore_readonly(keydir: Path) -> None:
    try:
        st = keydir.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o200:
        os.chmod(keydir, st.st_mode & ~0o222)
