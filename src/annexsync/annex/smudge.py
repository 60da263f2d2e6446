"""The annex clean and smudge filters, the smudge log and ``smudge --update``.

Theory of operation
-------------------
*Clean* (``git add``, ``git status``, ``git diff``) turns work-tree content into what
git stores; git streams the file to us. Decisions follow git-annex's
``Command.Smudge``:

1. Content that is a valid pointer file stays that pointer (and if the key's content
   is present and the work-tree file is that pointer, it is filled in).
2. A file whose current inode cache is recorded for a key is unchanged since we last
   saw it: its pointer is answered without hashing (the *stat cache*).
3. Otherwise :func:`should_annex` decides: ``annex.largefiles`` (git config, then the
   gitattribute, then config.log) when configured; else "annexed if the index version
   was annexed"; dotfiles only by the latter unless ``annex.dotfiles``; a file whose
   inode is known annexed content stays annexed; a file that git has, unannexed, with
   the same size and the same blob id stays in git.
4. Annexing hashes the stream *while* copying it to a temp file (one read of the
   content, by git). The temp file is renamed into the object store, so the stored
   bytes are exactly the hashed bytes: a file modified while git reads it can change
   what is stored, never store it under a wrong key. With ``annex.thin`` the work-tree
   file is hard-linked instead when it provably did not change.

The work-tree file's inode cache is only recorded when the stream provably is its
content: same stat before and after, and its last change is older than the moment
git could have started reading it (our previous answer, in the long-running process;
never for the first file or in the one-shot form).

*Smudge* (checkout) answers with the blob as is: for a pointer, the pointer, plus a
``KEY FILE`` line in ``.git/annex/smudge.log`` and an association in the keys
database, exactly like git-annex. The post-checkout and post-merge hooks run
``smudge --update``, which fills pointer files whose content is present and restages
them. (git buffers smudge output in memory, and a pointer lets ``annex.thin`` work.)

Location log lines for newly stored keys are batched and written to the journal when
the filter ends (the long-running filter also commits the git-annex branch then);
if the process dies first, ``fsck`` restores them from the object store.

Start-up
--------
git starts ``filter-process`` for every checkout or merge that writes a regular file
and waits for its handshake (and for it to exit), and the hooks start
``smudge --update`` after each one; starting Python and importing dominated both.
So nothing is done before it is needed:

* this module imports only a few standard modules; the rest of annexsync (keys, the
  keys database and sqlite, the git-annex branch, backends, largefiles expressions)
  is imported where first used;
* :class:`LazyFilter` (``filter-process``) answers git's handshake without touching
  the repository, and answers smudges of ordinary content (and of files outside the
  repository) without ever opening it: only a pointer to note, a clean, or spooled
  content too big for memory opens the repository and builds the :class:`AnnexFilter`;
* :class:`AnnexFilter` opens its parts (keys database, object store, index lookup,
  git-annex branch, largefiles) on first use, asks for the ``annex.largefiles``
  verdict only when :func:`should_annex` will use it (not for dotfiles without
  ``annex.dotfiles``, nor for a known inode), as git-annex does, and at the end
  commits the git-annex branch only when the journal holds something to commit;
* :func:`update_smudged` checks cheaply first (no git process): an empty smudge log
  is not read, and with no content at all in the object store nothing can be filled,
  so the reconcile is left to the next reader of the keys database (every reader
  reconciles first); the keys database and the unlocked-file code are imported only
  when there is work for them.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from enum import Enum
from functools import cached_property

from annexsync.errors import AnnexError

# Start-up matters here: git starts filter-process for every checkout or merge that
# writes a regular file, and waits for it (see "Start-up" above). So this module
# imports only the standard modules above at load time; everything else is imported
# where it is first used. ``TYPE_CHECKING = False`` avoids importing typing too.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path
    from subprocess import Popen
    from typing import IO

    from annexsync.annex.backends import Backend
    from annexsync.annex.branch import AnnexBranch
    from annexsync.annex.keys import Key
    from annexsync.annex.keysdb import KeysDb, StagedChange
    from annexsync.annex.largefiles import LargeFiles
    from annexsync.annex.objects import ObjectStore
    from annexsync.annex.repo import AnnexRepo
    from annexsync.annex.restage import RestageResult
    from annexsync.annex.unlocked import OtherTmp, UnlockedContent
    from annexsync.git.attributes import CheckAttr
    from annexsync.policy.expression import Expr

MAX_POINTER_SIZE = 32768
SPOOL_MEMORY = 16 << 20
_ANNEX_OBJECTS = b"/annex/objects/"


# --------------------------------------------------------------- pure decisions


class PointerKind(Enum):
    POINTER = "pointer"      # a valid pointer file
    APPENDED = "appended"    # a valid pointer with other content appended
    BAD_KEY = "bad-key"      # shaped like a pointer, but the key is invalid/unsafe
    NONE = "none"            # ordinary content


def classify_head(head: bytes, complete: bool) -> tuple[PointerKind, Key | None]:
    """Is content (whose first bytes are ``head``) a pointer file?

    ``complete`` says ``head`` is the whole content. git-annex's rules: a pointer's
    first line names a key after ``/annex/objects/``; it is at most 32768 bytes and
    every further line contains ``/annex/``.
    """
    first = head.split(b"\n", 1)[0]
    if first.endswith(b"\r"):
        first = first[:-1]
    if _ANNEX_OBJECTS not in first:
        return PointerKind.NONE, None
    from annexsync.annex.keys import parse_pointer

    first_key = parse_pointer(first)
    if complete and len(head) <= MAX_POINTER_SIZE:
        key = parse_pointer(head)
        if key is not None:
            return PointerKind.POINTER, key
        if first_key is not None:
            return PointerKind.APPENDED, None
        lines = head.split(b"\n")
        if len(head) < 1024 and all(b"/annex/" in ln for ln in lines if ln):
            return PointerKind.BAD_KEY, None
        return PointerKind.NONE, None
    if first_key is not None:
        return PointerKind.APPENDED, None
    return PointerKind.NONE, None


class CleanAction(Enum):
    GIT = "git"                       # pass the content through to git
    ANNEX = "annex"                   # store it in the annex, answer a pointer
    ANNEX_UNLESS_GIT_BLOB = "annex-unless-unchanged"  # unless it is the staged git blob


def should_annex(*, largefiles: bool | None, was_annexed: bool, dotfile: bool,
                 annex_dotfiles: bool, gitaddtoannex: bool, inode_known: bool,
                 staged_git_blob_same_size: bool) -> CleanAction:
    """git-annex's ``shouldAnnex`` for the clean filter.

    ``largefiles`` is the annex.largefiles verdict, None when not configured.
    ``staged_git_blob_same_size``: the index has a non-annexed blob for the path with
    the file's size (then unchanged content must stay in git).
    """
    if inode_known:
        return CleanAction.ANNEX
    if gitaddtoannex and not (dotfile and not annex_dotfiles) and largefiles is not None:
        wanted = largefiles
    else:
        wanted = was_annexed
    if not wanted:
        return CleanAction.GIT
    if not was_annexed and staged_git_blob_same_size:
        return CleanAction.ANNEX_UNLESS_GIT_BLOB
    return CleanAction.ANNEX


def is_dotfile(path: str) -> bool:
    return any(part.startswith(".") for part in path.split("/"))


def outside_repo(pathname: str) -> bool:
    """``git diff --no-index`` may clean files outside the repository: pass them."""
    norm = os.path.normpath(pathname) if pathname else ""
    return (not pathname or os.path.isabs(pathname) or norm == ".."
            or norm.startswith("../") or norm == "." or norm.split("/", 1)[0] == ".git")


# --------------------------------------------------------------- smudge log


def smudge_log_append(repo: AnnexRepo, entries: Iterable[tuple[Key, str]]) -> None:
    """Record files that were smudged to pointers (git-annex's ``smudge.log``)."""
    lines = [f"{k} {f}\n".encode("utf-8", "surrogateescape") for k, f in entries
             if "\n" not in f]
    if not lines:
        return
    from annexsync.annex.locks import lock_file

    with lock_file(repo.annex_path("smudge.lck"), exclusive=True), \
            open(repo.annex_path("smudge.log"), "ab") as fh:
        fh.write(b"".join(lines))


def _parse_smudge_line(line: bytes) -> tuple[Key, str] | None:
    from annexsync.annex.keys import Key

    ks, sep, f = line.partition(b" ")
    if not sep or not f:
        return None
    try:
        return Key.parse(ks), f.decode("utf-8", "surrogateescape")
    except ValueError:
        return None


class UpdateResult:
    """What :func:`update_smudged` did (a plain class: dataclasses cost start-up time)."""

    __slots__ = ("populated", "failed", "warning")

    def __init__(self, populated: list[str], failed: list[str],
                 warning: str | None = None) -> None:
        self.populated = populated
        self.failed = failed
        self.warning = warning

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateResult):
            return NotImplemented
        return (self.populated, self.failed, self.warning) == (
            other.populated, other.failed, other.warning)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass

    def __repr__(self) -> str:
        return (f"UpdateResult(populated={self.populated!r}, failed={self.failed!r}, "
                f"warning={self.warning!r})")


def update_smudged(repo: AnnexRepo, *, restage: bool = True,
                   reconcile: bool = True) -> UpdateResult:
    """``smudge --update``: reconcile the keys database with the index (unless
    ``reconcile`` is False), then fill every smudged pointer file whose content is
    present, and restage them (unless ``restage`` is False).

    Cheap checks first (no git process, no database): an empty smudge log has no
    files to fill, and an object store without any content cannot fill anything, so
    then the reconcile is left to the next reader of the keys database (every reader
    reconciles first, git-annex too, and the result is the same). The keys database
    and the unlocked-file machinery are only opened when there is work for them.
    """
    logf = repo.annex_path("smudge.log")
    logged = _nonempty(logf)
    if not reconcile and not logged:
        return UpdateResult([], [])
    with _Updater(repo, restage=restage) as up:
        if reconcile and up.may_have_content():
            up.reconcile()
        if logged:
            up.fill_logged(logf)
    warning = up.restage_result.warning if up.restage_result else None
    return UpdateResult(up.populated, up.failed, warning)


def _nonempty(path: Path) -> bool:
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


class _Updater:
    """The work of :func:`update_smudged`, opening what it needs on first use."""

    def __init__(self, repo: AnnexRepo, *, restage: bool) -> None:
        if repo.bare:
            raise AnnexError("a bare repository has no unlocked files")
        self.repo = repo
        self.restage = restage
        self.populated: list[str] = []
        self.failed: list[str] = []
        self.restage_result: RestageResult | None = None
        self._db: KeysDb | None = None
        self._uc: UnlockedContent | None = None

    @cached_property
    def store(self) -> ObjectStore:
        from annexsync.annex.objects import ObjectStore

        return ObjectStore(self.repo.annex_dir, bare=False)

    def may_have_content(self) -> bool:
        """False when the object store holds nothing (so no file can be filled)."""
        try:
            with os.scandir(self.repo.annex_path("objects")) as it:
                return any(True for _ in it)
        except OSError:
            return False

    def db(self) -> KeysDb:
        if self._db is None:
            from annexsync.annex.keysdb import KeysDb

            self._db = KeysDb(self.repo)
        return self._db

    def content(self) -> UnlockedContent:
        if self._uc is None:
            from annexsync.annex.unlocked import UnlockedContent

            self._uc = UnlockedContent(self.repo, db=self.db(), restage=self.restage)
        return self._uc

    def reconcile(self) -> None:
        # UnlockedContent.reconcile, without its imports unless a file is to be filled.
        def on_pointer(change: StagedChange) -> None:
            if self.store.has(change.key):
                self.content().populate_file(change.key, change.file)

        self.db().reconcile_staged(on_pointer)

    def fill_logged(self, logf: Path) -> None:
        from annexsync.annex.locks import lock_file

        with lock_file(self.repo.annex_path("smudge.lck"), exclusive=True):
            try:
                raw = logf.read_bytes()
            except FileNotFoundError:
                raw = b""
            for line in raw.split(b"\n"):
                entry = _parse_smudge_line(line)
                if entry is None:
                    continue
                key, f = entry
                if not self.store.has(key):
                    continue
                if self.content().populate_file(key, f):
                    self.populated.append(f)
                    continue
                from annexsync.annex.worktree import read_pointer_file

                if read_pointer_file(self.repo.top / f) == key:
                    self.failed.append(f)
            if raw:
                logf.write_bytes(b"")

    def close(self) -> None:
        try:
            if self._uc is not None:
                self._uc.close()  # restages (after flushing the database)
                self.restage_result = self._uc.restage_result
            else:
                if self._db is not None:
                    self._db.flush()
                if self.restage and _restage_pending(self.repo):
                    from annexsync.annex.restage import restage

                    self.restage_result = restage(self.repo)
        finally:
            if self._db is not None:
                self._db.close()

    def __enter__(self) -> _Updater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _restage_pending(repo: AnnexRepo) -> bool:
    """:func:`annexsync.annex.restage.pending` without importing it."""
    return _nonempty(repo.annex_path("restage.log")) or _nonempty(
        repo.annex_path("restage.old"))


# --------------------------------------------------------------- helpers


class IndexLookup:
    """The staged blob (id, size) of a path, and the key it points to.

    Small requests go through one ``cat-file --batch-check`` (restarted when the index
    file changes, since cat-file reads the index once). After a few requests in one
    process the whole index is listed once (``ls-files -s``): then a path's blob id
    is known without asking git, and when the keys database associates the path
    with a key whose pointer blob has exactly that id, the key is known too. That
    takes git out of the per-file path for bulk ``git add``.
    """

    SNAPSHOT_AFTER = 8

    def __init__(self, repo: AnnexRepo) -> None:
        from pathlib import Path

        self.repo = repo
        env_index = os.environ.get("GIT_INDEX_FILE")
        self._index = Path(env_index) if env_index else repo.git_dir / "index"
        if not self._index.is_absolute():
            self._index = repo.top / self._index
        self._proc: Popen[bytes] | None = None
        self._sig: tuple[int, int, int] | None = None
        self._requests = 0
        self._snapshot: dict[str, tuple[str, str]] | None = None  # path -> (mode, oid)
        self._snap_sig: tuple[int, int, int] | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._index)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def staged(self, path: str, candidates: Iterable[Key] = ()) -> tuple[
            tuple[str, int] | None, Key | None]:
        """``((oid, size) or None, key or None)`` of the index entry of ``path``."""
        from annexsync.annex.keys import pointer_content
        from annexsync.git.objects import blob_oid

        self._requests += 1
        sig = self._signature()
        if self._requests > self.SNAPSHOT_AFTER and "\n" not in path:
            if self._snapshot is None or self._snap_sig != sig:
                self._load_snapshot(sig)
            assert self._snapshot is not None
            entry = self._snapshot.get(path)
            if entry is None:
                return None, None
            mode, oid = entry
            if mode in ("100644", "100755"):
                for k in candidates:
                    ptr = pointer_content(k)
                    if blob_oid(ptr) == oid:
                        return (oid, len(ptr)), k
        found = self._lookup(path, sig)
        return found, self._key(found)

    def _load_snapshot(self, sig: tuple[int, int, int] | None) -> None:
        snap: dict[str, tuple[str, str]] = {}
        raw = self.repo.git.run("ls-files", "-s", "-z", "--full-name")
        for rec in raw.split(b"\0"):
            if not rec:
                continue
            meta, p = rec.split(b"\t", 1)
            mode, oid, stage = meta.decode().split(" ")
            if stage == "0":
                snap[p.decode("utf-8", "surrogateescape")] = (mode, oid)
        self._snapshot = snap
        self._snap_sig = sig

    def _lookup(self, path: str, sig: tuple[int, int, int] | None) -> tuple[str, int] | None:
        if "\n" in path:
            from annexsync.annex.worktree import staged_literal

            for s in staged_literal(self.repo.git, [path]):
                if s.stage == 0 and s.mode != "160000":
                    info = self.repo.catfile.get(s.oid)
                    return (s.oid, len(info.data)) if info else None
            return None
        if self._proc is None or sig != self._sig or self._proc.poll() is not None:
            self.close()
            self._proc = self.repo.git.popen("cat-file", "--batch-check")
            self._sig = sig
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b":" + path.encode("utf-8", "surrogateescape") + b"\n")
        proc.stdin.flush()
        parts = proc.stdout.readline().rstrip(b"\n").split(b" ")
        if len(parts) != 3 or parts[1] != b"blob":
            return None
        return parts[0].decode(), int(parts[2])

    def _key(self, entry: tuple[str, int] | None) -> Key | None:
        """The key an index blob points to (annex link or pointer file), if any."""
        from annexsync.annex.keys import parse_pointer
        from annexsync.annex.keysdb import MAX_POINTER_READ

        if entry is None or entry[1] > MAX_POINTER_READ:
            return None
        data = self.repo.catfile.get_blob(entry[0])
        return parse_pointer(data) if data is not None else None

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for st in (proc.stdin, proc.stdout, proc.stderr):
                if st:
                    st.close()
            proc.wait()


class Spool:
    """Content kept for echoing back: in memory, spilling to a temp file when big.

    ``tmp`` gives the scratch directory when the content gets big (so a spool that
    stays small never opens the repository); None keeps everything in memory.
    """

    def __init__(self, tmp: Callable[[], OtherTmp | None]) -> None:
        self._tmp = tmp
        self._chunks: list[bytes] = []
        self._size = 0
        self._fd = -1
        self._path: Path | None = None

    def write(self, data: bytes) -> None:
        if self._fd < 0 and self._size + len(data) > SPOOL_MEMORY and \
                (tmp := self._tmp()) is not None:
            self._fd, self._path = tmp.mkstemp(prefix="spool.")
            for c in self._chunks:
                _write_all(self._fd, c)
            self._chunks = []
        if self._fd >= 0:
            _write_all(self._fd, data)
        else:
            self._chunks.append(data)
        self._size += len(data)

    def output(self) -> Iterable[bytes]:
        if self._fd < 0:
            return self._chunks
        os.close(self._fd)
        self._fd = -1
        assert self._path is not None
        return file_chunks(self._path, delete=True)

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._path is not None:
            _unlink(self._path)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def file_chunks(path: Path, *, delete: bool) -> Iterator[bytes]:
    """The content of a file in 64 KiB chunks; the file is removed afterwards."""
    try:
        with open(path, "rb") as fh:
            while data := fh.read(65516 * 16):
                yield data
    finally:
        if delete:
            _unlink(path)


class _Stored:
    __slots__ = ("key", "nbytes", "tmp", "same_as_git_blob")

    def __init__(self, key: Key | None, nbytes: int, tmp: Path | None,
                 same_as_git_blob: bool = False) -> None:
        self.key = key
        self.nbytes = nbytes
        self.tmp = tmp
        self.same_as_git_blob = same_as_git_blob


def smudge_content(pathname: str, content: Iterator[bytes],
                   note: Callable[[Key, str], None],
                   tmp: Callable[[], OtherTmp | None]) -> Iterable[bytes]:
    """The smudge filter: the blob as is; ``note`` is told about pointer files."""
    head, complete = _read_head(content, MAX_POINTER_SIZE + 1)
    if complete:
        kind, key = classify_head(head, True)
        if kind is PointerKind.POINTER and key is not None and not outside_repo(pathname):
            note(key, pathname)
        return [head]
    return passthrough(head, content, tmp)


def passthrough(head: bytes, content: Iterator[bytes],
                tmp: Callable[[], OtherTmp | None]) -> Iterable[bytes]:
    """``head`` and the rest of the content, unchanged (spooled)."""
    spool = Spool(tmp)
    if head:
        spool.write(head)
    for chunk in content:
        spool.write(chunk)
    return spool.output()


def _empty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as it:
            return not any(True for _ in it)
    except OSError:  # missing (or unreadable: then Branch.commit would fail too)
        return True


# --------------------------------------------------------------- the filter


class AnnexFilter:
    """The clean/smudge handler for one git command (long-running) or one file.

    The repository must be initialised. Its parts are opened on first use (see
    "Start-up" in the module header): a smudge of a pointer only needs the keys
    database, a clean needs the rest.
    """

    def __init__(self, repo: AnnexRepo, *, long_running: bool,
                 stderr: IO[str] | None = None) -> None:
        if repo.bare:
            raise AnnexError("the annex filter needs a work tree")
        self.repo = repo
        self.top = repo.top
        self.long_running = long_running
        self.err = stderr or sys.stderr
        cfg = repo.config
        self.uuid = repo.uuid
        self.thin = cfg.get_bool("annex.thin", False)
        self.dotfiles = cfg.get_bool("annex.dotfiles", False)
        self.gitaddtoannex = cfg.get_bool("annex.gitaddtoannex", True)
        self.git_largefiles = cfg.get("annex.largefiles")
        self.default_backend = cfg.get("annex.backend")
        self._attrs: CheckAttr | None = None
        self._attr_cache: tuple[str, dict[str, str | None]] | None = None
        self._exprs: dict[str, Expr | None] = {}
        self._present: dict[Key, None] = {}
        self._smudged: list[tuple[Key, str]] = []
        self._prev_done_ns: int | None = None
        self._made_dirs: set[Path] = set()

    # -- parts, opened on first use ------------------------------------------------
    def _opened(self, part: str) -> bool:
        return part in self.__dict__  # a cached_property that has been computed

    @cached_property
    def store(self) -> ObjectStore:
        from annexsync.annex.objects import ObjectStore

        return ObjectStore(self.repo.annex_dir, bare=False)

    @cached_property
    def db(self) -> KeysDb:
        from annexsync.annex.keysdb import KeysDb

        return KeysDb(self.repo)

    @cached_property
    def tmp(self) -> OtherTmp:
        from annexsync.annex.unlocked import OtherTmp

        return OtherTmp(self.repo)

    @cached_property
    def index(self) -> IndexLookup:
        return IndexLookup(self.repo)

    @cached_property
    def branch(self) -> AnnexBranch:
        from annexsync.annex.branch import AnnexBranch

        return AnnexBranch(self.repo)

    @cached_property
    def largefiles(self) -> LargeFiles:
        from annexsync.annex.largefiles import LargeFiles

        return LargeFiles(self.repo, self.branch)

    @cached_property
    def content(self) -> UnlockedContent:
        from annexsync.annex.unlocked import UnlockedContent

        return UnlockedContent(self.repo, db=self.db, restage=False)

    def _tmp(self) -> OtherTmp:
        return self.tmp

    # -- protocol hooks ------------------------------------------------------------
    def request_done(self) -> None:
        # Never keep a keys database transaction open between requests: git may run
        # a hook (smudge --update) that needs the database before it stops us.
        if self._opened("db"):
            self.db.flush()
        if self._smudged:
            smudge_log_append(self.repo, self._smudged)
            self._smudged = []
        if len(self._present) >= 5000:
            self._log_present()
        self._prev_done_ns = time.time_ns()

    def close(self) -> None:
        try:
            self.request_done()
            self._log_present()
            # Branch.commit commits the journal and does nothing when it is empty:
            # look first, without importing the branch code or taking its lock.
            if self.long_running and (self._opened("branch") or not _empty_dir(
                    self.repo.annex_path("journal"))):
                self.branch.commit()
        finally:
            for part in ("content", "db", "index", "tmp"):
                if self._opened(part):
                    getattr(self, part).close()
            if self._attrs is not None:
                self._attrs.close()
            self.repo.close()

    def _warn(self, pathname: str, msg: str) -> None:
        self.err.write(f"annexsync: {pathname}: {msg}\n")
        self.err.flush()

    # -- smudge --------------------------------------------------------------------
    def note_smudged(self, key: Key, pathname: str) -> None:
        """A pointer to ``key`` was checked out as ``pathname`` (for ``smudge --update``)."""
        self.db.add_associated(key, pathname)
        self._smudged.append((key, pathname))

    def smudge(self, pathname: str, content: Iterator[bytes]) -> Iterable[bytes]:
        return smudge_content(pathname, content, self.note_smudged, self._tmp)

    # -- clean ---------------------------------------------------------------------
    def clean(self, pathname: str, content: Iterator[bytes]) -> Iterable[bytes]:
        prev = self._prev_done_ns
        if outside_repo(pathname):
            return self._passthrough(b"", content)
        from annexsync.annex.keys import pointer_content
        from annexsync.annex.keysdb import InodeCache

        head, complete = _read_head(content, MAX_POINTER_SIZE + 1)
        kind, pkey = classify_head(head, complete)
        if kind is PointerKind.POINTER and pkey is not None:
            self._recover_pointer(pkey, pathname)
            return [head]
        if kind is PointerKind.APPENDED:
            self._warn(pathname, "looks like a git-annex pointer file that has had other "
                                 "content appended to it; treating it as ordinary content")
        elif kind is PointerKind.BAD_KEY:
            self._warn(pathname, "looks like a git-annex pointer file, but the key it names "
                                 "is not valid; treating it as ordinary content")
        path = self.top / pathname
        st1 = _lstat_regular(path)
        ic1 = InodeCache.from_stat(st1) if st1 is not None else None
        staged, oldkey = self.index.staged(pathname, self.db.associated_keys(pathname))
        known = self.db.keys_with_inode(ic1) if ic1 is not None else []
        cached = self._cached_key(known, oldkey, pathname)
        if cached is not None:
            for _ in content:
                pass
            self.db.add_associated(cached, pathname)
            return [pointer_content(cached)]
        size = st1.st_size if st1 is not None else None
        dotfile = is_dotfile(pathname)
        # The annex.largefiles verdict only when should_annex looks at it (as git-annex
        # does): it may cost a git check-attr, a config.log read and the expression
        # language's import.
        wants_verdict = not known and self.gitaddtoannex and not (
            dotfile and not self.dotfiles)
        action = should_annex(
            largefiles=self._largefiles(pathname, size) if wants_verdict else None,
            was_annexed=oldkey is not None,
            dotfile=dotfile,
            annex_dotfiles=self.dotfiles,
            gitaddtoannex=self.gitaddtoannex,
            inode_known=bool(known),
            staged_git_blob_same_size=(oldkey is None and staged is not None
                                       and size is not None and staged[1] == size),
        )
        if action is CleanAction.GIT:
            return self._passthrough(head, content)
        backend = self._backend_for(oldkey, pathname)
        blob = staged if action is CleanAction.ANNEX_UNLESS_GIT_BLOB else None
        stored = self._ingest(head, content, backend, pathname, st1, blob)
        if stored.same_as_git_blob:
            assert stored.tmp is not None
            return file_chunks(stored.tmp, delete=True)
        assert stored.key is not None
        key = stored.key
        from annexsync.annex.unlocked import same_file_state, settled

        st2 = _lstat_regular(path)
        trusted = (prev is not None and st1 is not None and st2 is not None
                   and same_file_state(st1, st2) and st1.st_size == stored.nbytes
                   and settled(st1, prev))
        self._store(key, stored, path, st1, trusted)
        if self.thin and oldkey is not None and oldkey != key and st1 is not None:
            self._drop_modified_thin_object(oldkey, st1)
        self.db.add_associated(key, pathname)
        if trusted and ic1 is not None:
            self.db.add_inode_caches(key, [ic1])
        self._present[key] = None
        return [pointer_content(key)]

    def _passthrough(self, head: bytes, content: Iterator[bytes]) -> Iterable[bytes]:
        return passthrough(head, content, self._tmp)

    def _cached_key(self, known: list[Key], oldkey: Key | None, pathname: str) -> Key | None:
        """The stat cache: a key whose recorded inode cache is the file's current one."""
        if not known:
            return None
        if oldkey is not None and oldkey in known:
            return oldkey
        if len(known) != 1 or not self.store.has(known[0]):
            return None
        k = known[0]
        # Only answer the key hashing would give: same backend, same extension.
        from annexsync.annex.keys import key_extension

        backend = self._backend_for(oldkey, pathname)
        if k.backend != backend.name or not backend.is_hash:
            return None
        if backend.has_extension and k.hash_digest is not None and \
                k.name[len(k.hash_digest):] != key_extension(pathname):
            return None
        return k

    def _largefiles(self, pathname: str, size: int | None) -> bool | None:
        text = self.git_largefiles
        if text is None:
            attr = self._attr(pathname, "annex.largefiles")
            text = attr if attr not in (None, "set", "unset") else None
        if text is None:
            text = self.largefiles.configured()
        if text is None:
            return None
        from annexsync.policy.expression import MatchContext, parse

        if text not in self._exprs:
            try:
                self._exprs[text] = parse(text, mode="largefiles")
            except AnnexError as e:
                self._warn(pathname, f"bad annex.largefiles ({e}); ignoring it")
                self._exprs[text] = None
        expr = self._exprs[text]
        if expr is None:
            return None
        try:
            return expr.evaluate(MatchContext(file=pathname, size=size))
        except AnnexError as e:
            self._warn(pathname, f"cannot evaluate annex.largefiles ({e})")
            return None

    def _attr(self, pathname: str, name: str) -> str | None:
        if "\n" in pathname:
            return None
        if self._attr_cache is None or self._attr_cache[0] != pathname:
            if self._attrs is None:
                from annexsync.git.attributes import CheckAttr

                self._attrs = CheckAttr(self.repo.git, ["annex.largefiles", "annex.backend"])
            self._attr_cache = (pathname, self._attrs.get(pathname))
        return self._attr_cache[1].get(name)

    def _backend_for(self, oldkey: Key | None, pathname: str) -> Backend:
        """The old key's backend when it can make keys here, else the configured one."""
        from annexsync.annex.backends import BACKENDS, get_backend

        if oldkey is not None:
            b = BACKENDS.get(oldkey.backend)
            if b is not None:
                return b
        name = self.default_backend
        if name is None:
            attr = self._attr(pathname, "annex.backend")
            name = attr if attr not in (None, "set", "unset") else None
        try:
            return get_backend(name or "SHA256E")
        except AnnexError:
            return get_backend("SHA256E")

    def _ingest(self, head: bytes, content: Iterator[bytes], backend: Backend,
                pathname: str, st1: os.stat_result | None,
                blob: tuple[str, int] | None) -> _Stored:
        import hashlib

        from annexsync.annex.unlocked import key_for

        hasher = backend.new_hasher() if backend.is_hash else None
        gsha = hashlib.sha1(b"blob %d\0" % blob[1], usedforsecurity=False) if blob else None
        fd, tmp = self.tmp.mkstemp(prefix="clean.")
        n = 0
        try:
            for chunk in _chain(head, content):
                if hasher is not None:
                    hasher.update(chunk)
                if gsha is not None:
                    gsha.update(chunk)
                _write_all(fd, chunk)
                n += len(chunk)
        except BaseException:
            os.close(fd)
            _unlink(tmp)
            raise
        os.close(fd)
        if blob is not None and gsha is not None and n == blob[1] and \
                gsha.hexdigest() == blob[0]:
            return _Stored(None, n, tmp, same_as_git_blob=True)
        mtime_ns = st1.st_mtime_ns if st1 is not None else time.time_ns()
        try:
            key = key_for(backend, hasher.hexdigest() if hasher else None, n, pathname,
                          mtime_ns)
        except BaseException:
            _unlink(tmp)
            raise
        return _Stored(key, n, tmp)

    def _store(self, key: Key, stored: _Stored, path: Path, st1: os.stat_result | None,
               trusted: bool) -> None:
        from annexsync.annex.keysdb import InodeCache

        tmp = stored.tmp
        assert tmp is not None
        try:
            if self.store.has(key):
                return
            executable = st1 is not None and bool(st1.st_mode & 0o100)
            if self.thin and trusted:
                obj = self.store.path_for(key)
                obj.parent.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.mkdir(obj.parent)
                except FileExistsError:
                    os.chmod(obj.parent, 0o755)
                try:
                    os.link(path, obj)
                    after = _lstat_regular(path)
                    if after is None or st1 is None or after.st_mtime_ns != st1.st_mtime_ns \
                            or after.st_size != st1.st_size:
                        os.unlink(obj)
                    else:
                        os.chmod(obj.parent, 0o555)
                        self.db.add_inode_caches(key, [InodeCache.of_path(obj)])
                        return
                except OSError:
                    pass
            os.chmod(tmp, 0o555 if executable else 0o444)
            obj = self._move_in(key, tmp)
            stored.tmp = None
            self.db.add_inode_caches(key, [InodeCache.of_path(obj)])
        finally:
            if stored.tmp is not None:
                _unlink(stored.tmp)
                stored.tmp = None

    def _move_in(self, key: Key, tmp: Path) -> Path:
        """Rename verified content into the store (hash directories made once)."""
        dest = self.store.path_for(key)
        keydir = dest.parent
        hashdir = keydir.parent
        if hashdir not in self._made_dirs:
            hashdir.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(hashdir)
        try:
            os.mkdir(keydir)
        except FileExistsError:
            os.chmod(keydir, 0o755)
        os.rename(tmp, dest)
        os.chmod(keydir, 0o555)
        return dest

    def _drop_modified_thin_object(self, oldkey: Key, st1: os.stat_result) -> None:
        # annex.thin: the old object was a hard link to this file, so it now holds the
        # new content. It is not oldkey's content any more; take it out of the store.
        from annexsync.annex.location import log_path, now
        from annexsync.annex.logs import set_presence

        obj = self.store.find(oldkey)
        if obj is None:
            return
        try:
            ost = os.stat(obj)
        except OSError:
            return
        if ost.st_ino != st1.st_ino or ost.st_dev != st1.st_dev:
            return
        try:
            os.chmod(obj.parent, 0o755)
            os.unlink(obj)
            for d in (obj.parent, obj.parent.parent, obj.parent.parent.parent):
                os.rmdir(d)
        except OSError:
            pass
        self.db.remove_inode_caches(oldkey)
        with self.branch.journal.locked():
            self.branch.change(log_path(oldkey),
                               lambda old: set_presence(old, self.uuid, "0", now()))

    def _recover_pointer(self, key: Key, pathname: str) -> None:
        # A pointer file whose content is here (a copied pointer, or a race between
        # a move and a get): fill it in; the index is restaged later.
        if not self.store.has(key):
            return
        try:
            self.content.populate_file(key, pathname)
        except OSError as e:
            self._warn(pathname, f"could not fill in content: {e.strerror}")

    def _log_present(self) -> None:
        keys = list(self._present)
        self._present = {}
        if not keys:
            return
        from annexsync.annex.location import log_path, log_presence_many, now
        from annexsync.annex.logs import set_presence

        if self.long_running:
            # One git-annex branch commit for the batch, no journal file per key.
            log_presence_many(self.branch, keys, self.uuid, True, now())
            return
        paths = {k: log_path(k.without_chunk()) for k in keys}
        ts = now()
        with self.branch.journal.locked():
            data = self.branch.read_many(paths.values())
            for p in dict.fromkeys(paths.values()):
                new = set_presence(data[p], self.uuid, "1", ts)
                if new is not None and new != data[p]:
                    self.branch.journal.write(p, new)


class LazyFilter:
    """``filter-process``'s handler: opens the repository only when a request needs it.

    git waits for the handshake, and a checkout or merge mostly smudges ordinary
    content, which is answered as is. So the repository is found (and its config
    read) on the first request that has to note a pointer, clean a file, or spool
    content too big for memory; then requests go to an :class:`AnnexFilter`, or,
    in a repository that is not an initialised one with a work tree, content passes
    through unchanged. A failure to open the repository fails that request (git is
    told ``status=error``) and is tried again on the next one.
    """

    def __init__(self, path: str = ".", *, long_running: bool = True,
                 stderr: IO[str] | None = None) -> None:
        self._path = path
        self._long_running = long_running
        self._stderr = stderr
        self._opened = False
        self._filter: AnnexFilter | None = None

    def annex(self) -> AnnexFilter | None:
        """The filter of the repository (opened now if need be); None: pass through."""
        if not self._opened:
            from annexsync.annex.repo import AnnexRepo

            repo = AnnexRepo.find(self._path)
            if repo.initialized and not repo.bare:
                self._filter = AnnexFilter(repo, long_running=self._long_running,
                                           stderr=self._stderr)
            self._opened = True
        return self._filter

    def _tmp(self) -> OtherTmp | None:
        f = self.annex()
        return f.tmp if f is not None else None

    def _note(self, key: Key, pathname: str) -> None:
        f = self.annex()
        if f is not None:
            f.note_smudged(key, pathname)

    def smudge(self, pathname: str, content: Iterator[bytes]) -> Iterable[bytes]:
        return smudge_content(pathname, content, self._note, self._tmp)

    def clean(self, pathname: str, content: Iterator[bytes]) -> Iterable[bytes]:
        if outside_repo(pathname):
            return passthrough(b"", content, self._tmp)
        f = self.annex()
        if f is None:
            return passthrough(b"", content, self._tmp)
        return f.clean(pathname, content)

    def request_done(self) -> None:
        if self._filter is not None:
            self._filter.request_done()

    def close(self) -> None:
        if self._filter is not None:
            self._filter.close()


def _lstat_regular(path: Path) -> os.stat_result | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _read_head(content: Iterator[bytes], limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes (or a bit more) of content, and whether that is all of it."""
    parts: list[bytes] = []
    n = 0
    for chunk in content:
        parts.append(chunk)
        n += len(chunk)
        if n >= limit:
            return b"".join(parts), False
    return b"".join(parts), True


def _chain(head: bytes, content: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from content
