"""Adding work-tree files: large ones into the annex, small ones into git.

Theory of operation
-------------------
1. *Select*: one ``ls-files --others --modified --exclude-standard`` over the requested
   paths gives new and changed files, honouring ``.gitignore``.
   Symlinks are staged as symlinks (never annexed). Each regular file is classified
   large or small by ``annex.largefiles`` (git config, then ``.gitattributes``, then the
   git-annex branch's config.log); with none configured every file is large except
   dotfiles, as ``git annex add`` does.
2. *Ingest* a large file without copying it: hash it in place (one read), check that
   nothing changed while it was read (same inode, size, mtime and ctime), hard-link
   it into the object store, check again, make it read-only and atomically replace
   the work-tree name by a relative symlink. The work-tree name has the content at
   every moment, so a crash never makes a file disappear; any failure removes the
   store's link again. A file that changed while being hashed is skipped, never
   stored under a wrong key.
   *Unlocked* (``add --unlocked``, ``annex.addunlocked``): the file stays a regular
   file; its content is copied into the store while it is hashed (hard-linked with
   ``annex.thin``; see :func:`annexsync.annex.unlocked.ingest_copy`), the index gets
   the pointer blob ``/annex/objects/KEY\n`` (mode 100644/100755), the keys database
   records the file and its inode cache, and the paths are refreshed in the index
   (``update-index --refresh``, answered from that cache) so ``git status`` is clean.
3. *Record*: symlink blobs are streamed into one ``fast-import``, small files into one
   ``hash-object --stdin-paths``; the index is updated by one
   ``update-index --index-info``; location log lines go through the journal and are
   committed to the git-annex branch in one commit at the end.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from annexsync.annex.backends import get_backend, hash_file
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key, parse_symlink_target, pointer_content, symlink_target
from annexsync.annex.keysdb import KeysDb
from annexsync.annex.largefiles import LargeFiles
from annexsync.annex.location import log_presence_many, now
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.restage import refresh_paths
from annexsync.annex.unlocked import Ingested, OtherTmp, addunlocked_matcher, ingest_copy
from annexsync.annex.worktree import unlocked_in_index
from annexsync.errors import AnnexError
from annexsync.git.index import MODE_EXECUTABLE, MODE_FILE, MODE_SYMLINK, IndexEntry, ls_files
from annexsync.git.index import update_index as git_update_index
from annexsync.git.objects import BlobWriter, hash_paths
from annexsync.git.runner import GitError


@dataclass
class AddResult:
    """What happened to one file."""

    file: str
    success: bool
    key: Key | None = None
    note: str | None = None
    error: str | None = None
    input: str = ""


@dataclass
class Progress:
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    started: float = field(default_factory=time.monotonic)


INGEST_THREADS = 4


class ChangedWhileAdding(AnnexError):
    """The file was modified while it was being hashed or moved."""


def _same_content_stat(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino == b.st_ino and a.st_dev == b.st_dev and a.st_size == b.st_size
            and a.st_mtime_ns == b.st_mtime_ns)


class Adder:
    """Adds files to one repository; create one per command invocation."""

    def __init__(self, repo: AnnexRepo, branch: AnnexBranch, *, backend: str | None = None,
                 force_large: bool = False, force_small: bool = False,
                 progress: Callable[[Progress], None] | None = None,
                 unlocked: bool | None = None) -> None:
        """``unlocked``: add large files unlocked (True), locked (False), or as
        ``annex.addunlocked`` says (None, the default)."""
        self.repo = repo
        self.branch = branch
        cfg = repo.config
        self.backend = get_backend(backend or cfg.get("annex.backend") or "SHA256E")
        self.store = ObjectStore(repo.annex_dir, bare=repo.bare)
        self.largefiles = LargeFiles(repo, branch)
        self.force_large = force_large
        self.force_small = force_small
        self.dotfiles = cfg.get_bool("annex.dotfiles", False)
        self.progress_cb = progress
        self.progress = Progress()
        self.uuid = repo.uuid
        self._made_dirs: set[str] = set()
        self._key_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.top = str(repo.top)
        self.annex_dir = str(repo.annex_dir)
        self.wants_unlocked = addunlocked_matcher(repo, unlocked)
        self._unlocked: list[tuple[str, Ingested]] = []
        self._tmp: OtherTmp | None = None

    # -- selection -----------------------------------------------------------------
    def candidates(self, paths: Sequence[str]) -> list[tuple[str, str]]:
        """(file, input path) pairs of files that need adding, in ls-files order."""
        git = self.repo.git
        specs = [p if p else "." for p in paths] or ["."]
        # One pass: untracked (not ignored) files and tracked files that changed.
        seen = dict.fromkeys(ls_files(git, "--others", "--modified", "--exclude-standard",
                                      paths=specs))
        out: list[tuple[str, str]] = []
        for f in seen:
            out.append((f, _input_for(f, specs)))
        return out

    # -- the whole command -----------------------------------------------------------
    def add(self, paths: Sequence[str]) -> Iterator[AddResult]:
        """Add the files under ``paths`` (relative to the top); yield a result per file."""
        top = self.repo.top
        files = self.candidates(paths)
        plan: list[tuple[str, str, os.stat_result]] = []
        for f, inp in files:
            try:
                st = os.lstat(top / f)
            except FileNotFoundError:
                continue  # deleted: not our business (git annex add ignores deletions)
            except OSError as e:
                yield AddResult(f, False, error=f"{e.strerror}", input=inp)
                continue
            plan.append((f, inp, st))
        self.progress.files_total = len(plan)
        self.progress.bytes_total = sum(st.st_size for _, _, st in plan
                                        if stat.S_ISREG(st.st_mode))
        regular = [f for f, _, st in plan if stat.S_ISREG(st.st_mode)]
        large = self.largefiles.classify(regular, {f: st.st_size for f, _, st in plan},
                                         force_large=self.force_large,
                                         force_small=self.force_small,
                                         dotfiles=self.dotfiles)
        # A modified file that is unlocked in the index stays unlocked.
        staged_unlocked = unlocked_in_index(self.repo, [f for f in regular if large.get(f, True)]
                                            ) if not self.repo.bare else {}
        index: list[IndexEntry] = []
        small: list[tuple[str, str, os.stat_result]] = []
        results: list[AddResult] = []
        ts = now()
        added: list[Key] = []
        # Locked large files are ingested by a few threads (hashing and the metadata
        # syscalls release the GIL), results kept in order; unlocked ones stay serial.
        locked = [(f, st) for f, _, st in plan if stat.S_ISREG(st.st_mode)
                  and large.get(f, True) and not self.repo.bare
                  and not (f in staged_unlocked or self.wants_unlocked(f, st.st_size))]
        if self.repo.bare:
            locked = [(f, st) for f, _, st in plan
                      if stat.S_ISREG(st.st_mode) and large.get(f, True)]
        ingested: dict[str, tuple[Key, str] | BaseException] = {}
        if len(locked) > 8:
            with ThreadPoolExecutor(INGEST_THREADS) as pool:
                for (f, _), res in zip(locked, pool.map(self._ingest_catch, locked),
                                       strict=True):
                    ingested[f] = res
        with BlobWriter(self.repo.git) as blobs:
            for f, inp, st in plan:
                if stat.S_ISLNK(st.st_mode):
                    try:
                        target = os.readlink(top / f)
                    except OSError as e:
                        results.append(AddResult(f, False, error=e.strerror, input=inp))
                        continue
                    key = parse_symlink_target(target)
                    if key is not None:
                        # An annex link moved to another directory points nowhere:
                        # fix it (as git-annex's watcher does) before staging it.
                        target = self._fix_link(f, key, target)
                    oid = blobs.add(os.fsencode(target))
                    index.append(IndexEntry(MODE_SYMLINK, oid, f))
                    results.append(AddResult(f, True, key=key, note="symlink", input=inp))
                elif not stat.S_ISREG(st.st_mode):
                    results.append(AddResult(f, False, error="not a regular file", input=inp))
                elif large.get(f, True) and not self.repo.bare and (
                        f in staged_unlocked or self.wants_unlocked(f, st.st_size)):
                    try:
                        ing = self._ingest_unlocked(f)
                    except (AnnexError, OSError) as e:
                        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                        results.append(AddResult(f, False, error=msg, input=inp))
                        self._advance(st.st_size)
                        continue
                    mode = MODE_EXECUTABLE if ing.executable else MODE_FILE
                    index.append(IndexEntry(mode, blobs.add(pointer_content(ing.key)), f))
                    added.append(ing.key)
                    results.append(AddResult(f, True, key=ing.key, input=inp))
                    self._advance(st.st_size)
                elif large.get(f, True):
                    try:
                        done = ingested.get(f)
                        if isinstance(done, BaseException):
                            raise done
                        key, target = done if done is not None else self._ingest(f, st)
                    except (AnnexError, OSError) as e:
                        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                        results.append(AddResult(f, False, error=msg, input=inp))
                        self._advance(st.st_size)
                        continue
                    oid = blobs.add(os.fsencode(target))
                    index.append(IndexEntry(MODE_SYMLINK, oid, f))
                    added.append(key)
                    results.append(AddResult(f, True, key=key, input=inp))
                    self._advance(st.st_size)
                else:
                    small.append((f, inp, st))
            blobs.flush()
            if small:
                oids = self._hash_small([f for f, _, _ in small])
                for (f, inp, st), oid in zip(small, oids, strict=True):
                    mode = MODE_EXECUTABLE if st.st_mode & 0o111 else MODE_FILE
                    index.append(IndexEntry(mode, oid, f))
                    note = ("dotfile; adding content to git repository" if _is_dotfile(f)
                            and not self.force_small else
                            "non-large file; adding content to git repository")
                    results.append(AddResult(f, True, note=note, input=inp))
                    self._advance(st.st_size)
            self._update_index(index)
        self._finish_unlocked()
        # One commit for the whole batch (with anything already in the journal).
        log_presence_many(self.branch, added, self.uuid, True, ts)
        yield from results

    def _ingest_unlocked(self, f: str) -> Ingested:
        """Copy (annex.thin: hard-link) a large file into the store; it stays in place."""
        if self._tmp is None:
            self._tmp = OtherTmp(self.repo)
        thin = self.repo.config.get_bool("annex.thin", False)
        ing = ingest_copy(self.repo, self.store, self._tmp, f, self.backend, thin=thin)
        self._unlocked.append((f, ing))
        return ing

    def _finish_unlocked(self) -> None:
        """Record unlocked files in the keys database and refresh their index stat."""
        if self._tmp is not None:
            self._tmp.close()
            self._tmp = None
        if not self._unlocked:
            return
        done, self._unlocked = self._unlocked, []
        with KeysDb(self.repo) as db:
            for f, ing in done:
                db.add_associated(ing.key, f)
                db.add_inode_caches(ing.key, [ing.work_cache, ing.object_cache])
        # The pointers were staged without stat info; let git (through the annex
        # filter, which answers from the inode caches just recorded) fill it in.
        refresh_paths(self.repo, [f for f, _ in done])

    def _advance(self, nbytes: int) -> None:
        self.progress.files_done += 1
        self.progress.bytes_done += nbytes
        if self.progress_cb is not None:
            self.progress_cb(self.progress)

    def _hash_small(self, files: list[str]) -> list[str]:
        plain = [f for f in files if "\n" not in f]
        oids = dict(zip(plain, hash_paths(self.repo.git, plain), strict=True))
        odd = [f for f in files if "\n" in f]
        if odd:
            with BlobWriter(self.repo.git) as w:
                for f in odd:
                    oids[f] = w.add((self.repo.top / f).read_bytes())
        return [oids[f] for f in files]

    def _update_index(self, entries: list[IndexEntry]) -> None:
        # git-annex or a user's git may hold index.lock for a moment: retry briefly.
        delay = 0.02
        for attempt in range(12):
            try:
                git_update_index(self.repo.git, entries)
                return
            except GitError as e:
                if "index.lock" not in e.stderr or attempt == 11:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _fix_link(self, f: str, key: Key, target: str) -> str:
        """The right relative target for an annex link at ``f``; rewrites a wrong one."""
        right = symlink_target(key, f)
        if right != target:
            path = os.path.join(self.top, f)
            tmp = _tmp_link_path(path)
            os.symlink(right, tmp)
            os.replace(tmp, path)
        return right

    # -- one large file ------------------------------------------------------------------
    def _ingest_catch(self, item: tuple[str, os.stat_result]) -> tuple[Key, str] | BaseException:
        try:
            return self._ingest(*item)
        except (AnnexError, OSError) as e:
            return e

    def _key_lock(self, key: Key) -> threading.Lock:
        with self._locks_guard:
            return self._key_locks.setdefault(str(key), threading.Lock())

    def _ingest(self, f: str, st: os.stat_result) -> tuple[Key, str]:
        """Move a large file into the store and link it; return its key and link target."""
        path = os.path.join(self.top, f)
        key, hst = hash_file(path, self.backend, relpath_for_worm=f)
        after = os.lstat(path)
        if not (_same_content_stat(st, hst) and _same_content_stat(st, after)
                and st.st_ctime_ns == after.st_ctime_ns):
            raise ChangedWhileAdding(f"{f} changed while it was being added; not added "
                                     "(add it again once it is finished)")
        # Two files with the same content must not race for one object.
        with self._key_lock(key):
            return self._store_locked(f, st, path, key)

    def _store_locked(self, f: str, st: os.stat_result, path: str,
                      key: Key) -> tuple[Key, str]:
        target = symlink_target(key, f)
        if self.store.find(key) is not None:
            # Same content already stored: the work-tree copy is redundant.
            tmp = _tmp_link_path(path)
            os.symlink(target, tmp)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            return key, target
        dest = os.path.join(self.annex_dir, key.object_path(bare=self.repo.bare))
        keydir = os.path.dirname(dest)
        hashdir = os.path.dirname(keydir)
        if hashdir not in self._made_dirs:
            os.makedirs(hashdir, exist_ok=True)
            self._made_dirs.add(hashdir)
        try:
            os.mkdir(keydir)
        except FileExistsError:
            os.chmod(keydir, 0o755)
        # A hard link first: until the symlink replaces it, the work-tree name still
        # has the content, so a crash (kill -9) at any point never makes the user's
        # file disappear. Filesystems without hard links get rename + symlink.
        try:
            os.link(path, dest, follow_symlinks=False)
            linked = True
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            os.rename(path, dest)
            linked = False
        tmp = _tmp_link_path(path)
        try:
            moved = os.lstat(dest)
            if not _same_content_stat(st, moved):
                raise ChangedWhileAdding(f"{f} changed while it was being added; not added")
            os.chmod(dest, (st.st_mode & 0o555) | 0o444)
            os.chmod(keydir, 0o555)
            if linked:
                os.symlink(target, tmp)
                os.replace(tmp, path)
            else:
                os.symlink(target, path)
        except BaseException:
            # Leave the content where the user had it, and nothing in the store.
            try:
                os.chmod(keydir, 0o755)
                os.chmod(dest, stat.S_IMODE(st.st_mode))
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                if linked:
                    if not os.path.islink(path):
                        os.unlink(dest)
                else:
                    if os.path.lexists(path):
                        os.unlink(path)
                    os.rename(dest, path)
                os.rmdir(keydir)
            except OSError:
                pass
            raise
        return key, target


def _tmp_link_path(path: str) -> str:
    """A temporary name beside ``path`` unique to this process and thread."""
    return os.path.join(os.path.dirname(path),
                        f".annexsync-link.{os.getpid()}.{threading.get_ident()}")


def _is_dotfile(f: str) -> bool:
    return any(part.startswith(".") for part in f.split("/"))


def _input_for(f: str, specs: Sequence[str]) -> str:
    for s in specs:
        if s in (".", "") or f == s or f.startswith(s.rstrip("/") + "/"):
            return s
    return f
