"""Unlocked files: filling them with content, emptying them, ingesting them, lock/unlock.

Theory of operation
-------------------
An unlocked file is a pointer blob (``/annex/objects/KEY\\n``) in git and, in the work
tree, either that same pointer text (content absent) or the content itself: a copy
of the object, or with ``annex.thin`` a hard link to it.

*Populating* (content arrived) replaces a work-tree pointer file with the content;
*depopulating* (content dropped) puts the pointer back. Both write a temp file in
``.git/annex/othertmp`` (shared-locked ``othertmp.lck``, so git-annex's cleanup leaves
it alone), check that the work-tree file is still exactly what they examined (same
inode, size, mtime, ctime) and ``rename`` over it, so a file the user changes at the
same moment is never clobbered. Depopulating requires the file to be unmodified: its
inode cache is a recorded cache of the key, or its bytes hash to the key. Otherwise
it is left alone (it no longer holds the dropped content).

Every change is recorded like git-annex records it: the new inode cache in the keys
database, the association file -> key, and a restage log entry; the index is
refreshed once, when the :class:`UnlockedContent` batch closes (see
:mod:`annexsync.annex.restage`).

*Ingesting* a work-tree file into the store without moving it (``add --unlocked``,
``lock`` of a file whose object is missing) copies it while hashing the copy: a
reflink (FICLONE) when the filesystem can, then the hash is computed from the
clone; otherwise one read feeds both the hash and the copy. Either way the stored
bytes are the hashed bytes, so content never lands under a wrong key. With
``annex.thin`` the file is hashed in place and hard-linked instead; a file that
changed while it was read is refused.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annexsync.annex.backends import (
    Backend,
    Hasher,
    get_backend,
    hash_fd,
    hasher_for_key,
    verify_file,
)
from annexsync.annex.keys import Key, pointer_content, sanitize_key_name, symlink_target
from annexsync.annex.keysdb import InodeCache, KeysDb, StagedChange
from annexsync.annex.locks import Lock, lock_file
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.restage import RestageResult, log_restage, restage
from annexsync.annex.worktree import AnnexedFile, annexed_files, read_pointer_file
from annexsync.errors import AnnexError
from annexsync.git.index import MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, IndexEntry
from annexsync.git.index import update_index as git_update_index
from annexsync.git.objects import BlobWriter
from annexsync.git.runner import GitError

FICLONE = 0x40049409  # linux/fs.h; not exported by Python's fcntl
#: A file changed this recently may still be changing within one timestamp tick:
#: its inode cache is not recorded (the same guard git uses for "racily clean").
SETTLE_NS = 50_000_000
_BUF = 1 << 20


class ChangedWhileIngesting(AnnexError):
    """The work-tree file changed while it was being read; nothing was stored."""


def same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    """Same inode, size, mtime and ctime: the file was not touched in between."""
    return (a.st_ino == b.st_ino and a.st_dev == b.st_dev and a.st_size == b.st_size
            and a.st_mtime_ns == b.st_mtime_ns and a.st_ctime_ns == b.st_ctime_ns)


def settled(st: os.stat_result, since_ns: int) -> bool:
    """True if the file's last change is safely older than ``since_ns``."""
    return max(st.st_ctime_ns, st.st_mtime_ns) < since_ns - SETTLE_NS


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ scratch files


class OtherTmp:
    """Scratch files in ``.git/annex/othertmp`` (same filesystem as the work tree).

    Holds a shared lock on ``othertmp.lck`` while open: git-annex only cleans the
    directory when it can lock it exclusively.
    """

    def __init__(self, repo: AnnexRepo) -> None:
        self.dir = repo.annex_path("othertmp")
        self._lock_path = repo.annex_path("othertmp.lck")
        self._lock: Lock | None = None
        self._tag = f"{os.getpid()}.{os.urandom(3).hex()}"
        self._counter = 0

    def open(self) -> OtherTmp:
        if self._lock is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = lock_file(self._lock_path, exclusive=False, blocking=True,
                                   timeout=60)
        return self

    def mkstemp(self, prefix: str = "annexsync.") -> tuple[int, Path]:
        """A new empty file (mode 0600) and its path."""
        self.open()
        while True:
            self._counter += 1
            p = self.dir / f"{prefix}{self._tag}.{self._counter}"
            try:
                return os.open(p, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), p
            except FileExistsError:
                continue

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> OtherTmp:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlink_quiet(p: Path | str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def _reflink(src_fd: int, dst_fd: int) -> bool:
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
        return True
    except OSError:
        return False


def copy_fd(src_fd: int, dst_fd: int) -> None:
    """Copy a whole file: reflink if possible, else in-kernel copy, else read/write."""
    if _reflink(src_fd, dst_fd):
        return
    os.lseek(src_fd, 0, os.SEEK_SET)
    try:
        while os.copy_file_range(src_fd, dst_fd, 1 << 30):
            pass
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    os.lseek(src_fd, 0, os.SEEK_SET)
    os.lseek(dst_fd, 0, os.SEEK_SET)
    os.ftruncate(dst_fd, 0)
    while data := os.read(src_fd, _BUF):
        os.write(dst_fd, data)


# ------------------------------------------------------------------ ingesting


@dataclass
class Ingested:
    """A work-tree file whose content is now (also) in the object store."""

    key: Key
    object_path: Path
    work_cache: InodeCache | None  # None when the file is too fresh to trust its cache
    object_cache: InodeCache | None
    executable: bool


def key_for(backend: Backend, hexdigest: str | None, size: int, relpath: str,
            mtime_ns: int) -> Key:
    """The key of content for a work-tree file (WORM keys need no digest)."""
    if not backend.is_hash:
        return Key(backend.name, sanitize_key_name(relpath), size, mtime_ns // 1_000_000_000)
    assert hexdigest is not None
    return backend.key_from_digest(hexdigest, size, os.path.basename(relpath))


def ingest_copy(repo: AnnexRepo, store: ObjectStore, tmp: OtherTmp, relpath: str,
                backend: Backend, *, thin: bool = False) -> Ingested:
    """Put the content of work-tree file ``relpath`` into the store, leaving the file.

    Raises :class:`ChangedWhileIngesting` if the file changed while it was read.
    """
    path = repo.top / relpath
    start = time.time_ns()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    tmp_path: Path | None = None
    try:
        st0 = os.fstat(fd)
        if not stat.S_ISREG(st0.st_mode):
            raise AnnexError(f"{relpath}: not a regular file")
        hasher = backend.new_hasher() if backend.is_hash else None
        if thin:
            total = _hash_fd(fd, hasher) if hasher is not None else st0.st_size
        else:
            tfd, tmp_path = tmp.mkstemp(prefix="ingest.")
            try:
                if _reflink(fd, tfd):
                    total = _hash_fd(tfd, hasher) if hasher is not None else st0.st_size
                else:
                    total = _tee(fd, tfd, hasher)
            finally:
                os.close(tfd)
        st1 = os.lstat(path)
        if not same_file_state(st0, st1) or total != st0.st_size:
            raise ChangedWhileIngesting(
                f"{relpath} changed while it was being added; not added "
                "(add it again once it is finished)")
        key = key_for(backend, hasher.hexdigest() if hasher else None, total, relpath,
                      st0.st_mtime_ns)
        executable = bool(st0.st_mode & 0o100)
        existing = store.find(key)
        if existing is not None:
            obj = existing
        elif thin:
            obj = store.path_for(key)
            _prepare_keydir(obj)
            os.link(path, obj)
            after = os.lstat(path)
            if after.st_mtime_ns != st0.st_mtime_ns or after.st_size != st0.st_size:
                os.unlink(obj)
                raise ChangedWhileIngesting(f"{relpath} changed while it was being added")
            os.chmod(obj.parent, 0o555)
        else:
            assert tmp_path is not None
            os.chmod(tmp_path, 0o555 if executable else 0o444)
            obj = store.move_in(key, tmp_path)
            tmp_path = None
        work_st = os.lstat(path)
        work_cache = InodeCache.from_stat(work_st) if settled(st0, start) else None
        return Ingested(key, obj, work_cache, InodeCache.of_path(obj), executable)
    finally:
        os.close(fd)
        if tmp_path is not None:
            _unlink_quiet(tmp_path)


def _prepare_keydir(obj: Path) -> None:
    keydir = obj.parent
    keydir.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(keydir)
    except FileExistsError:
        os.chmod(keydir, 0o755)


def _hash_fd(fd: int, hasher: Hasher) -> int:
    os.lseek(fd, 0, os.SEEK_SET)
    return hash_fd(fd, hasher, size=os.fstat(fd).st_size)


def _tee(src_fd: int, dst_fd: int, hasher: object | None) -> int:
    buf = bytearray(_BUF)
    view = memoryview(buf)
    total = 0
    update = hasher.update if hasher is not None else None  # type: ignore[attr-defined]
    with open(src_fd, "rb", buffering=0, closefd=False) as f:
        while n := f.readinto(view):
            chunk = view[:n]
            if update is not None:
                update(chunk)
            pos = 0
            while pos < n:
                pos += os.write(dst_fd, chunk[pos:])
            total += n
    return total


# ---------------------------------------------------------- populate / depopulate


@dataclass
class DepopulateResult:
    """What :func:`depopulate_unlocked` did for one key."""

    emptied: list[str] = field(default_factory=list)
    """Unlocked files that held the content and are pointer files again."""
    modified: list[str] = field(default_factory=list)
    """Unlocked files that were left alone because they no longer hold the content."""


class UnlockedContent:
    """Batches changes to unlocked files; restages the index once on :meth:`close`.

    Use one per operation that touches many keys (a transfer run, fsck, an update
    after checkout). Must not be used inside the clean/smudge filter (git holds the
    index lock there): pass ``restage=False`` and the files are left in the restage
    log for the next run.
    """

    def __init__(self, repo: AnnexRepo, *, db: KeysDb | None = None,
                 restage: bool = True) -> None:
        if repo.bare:
            raise AnnexError("a bare repository has no unlocked files")
        self.repo = repo
        self.store = ObjectStore(repo.annex_dir, bare=False)
        self._own_db = db is None
        self.db = db or KeysDb(repo)
        self.tmp = OtherTmp(repo)
        self.thin = repo.config.get_bool("annex.thin", False)
        self._restage = restage
        self._logged: list[tuple[str, InodeCache]] = []
        self._reconciled = False
        self.restage_result: RestageResult | None = None

    # -- lifecycle -----------------------------------------------------------------
    def reconcile(self) -> None:
        """Update the keys database from the index once (git-annex does it on open)."""
        if not self._reconciled:
            self._reconciled = True
            self.db.reconcile_staged(self._reconcile_pointer)

    def _reconcile_pointer(self, change: StagedChange) -> None:
        # git-annex's reconcilepointerfile, populating half only: a pointer file for
        # present content gets filled. (git-annex also empties a file it believes
        # populated when the object is missing; we never do that here, because a
        # missing object can also mean the work-tree copy is the last one left.)
        if self.store.has(change.key):
            self.populate_file(change.key, change.file)

    def close(self) -> None:
        try:
            if self._logged:
                log_restage(self.repo, self._logged)
                self._logged = []
            self.db.flush()
            if self._restage:
                self.restage_result = restage(self.repo)
        finally:
            self.tmp.close()
            if self._own_db:
                self.db.close()

    def __enter__(self) -> UnlockedContent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- per key -------------------------------------------------------------------
    def candidates(self, key: Key) -> list[str]:
        self.reconcile()
        return sorted(set(self.db.associated_files(key)))

    def populate(self, key: Key) -> list[str]:
        """Fill every unlocked pointer file of ``key`` (its content must be present)."""
        if not self.store.has(key):
            return []
        return [f for f in self.candidates(key) if self.populate_file(key, f)]

    def depopulate(self, key: Key) -> DepopulateResult:
        """Turn every unlocked file holding ``key``'s content back into a pointer."""
        res = DepopulateResult()
        for f in self.candidates(key):
            done = self.depopulate_file(key, f)
            if done is True:
                res.emptied.append(f)
            elif done is False:
                res.modified.append(f)
        return res

    # -- per file ------------------------------------------------------------------
    def populate_file(self, key: Key, file: str) -> bool:
        """Replace ``file`` with ``key``'s content if it is a pointer to ``key``."""
        path = self.repo.top / file
        try:
            st = os.lstat(path)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or read_pointer_file(path) != key:
            return False
        obj = self.store.find(key)
        if obj is None:
            return False
        mode = stat.S_IMODE(st.st_mode)
        fd, tmp = self.tmp.mkstemp(prefix="populate.")
        try:
            if self.thin:
                os.close(fd)
                fd = -1
                os.unlink(tmp)
                os.link(obj, tmp)
            else:
                src = os.open(obj, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    copy_fd(src, fd)
                finally:
                    os.close(src)
            os.chmod(tmp, mode)
            if not _unchanged(path, st):
                return False
            os.rename(tmp, path)
        finally:
            if fd >= 0:
                os.close(fd)
            _unlink_quiet(tmp)
        ic = InodeCache.of_path(path)
        if ic is None:
            return False
        caches: list[InodeCache | None] = [ic]
        if not self.db.inode_caches(key):
            caches.append(InodeCache.of_path(obj))
        self.db.add_inode_caches(key, caches)
        self.db.add_associated(key, file)
        self.db.flush()
        self._logged.append((file, ic))
        return True

    def is_unmodified(self, key: Key, path: Path, st: os.stat_result | None = None) -> bool:
        """Does the file hold exactly ``key``'s content? (inode cache, else hashing)."""
        try:
            st = st or os.lstat(path)
        except OSError:
            return False
        ic = InodeCache.from_stat(st)
        if ic is None:
            return False
        if self.db.is_unmodified_cheap(key, ic):
            return True
        if hasher_for_key(key) is None or (key.size is not None and st.st_size != key.size):
            return False  # cannot prove it: treat as modified, never as disposable
        try:
            ok = verify_file(path, key)
        except (OSError, AnnexError):
            return False
        if ok and _unchanged(path, st):
            self.db.add_inode_caches(key, [ic])
            self.db.flush()
            return True
        return False

    def depopulate_file(self, key: Key, file: str) -> bool | None:
        """Put the pointer back if ``file`` holds ``key``'s content.

        True: emptied. False: left alone because it was modified. None: nothing to do
        (not a regular file, or already a pointer).
        """
        path = self.repo.top / file
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or read_pointer_file(path) is not None:
            return None
        if not self.is_unmodified(key, path, st):
            return False
        fd, tmp = self.tmp.mkstemp(prefix="depopulate.")
        try:
            os.write(fd, pointer_content(key))
            os.close(fd)
            fd = -1
            os.chmod(tmp, stat.S_IMODE(st.st_mode))
            # Keep the mtime: git then has less reason to re-run the filter.
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            if not _unchanged(path, st):
                return False
            os.rename(tmp, path)
        finally:
            if fd >= 0:
                os.close(fd)
            _unlink_quiet(tmp)
        old = InodeCache.from_stat(st)
        if old is not None:
            self.db.remove_inode_cache(old)
            self.db.flush()
        ic = InodeCache.of_path(path)
        if ic is not None:
            self._logged.append((file, ic))
        return True

    def record_restage(self, file: str, ic: InodeCache) -> None:
        self._logged.append((file, ic))


def _unchanged(path: Path, st: os.stat_result) -> bool:
    try:
        return same_file_state(st, os.lstat(path))
    except OSError:
        return False


def populate_unlocked(repo: AnnexRepo, key: Key) -> list[str]:
    """Content for ``key`` has arrived in the object store: fill every unlocked file
    that points at it and restage them so ``git status`` stays clean.

    Returns the files filled (top-relative). For many keys, use one
    :class:`UnlockedContent` and call :meth:`UnlockedContent.populate` per key: the
    index is then refreshed once.
    """
    if repo.bare:
        return []
    with UnlockedContent(repo) as uc:
        return uc.populate(key)


def depopulate_unlocked(repo: AnnexRepo, key: Key) -> DepopulateResult:
    """Content for ``key`` is being (or was) dropped: turn unlocked files holding it
    back into pointer files and restage them.

    Files whose content is not ``key``'s any more (edited) are left alone and listed
    in :attr:`DepopulateResult.modified`. Works before or after the object is removed
    (unmodified is proven by inode cache or by hashing the work-tree file).
    """
    if repo.bare:
        return DepopulateResult()
    with UnlockedContent(repo) as uc:
        return uc.depopulate(key)


# ------------------------------------------------------------------ lock / unlock


@dataclass
class FileResult:
    file: str
    success: bool
    key: Key | None = None
    note: str | None = None
    error: str | None = None


def _mode_for(executable: bool) -> int:
    return (0o777 if executable else 0o666) & ~umask()


def unlock_files(repo: AnnexRepo, paths: Sequence[str]) -> Iterator[FileResult]:
    """Unlock the locked annexed files under ``paths`` (top-relative)."""
    files = [af for af in annexed_files(repo, paths) if af.locked]
    if not files:
        return
    entries: list[IndexEntry] = []
    results: list[FileResult] = []
    with UnlockedContent(repo) as uc, BlobWriter(repo.git) as blobs:
        for af in files:
            try:
                entry = _unlock_one(uc, af, blobs)
            except (OSError, AnnexError) as e:
                msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                results.append(FileResult(af.file, False, af.key, error=msg))
                continue
            if entry is None:
                results.append(FileResult(af.file, False, af.key,
                                          error="not a symlink to its content any more"))
                continue
            entries.append(entry)
            results.append(FileResult(af.file, True, af.key))
        blobs.flush()
        uc.db.flush()  # update-index may run our filter, which writes the database
        _stage(repo, entries)
    if uc.restage_result is not None and uc.restage_result.warning:
        results.append(FileResult("", False, error=uc.restage_result.warning))
    yield from results


def _unlock_one(uc: UnlockedContent, af: AnnexedFile, blobs: BlobWriter) -> IndexEntry | None:
    path = uc.repo.top / af.file
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode):
        return None
    target = os.readlink(path)
    obj = uc.store.find(af.key)
    executable = bool(obj is not None and os.stat(obj).st_mode & 0o100)
    fd, tmp = uc.tmp.mkstemp(prefix="unlock.")
    try:
        if obj is not None and uc.thin:
            os.close(fd)
            fd = -1
            os.unlink(tmp)
            os.link(obj, tmp)
        elif obj is not None:
            src = os.open(obj, os.O_RDONLY | os.O_CLOEXEC)
            try:
                copy_fd(src, fd)
            finally:
                os.close(src)
        else:
            os.write(fd, pointer_content(af.key))
        os.chmod(tmp, _mode_for(executable))
        try:
            still = os.lstat(path)
        except FileNotFoundError:
            return None
        if not same_file_state(st, still) or os.readlink(path) != target:
            return None
        os.rename(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        _unlink_quiet(tmp)
    ic = InodeCache.of_path(path)
    if ic is not None:
        if obj is not None:
            uc.db.add_inode_caches(af.key, [ic, InodeCache.of_path(obj)])
        uc.db.add_associated(af.key, af.file)
        uc.record_restage(af.file, ic)
    oid = blobs.add(pointer_content(af.key))
    return IndexEntry(MODE_EXECUTABLE if executable else MODE_FILE, oid, af.file)


def lock_files(repo: AnnexRepo, paths: Sequence[str]) -> Iterator[FileResult]:
    """Lock the unlocked annexed files under ``paths``: content into the store, a
    symlink in the work tree. A file modified since it was staged is refused."""
    files = [af for af in annexed_files(repo, paths) if not af.locked]
    if not files:
        return
    entries: list[IndexEntry] = []
    results: list[FileResult] = []
    with UnlockedContent(repo, restage=False) as uc, BlobWriter(repo.git) as blobs:
        for af in files:
            try:
                entries.append(_lock_one(uc, af, blobs))
                results.append(FileResult(af.file, True, af.key))
            except (OSError, AnnexError) as e:
                msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                results.append(FileResult(af.file, False, af.key, error=msg))
        blobs.flush()
        uc.db.flush()  # update-index may run our filter, which writes the database
        _stage(repo, entries)
    yield from results


def _lock_one(uc: UnlockedContent, af: AnnexedFile, blobs: BlobWriter) -> IndexEntry:
    path = uc.repo.top / af.file
    st = os.lstat(path)
    target = symlink_target(af.key, af.file)
    if stat.S_ISLNK(st.st_mode):
        if os.readlink(path) != target:
            raise AnnexError("is a symlink that does not point at its content")
    elif not stat.S_ISREG(st.st_mode):
        raise AnnexError("not a regular file")
    else:
        pointer = read_pointer_file(path)
        if pointer is not None and pointer != af.key:
            raise AnnexError("points at a different key than the one staged; "
                             "'git add' it first")
        if pointer is None:
            if not uc.is_unmodified(af.key, path, st):
                raise AnnexError(
                    "Locking this file would discard any changes you have made to it. "
                    "Use 'annexsync add' (or 'git add') to stage your changes.")
            obj = uc.store.find(af.key)
            if obj is None:
                _adopt(uc, af, path, st)
            elif os.stat(obj).st_ino == st.st_ino:
                # annex.thin: the object is this very file; it becomes read-only.
                os.chmod(obj, stat.S_IMODE(st.st_mode) & 0o555)
        _replace_with_symlink(path, target, st)
        ic = InodeCache.from_stat(st)
        if ic is not None:
            uc.db.remove_inode_cache(ic)
    return IndexEntry(MODE_SYMLINK, blobs.add(os.fsencode(target)), af.file)


def _adopt(uc: UnlockedContent, af: AnnexedFile, path: Path, st: os.stat_result) -> None:
    """The object is missing but the (verified) work-tree file has it: move it in."""
    dest = uc.store.path_for(af.key)
    _prepare_keydir(dest)
    if not _unchanged(path, st):
        raise AnnexError("changed while it was being locked")
    os.rename(path, dest)
    os.chmod(dest, stat.S_IMODE(st.st_mode) & 0o555)
    os.chmod(dest.parent, 0o555)
    # Leave a placeholder so _replace_with_symlink has something to replace.
    os.symlink(symlink_target(af.key, af.file), path)


def _replace_with_symlink(path: Path, target: str, st: os.stat_result) -> None:
    tmp = path.with_name(f".annexsync-lock.{os.getpid()}.{path.name}"[:255])
    _unlink_quiet(tmp)
    os.symlink(target, tmp)
    try:
        cur = os.lstat(path)
        if not stat.S_ISLNK(cur.st_mode) and not same_file_state(st, cur):
            raise AnnexError("changed while it was being locked")
        os.rename(tmp, path)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def _stage(repo: AnnexRepo, entries: Iterable[IndexEntry]) -> None:
    entries = list(entries)
    if not entries:
        return
    delay = 0.02
    for attempt in range(40):
        try:
            git_update_index(repo.git, entries)
            return
        except GitError as e:
            if "index.lock" not in e.stderr or attempt == 39:
                raise
        time.sleep(delay)  # someone else holds the index for a moment
        delay = min(delay * 1.5, 0.25)


def addunlocked_matcher(repo: AnnexRepo, forced: bool | None = None
                        ) -> Callable[[str, int | None], bool]:
    """Which new large files ``add`` adds unlocked: ``forced`` (``add --unlocked``)
    or ``annex.addunlocked``, a boolean or, as in git-annex, a largefiles-style
    matching expression."""
    if forced is not None:
        return lambda f, size: forced
    value = repo.config.get("annex.addunlocked")
    if value is None:
        return lambda f, size: False
    v = value.strip().lower()
    if v in ("true", "yes", "on", "1", ""):
        return lambda f, size: True
    if v in ("false", "no", "off", "0"):
        return lambda f, size: False
    from annexsync.policy.expression import MatchContext, parse

    try:
        expr = parse(value, mode="largefiles")
    except AnnexError as e:
        raise AnnexError(f"bad annex.addunlocked in git config: {e}") from None

    def match(f: str, size: int | None) -> bool:
        return expr.evaluate(MatchContext(file=f, size=size))

    return match


def default_backend(repo: AnnexRepo) -> Backend:
    return get_backend(repo.config.get("annex.backend") or "SHA256E")
