"""The keys database (``.git/annex/keysdb/db``), inode caches and the inode sentinal.

Theory of operation
-------------------
git-annex keeps a sqlite cache beside the object store with two tables:

* ``associated(key, file)``: which work-tree files (top-relative) point at which key,
  for locked and unlocked files. git-annex uses it to find the unlocked files to fill
  when content arrives and to empty when content is dropped.
* ``content(key, inodecache, filesize, mtime)``: the inode caches
  (``"inode size mtime_seconds mtime_fraction"``) of every file known to hold a key's
  content: the object file and each populated unlocked file. A file whose inode cache
  is still the recorded one has not been modified, so it need not be hashed again.

We keep this database exactly as git-annex does, rather than keeping a private cache
and invalidating git-annex's, because (a) git-annex's ``get``/``drop`` rely on it to
update unlocked files we created, (b) invalidating it is not as simple as deleting it:
git-annex rebuilds ``associated`` only from the diff between ``refs/annex/last-index``
and the index, so deleting the database but not that ref loses every association that
did not change since (verified with git-annex 10.20261026), and the inode caches are
lost either way.

The rules we follow, from git-annex's ``Database.Keys``:

* The database is created (WAL mode, git-annex's exact schema) in ``keysdb.tmp/`` and
  renamed into place, while holding ``keysdb.lck`` exclusively.
* *Reconciling* with the index also holds ``keysdb.lck``: ``git write-tree`` of the
  index (clean/smudge filters bypassed), ``git diff`` between the tree in
  ``refs/annex/last-index`` and it, limited with ``-G/annex/objects/``; removed and
  added annex links / pointer files update ``associated``; then the ref moves to the
  new tree. When the index cannot be written as a tree (locked, conflicted) the index
  is diffed with ``--cached`` and the ref is left alone, as git-annex does.
* ``associated`` may hold stale rows (a file that points elsewhere now); every reader
  re-checks the file. Inode caches are only trusted with a *strong* match (inode,
  size, mtime) while the sentinal file says inodes are stable; otherwise a cache miss
  means "hash it", never "it is unchanged".
* Writes are batched in a transaction committed by :meth:`KeysDb.flush` (every
  operation of a command, or every filter request), so git-annex running at the same
  time waits at most one short transaction (sqlite ``busy_timeout``).
* A transaction must be flushed before running any git command that can write the
  index (``update-index``, ``checkout``, ``status``...): git may run the clean filter
  on racily-clean files while writing it, and our filter writes this database, so an
  open transaction here would deadlock the two processes.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from annexsync.annex.keys import Key, parse_pointer, parse_symlink_target
from annexsync.annex.locks import LockBusy, lock_file
from annexsync.annex.repo import AnnexRepo
from annexsync.errors import AnnexError
from annexsync.git.catfile import check_many
from annexsync.git.runner import GitError

LAST_INDEX_REF = "refs/annex/last-index"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
NULL_OID = "0" * 40
#: git-annex reads at most this much of a blob to decide whether it is a pointer.
MAX_POINTER_READ = 32769
#: Options that stop git from running the annex filter (it could wait on our locks).
BYPASS_FILTER = ("-c", "filter.annex.smudge=", "-c", "filter.annex.clean=",
                 "-c", "filter.annex.process=")

SCHEMA = (
    'CREATE TABLE "associated"("id" INTEGER PRIMARY KEY,"key" BLOB NOT NULL,'
    '"file" BLOB NOT NULL,CONSTRAINT "key_file_index" UNIQUE ("key","file"),'
    'CONSTRAINT "file_key_index" UNIQUE ("file","key"))',
    'CREATE TABLE "content"("id" INTEGER PRIMARY KEY,"key" BLOB NOT NULL,'
    '"inodecache" VARCHAR NOT NULL,"filesize" VARCHAR NOT NULL,"mtime" INTEGER NOT NULL,'
    'CONSTRAINT "key_inode_cache_index" UNIQUE ("key","inodecache"),'
    'CONSTRAINT "inode_cache_key_index" UNIQUE ("inodecache","key"))',
)


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------- inode caches


@dataclass(frozen=True, slots=True)
class InodeCache:
    """What identifies one version of a file cheaply: inode, size and mtime.

    ``mtime_ns`` is None for the low-resolution form (seconds only) that git-annex
    reads back from a cache whose fraction was empty; such a cache compares on seconds.
    """

    inode: int
    size: int
    mtime_s: int
    mtime_ns: int | None = None  # nanoseconds within the second

    @classmethod
    def from_stat(cls, st: os.stat_result) -> InodeCache | None:
        """The cache of a regular file's stat; None for anything else."""
        if not stat.S_ISREG(st.st_mode):
            return None
        sec, ns = divmod(st.st_mtime_ns, 1_000_000_000)
        return cls(st.st_ino, st.st_size, sec, ns)

    @classmethod
    def of_path(cls, path: str | os.PathLike[str]) -> InodeCache | None:
        """The cache of the file at ``path`` (not following symlinks), if regular."""
        try:
            return cls.from_stat(os.lstat(path))
        except OSError:
            return None

    def format(self) -> str:
        """git-annex's ``showInodeCache``: ``"inode size seconds fraction"``.

        The fraction is the nanoseconds without trailing zeros (empty for a whole
        second, which leaves a trailing space, exactly as git-annex writes it).
        """
        if self.mtime_ns is None:
            return f"{self.inode} {self.size} {self.mtime_s}"
        frac = f"{self.mtime_ns:09d}".rstrip("0")
        return f"{self.inode} {self.size} {self.mtime_s} {frac}"

    @classmethod
    def parse(cls, s: str) -> InodeCache | None:
        """Read a cache written by :meth:`format` or by git-annex; None if malformed."""
        words = s.split()
        try:
            if len(words) == 3:
                return cls(int(words[0]), int(words[1]), int(words[2]), None)
            if len(words) >= 4:
                frac = words[3]
                if not frac.isdigit():
                    return None
                ns = int((frac + "000000000")[:9])
                return cls(int(words[0]), int(words[1]), int(words[2]), ns)
        except ValueError:
            return None
        return None

    def same(self, other: InodeCache) -> bool:
        """git-annex's strong comparison (low-resolution times compare on seconds)."""
        if (self.inode, self.size, self.mtime_s) != (other.inode, other.size, other.mtime_s):
            return False
        if self.mtime_ns is None or other.mtime_ns is None:
            return True
        return self.mtime_ns == other.mtime_ns


# ------------------------------------------------------------------------ sentinal


def sentinal_paths(annex_dir: Path) -> tuple[Path, Path]:
    return annex_dir / "sentinal", annex_dir / "sentinal.cache"


def ensure_sentinal(annex_dir: Path) -> None:
    """Create the inode sentinal if it is missing (git-annex does it at init)."""
    sent, cache = sentinal_paths(annex_dir)
    if sent.exists() and cache.exists():
        return
    annex_dir.mkdir(parents=True, exist_ok=True)
    sent.write_bytes(b"")
    ic = InodeCache.of_path(sent)
    if ic is not None:
        cache.write_text(ic.format())


def inodes_stable(annex_dir: Path) -> bool:
    """True if the sentinal still has the inode recorded when it was made.

    False when the repository was copied or restored (inode numbers changed) or the
    sentinal is missing: inode caches cannot be trusted then.
    """
    sent, cache = sentinal_paths(annex_dir)
    try:
        old = InodeCache.parse(cache.read_text())
    except OSError:
        return False
    new = InodeCache.of_path(sent)
    return old is not None and new is not None and old.same(new)


# -------------------------------------------------------------------------- database


@dataclass(frozen=True, slots=True)
class StagedChange:
    """An association that reconciling added: ``file`` now points at ``key``."""

    file: str
    key: Key
    unlocked: bool


class KeysDb:
    """One process's handle on the keys database of a (non-bare) repository."""

    def __init__(self, repo: AnnexRepo, *, busy_timeout: float = 60.0) -> None:
        self.repo = repo
        self.dir = repo.annex_path("keysdb")
        self.path = self.dir / "db"
        self.lock_path = repo.annex_path("keysdb.lck")
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._in_tx = False
        self._stable: bool | None = None
        self._lock_depth = 0

    # -- opening -------------------------------------------------------------------
    @contextmanager
    def locked(self, timeout: float | None = 120.0) -> Iterator[None]:
        """Hold ``keysdb.lck`` (git-annex holds it to create and to reconcile).

        Re-entrant within this object: OFD locks of one process conflict with each
        other, so taking it twice would wait for ourselves.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.repo.annex_dir.mkdir(parents=True, exist_ok=True)
        try:
            lk = lock_file(self.lock_path, exclusive=True, blocking=True, timeout=timeout)
        except LockBusy:
            raise AnnexError(f"{self.lock_path} is locked by another process for too long")
        self._lock_depth = 1
        try:
            yield
        finally:
            self._lock_depth = 0
            lk.release()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.path.exists():
                with self.locked():
                    if not self.path.exists():
                        self._create()
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            # Durability of a cache is not worth an fsync per write (WAL keeps it
            # consistent); git-annex does not fsync it either.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _create(self) -> None:
        tmpdir = self.dir.with_name("keysdb.tmp")
        shutil.rmtree(tmpdir, ignore_errors=True)
        tmpdir.mkdir(parents=True)
        conn = sqlite3.connect(tmpdir / "db", isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for sql in SCHEMA:
                conn.execute(sql)
        finally:
            conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.rename(tmpdir, self.dir)

    def _write(self) -> sqlite3.Connection:
        conn = self._connect()
        if not self._in_tx:
            conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True
        return conn

    def flush(self) -> None:
        """Commit pending writes so other processes (git-annex) see them."""
        if self._conn is not None and self._in_tx:
            self._conn.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        if self._conn is not None:
            try:
                self.flush()
            finally:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> KeysDb:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None and self._conn is not None and self._in_tx:
            self._conn.execute("ROLLBACK")
            self._in_tx = False
        self.close()

    @property
    def inodes_stable(self) -> bool:
        if self._stable is None:
            self._stable = inodes_stable(self.repo.annex_dir)
        return self._stable

    # -- associated files ----------------------------------------------------------
    def add_associated(self, key: Key, file: str) -> None:
        self._write().execute("INSERT OR IGNORE INTO associated (key, file) VALUES (?, ?)",
                              (_enc(str(key)), _enc(file)))

    def remove_associated(self, key: Key, file: str) -> None:
        self._write().execute("DELETE FROM associated WHERE key = ? AND file = ?",
                              (_enc(str(key)), _enc(file)))

    def associated_files(self, key: Key) -> list[str]:
        """Files once associated with ``key`` (some may point elsewhere now)."""
        rows = self._connect().execute("SELECT file FROM associated WHERE key = ?",
                                       (_enc(str(key)),)).fetchall()
        return [_dec(bytes(r[0])) for r in rows]

    def associated_keys(self, file: str) -> list[Key]:
        rows = self._connect().execute("SELECT key FROM associated WHERE file = ?",
                                       (_enc(file),)).fetchall()
        return _keys(r[0] for r in rows)

    # -- inode caches ----------------------------------------------------------------
    def add_inode_caches(self, key: Key, caches: Iterable[InodeCache | None]) -> None:
        conn = None
        for ic in caches:
            if ic is None:
                continue
            conn = conn or self._write()
            conn.execute(
                "INSERT OR IGNORE INTO content (key, inodecache, filesize, mtime) "
                "VALUES (?, ?, ?, ?)", (_enc(str(key)), ic.format(), str(ic.size), ic.mtime_s))

    def inode_caches(self, key: Key) -> list[InodeCache]:
        rows = self._connect().execute("SELECT inodecache FROM content WHERE key = ?",
                                       (_enc(str(key)),)).fetchall()
        return [ic for r in rows if (ic := InodeCache.parse(str(r[0]))) is not None]

    def remove_inode_caches(self, key: Key) -> None:
        self._write().execute("DELETE FROM content WHERE key = ?", (_enc(str(key)),))

    def remove_inode_cache(self, ic: InodeCache) -> None:
        self._write().execute("DELETE FROM content WHERE inodecache = ?", (ic.format(),))

    def keys_with_inode(self, ic: InodeCache) -> list[Key]:
        """Keys whose content is recorded for exactly this inode cache (strong match).

        Empty when inodes are not stable (a copied repository): then nothing is known.
        """
        if not self.inodes_stable:
            return []
        rows = self._connect().execute("SELECT key FROM content WHERE inodecache = ?",
                                       (ic.format(),)).fetchall()
        return _keys(r[0] for r in rows)

    def is_unmodified_cheap(self, key: Key, ic: InodeCache | None) -> bool:
        """Does ``ic`` match a recorded cache of ``key`` (so the file holds its content)?"""
        if ic is None or not self.inodes_stable:
            return False
        return any(ic.same(c) for c in self.inode_caches(key))

    # -- reconciling with the index --------------------------------------------------
    def reconcile_staged(self, on_pointer: Callable[[StagedChange], None] | None = None
                         ) -> list[StagedChange]:
        """Bring ``associated`` up to date with the index, as git-annex does on open.

        Returns the associations added. ``on_pointer`` is called (with the lock held,
        so it must not run git commands that filter files) for every unlocked file
        newly associated, to reconcile its work-tree content the way git-annex does.
        """
        if self.repo.bare:
            return []
        git = self.repo.git
        added: list[StagedChange] = []
        with self.locked():
            old = _rev_parse(self.repo, LAST_INDEX_REF) or EMPTY_TREE
            proc = git.run_status(*BYPASS_FILTER, "write-tree")
            new = proc.stdout.decode().strip() if proc.returncode == 0 else None
            if new is not None and new == old:
                return []
            diff_args = [old, new] if new is not None else ["--cached", old]
            records = _diff_raw(self.repo, diff_args)
            conflicted = False
            wanted = {oid for r in records for oid in (r.src, r.dst) if oid != NULL_OID}
            keys = _blob_keys(self.repo, wanted)
            for r in records:
                if r.status == "U":
                    conflicted = True
                else:
                    oldkey = keys.get(r.src)
                    if oldkey is not None:
                        self.remove_associated(oldkey, r.path)
                newkey = keys.get(r.dst)
                if newkey is not None:
                    self.add_associated(newkey, r.path)
                    change = StagedChange(r.path, newkey, r.dst_mode != "120000")
                    added.append(change)
                    if on_pointer is not None and change.unlocked:
                        on_pointer(change)
            if new is None and conflicted:
                # The local side of conflicted files (git-annex's second diff).
                ours = [r for r in _diff_raw(self.repo, ["--cached"]) if r.status == "U"]
                ours_keys = _blob_keys(self.repo, {r.src for r in ours})  # one batch
                for r in ours:
                    key = ours_keys.get(r.src)
                    if key is not None:
                        self.add_associated(key, r.path)
            self.flush()
            if new is not None:
                git.run("update-ref", LAST_INDEX_REF, new)
        return added

    def invalidate(self) -> None:
        """Throw the database away so git-annex (or we) rebuild it from scratch.

        Deletes the database, git-annex's old index cache *and* ``refs/annex/last-index``
        (without the last one a rebuild would only see recent changes).
        """
        self.close()
        with self.locked():
            shutil.rmtree(self.dir, ignore_errors=True)
            for p in (self.repo.annex_path("keysdb.cache"),):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            self.repo.git.run_status("update-ref", "-d", LAST_INDEX_REF)


def _keys(raw: Iterable[bytes | str]) -> list[Key]:
    out: list[Key] = []
    for k in raw:
        try:
            out.append(Key.parse(bytes(k) if not isinstance(k, str) else k))
        except ValueError:
            continue
    return out


def _rev_parse(repo: AnnexRepo, ref: str) -> str | None:
    proc = repo.git.run_status("rev-parse", "--verify", "--quiet", ref + "^{tree}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class _Raw:
    src_mode: str
    dst_mode: str
    src: str
    dst: str
    status: str
    path: str


def _diff_raw(repo: AnnexRepo, args: list[str]) -> list[_Raw]:
    out = repo.git.run(*BYPASS_FILTER, "-c", "diff.external=", "diff", *args, "--raw", "-z",
                       "--no-abbrev", "-G/annex/objects/", "--no-renames",
                       "--ignore-submodules=all", "--no-textconv", "--no-ext-diff")
    fields = out.split(b"\0")
    result: list[_Raw] = []
    i = 0
    while i + 1 < len(fields):
        meta = fields[i].decode()
        if not meta.startswith(":"):
            i += 1
            continue
        parts = meta[1:].split(" ")
        if len(parts) != 5:
            i += 2
            continue
        sm, dm, so, do, st = parts
        result.append(_Raw(sm, dm, so, do, st[:1], _dec(fields[i + 1])))
        i += 2
    return result


def _blob_keys(repo: AnnexRepo, oids: set[str]) -> dict[str, Key]:
    """Keys of blobs that are annex links or pointer files (small blobs only)."""
    oids = {o for o in oids if o and o != NULL_OID}
    if not oids:
        return {}
    try:
        sizes = check_many(repo.git, oids)
    except GitError:
        return {}
    small = [o for o, info in sizes.items()
             if info is not None and info[0] == "blob" and info[1] <= MAX_POINTER_READ]
    out: dict[str, Key] = {}
    for oid, obj in repo.catfile.get_many(small):
        if obj is None:
            continue
        key = parse_pointer(obj.data) or parse_symlink_target(obj.data)
        if key is not None:
            out[oid] = key
    return out
