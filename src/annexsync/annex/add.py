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
   Cost per file is the kernel's (a symlink and two directories each allocate an
   inode), so the syscalls are few and cheap: every path is relative to an open fd
   of the work tree or of ``objects/`` (no walks of the full path), the file stays
   open from hashing to ``fchmod`` (``open``, ``fstat``, one ``read``, ``fstat``,
   ``mkdir``, ``link``, ``lstat`` of the link, ``fchmod``, ``chmod`` of the key
   directory, ``symlink``, ``rename``), hash directories already made are
   remembered, and whether the content is already stored is only asked when the
   key's directory existed (or the store also has the other hash layout). No
   per-file fsync: nothing is lost by a crash at any step (the content keeps its
   work-tree name until the symlink replaces it) and a rerun finishes the job.
   ``INGEST_THREADS`` workers take chunks of files, each worker its own stretch of
   the ls-files order (so mostly its own directories: creating a name holds the
   directory's lock), while this thread streams finished files' symlink blobs into
   fast-import in order.
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
import itertools
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from annexsync.annex.backends import Backend, get_backend, hash_fd, hash_file
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
from annexsync.git.index import (
    MODE_EXECUTABLE,
    MODE_FILE,
    MODE_SYMLINK,
    IndexEntry,
    ls_files_tagged,
)
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


INGEST_THREADS = 2
"""Worker threads that ingest locked files (more only add kernel lock contention here)."""
INGEST_CHUNK = 32
"""Files per worker task: few futures, yet the first symlink blobs stream early."""
SMALL_READ = 1 << 18
"""Files below this size are hashed from one ``read`` (no buffer, no readahead hint)."""

_local = threading.local()


def hash_open_file(fd: int, size: int, backend: Backend, name: bytes) -> Key:
    """The key of the content of the open regular file ``fd`` (``size`` by its fstat).

    One ``read`` for a small file; a large one streams through a 1 MiB buffer kept per
    thread. ``name`` (the file's basename) gives ``*E`` keys their extension. The
    key's size is the number of bytes read: the caller compares it with ``size``.
    """
    hasher = backend.new_hasher()
    if size < SMALL_READ:
        data = os.read(fd, size + 1)
        total = len(data)
        hasher.update(data)
        while 0 < total < size:  # a short read: only on unusual filesystems
            data = os.read(fd, size + 1 - total)
            if not data:
                break
            hasher.update(data)
            total += len(data)
    else:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        buf: bytearray | None = getattr(_local, "buf", None)
        if buf is None:
            buf = _local.buf = bytearray(1 << 20)
        total = hash_fd(fd, hasher, size=size, buf=buf)
    return backend.key_from_digest(hasher.hexdigest(), total, name)


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
        self._pid = os.getpid()
        # (work-tree top, objects directory) fds while :meth:`add` runs: every
        # per-file syscall is relative to them, so the kernel never walks the full paths.
        self._fds: tuple[int, int] | None = None
        self._other_layout = False
        # Paths known not to be staged unlocked (untracked, or a symlink in the index):
        # the index need not be asked about them.
        self.not_unlocked: set[str] = set()

    # -- selection -----------------------------------------------------------------
    def candidates(self, paths: Sequence[str]) -> list[tuple[str, str]]:
        """(file, input path) pairs of files that need adding, in ls-files order.

        Also records which of them are untracked (in :attr:`not_unlocked`): those
        cannot be staged unlocked already, so the index need not be asked about them."""
        git = self.repo.git
        specs = [p if p else "." for p in paths] or ["."]
        # One pass: untracked (not ignored) files ("?") and tracked files that changed.
        seen: dict[str, None] = {}
        untracked = self.not_unlocked
        for tag, f in ls_files_tagged(git, "--others", "--modified", "--exclude-standard",
                                      paths=specs):
            seen[f] = None
            if tag == "?":
                untracked.add(f)
            else:
                untracked.discard(f)
        return [(f, _input_for(f, specs)) for f in seen]

    # -- the whole command -----------------------------------------------------------
    def add(self, paths: Sequence[str]) -> Iterator[AddResult]:
        """Add the files under ``paths`` (relative to the top); yield a result per file."""
        files = self.candidates(paths)
        early: list[AddResult] = []
        self._open_fds()
        try:
            results = self._add(files, early)
        finally:
            self._close_fds()
        yield from early
        yield from results

    def _open_fds(self) -> None:
        if self.repo.bare:
            return
        objects = os.path.join(self.annex_dir, "objects")
        try:
            names = os.listdir(objects)
        except FileNotFoundError:
            os.makedirs(objects, exist_ok=True)
            names = []
        # Mixed hash directories have two-character names, lower ones three.
        self._made_dirs.update(n for n in names if len(n) == 2)
        self._other_layout = any(len(n) == 3 for n in names)
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        top_fd = os.open(self.top, flags)
        try:
            obj_fd = os.open(objects, flags)
        except BaseException:
            os.close(top_fd)
            raise
        self._fds = (top_fd, obj_fd)

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, None
        for fd in fds or ():
            os.close(fd)

    def _lstat(self, f: str) -> os.stat_result:
        if self._fds is not None:
            return os.lstat(f, dir_fd=self._fds[0])
        return os.lstat(os.path.join(self.top, f))

    def _add(self, files: list[tuple[str, str]], early: list[AddResult]) -> list[AddResult]:
        top = self.top
        plan: list[tuple[str, str, os.stat_result]] = []
        for f, inp in files:
            try:
                st = self._lstat(f)
            except FileNotFoundError:
                continue  # deleted: not our business (git annex add ignores deletions)
            except OSError as e:
                early.append(AddResult(f, False, error=f"{e.strerror}", input=inp))
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
        # A modified file that is unlocked in the index stays unlocked (an untracked
        # file is in no index: no need to ask).
        staged_unlocked = unlocked_in_index(
            self.repo, [f for f in regular if large.get(f, True) and f not in self.not_unlocked]
        ) if not self.repo.bare else {}
        index: list[IndexEntry] = []
        small: list[tuple[str, str, os.stat_result]] = []
        results: list[AddResult] = []
        ts = now()
        added: list[Key] = []
        unlocked = {f for f, _, st in plan if stat.S_ISREG(st.st_mode) and large.get(f, True)
                    and not self.repo.bare
                    and (f in staged_unlocked or self.wants_unlocked(f, st.st_size))}
        # Locked large files are ingested by worker threads in chunks (hashing and the
        # metadata syscalls release the GIL) while this thread streams the finished
        # ones' symlink blobs into fast-import, in order.
        locked = [(f, st) for f, _, st in plan if stat.S_ISREG(st.st_mode)
                  and large.get(f, True) and f not in unlocked]
        ingested: dict[str, tuple[Key, str] | BaseException] = {}
        pending: deque[tuple[list[str], Future[list[tuple[Key, str] | BaseException]]]] = deque()
        pool: ThreadPoolExecutor | None = None
        if len(locked) > 8:
            pool = ThreadPoolExecutor(INGEST_THREADS)
            chunks = [locked[i:i + INGEST_CHUNK] for i in range(0, len(locked), INGEST_CHUNK)]
            futures = {i: pool.submit(self._ingest_chunk, chunks[i])
                       for i in _interleaved(len(chunks), INGEST_THREADS)}
            pending.extend(([f for f, _ in chunk], futures[i]) for i, chunk in enumerate(chunks))

        def take(f: str) -> tuple[Key, str] | BaseException | None:
            while f not in ingested and pending:
                names, fut = pending.popleft()
                ingested.update(zip(names, fut.result(), strict=True))
            return ingested.pop(f, None)

        try:
            if unlocked:
                # Unlocked files are ingested here, serially: finish the locked ones
                # first so no two threads ever work on one key.
                while pending:
                    names, fut = pending.popleft()
                    ingested.update(zip(names, fut.result(), strict=True))
            with BlobWriter(self.repo.git) as blobs:
                for f, inp, st in plan:
                    if stat.S_ISLNK(st.st_mode):
                        try:
                            target = os.readlink(os.path.join(top, f))
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
                        results.append(AddResult(f, False, error="not a regular file",
                                                 input=inp))
                    elif f in unlocked:
                        try:
                            ing = self._ingest_unlocked(f)
                        except (AnnexError, OSError) as e:
                            results.append(AddResult(f, False, error=_message(e), input=inp))
                            self._advance(st.st_size)
                            continue
                        mode = MODE_EXECUTABLE if ing.executable else MODE_FILE
                        index.append(IndexEntry(mode, blobs.add(pointer_content(ing.key)), f))
                        added.append(ing.key)
                        results.append(AddResult(f, True, key=ing.key, input=inp))
                        self._advance(st.st_size)
                    elif large.get(f, True):
                        try:
                            done = take(f)
                            if isinstance(done, BaseException):
                                raise done
                            key, target = done if done is not None else self._ingest(f, st)
                        except (AnnexError, OSError) as e:
                            results.append(AddResult(f, False, error=_message(e), input=inp))
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
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._finish_unlocked()
        # One commit for the whole batch (with anything already in the journal).
        log_presence_many(self.branch, added, self.uuid, True, ts)
        return results

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
    def _ingest_chunk(self, items: list[tuple[str, os.stat_result]]
                      ) -> list[tuple[Key, str] | BaseException]:
        return [self._ingest_catch(item) for item in items]

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
        if self._fds is None or not self.backend.is_hash:
            return self._ingest_by_path(f, st)
        top_fd, _ = self._fds
        fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC, dir_fd=top_fd)
        try:
            st0 = os.fstat(fd)
            if not stat.S_ISREG(st0.st_mode):
                raise ChangedWhileAdding(f"{f} changed while it was being added; not added "
                                         "(add it again once it is finished)")
            key = hash_open_file(fd, st0.st_size, self.backend,
                                 os.fsencode(f.rpartition("/")[2]))
            after = os.fstat(fd)
            if not (key.size == st.st_size and _same_content_stat(st, st0)
                    and _same_content_stat(st, after)
                    and st.st_ctime_ns == after.st_ctime_ns):
                raise ChangedWhileAdding(f"{f} changed while it was being added; not added "
                                         "(add it again once it is finished)")
            # Two files with the same content must not race for one object.
            with self._key_lock(key):
                return self._store_at(f, st, fd, key)
        finally:
            os.close(fd)

    def _keydir_made(self, hashdir: str, keydir: str) -> bool:
        """Create the key's directory (and its hash directories); False if it existed."""
        _, obj_fd = self._fds or (-1, -1)
        if hashdir not in self._made_dirs:
            first = hashdir[: hashdir.index("/")]
            if first not in self._made_dirs:
                try:
                    os.mkdir(first, dir_fd=obj_fd)
                except FileExistsError:
                    pass
                self._made_dirs.add(first)
            try:
                os.mkdir(hashdir, dir_fd=obj_fd)
            except FileExistsError:
                pass
            self._made_dirs.add(hashdir)
        try:
            os.mkdir(keydir, dir_fd=obj_fd)
        except FileExistsError:
            return False
        return True

    def _store_at(self, f: str, st: os.stat_result, fd: int, key: Key) -> tuple[Key, str]:
        """Hard-link the hashed file (open as ``fd``) into the store and replace its
        work-tree name by a symlink: the fewest syscalls, all relative to directory fds."""
        top_fd, obj_fd = self._fds or (-1, -1)
        bare = self.repo.bare
        hashdir = key.hashdir_lower if bare else key.hashdir_mixed
        kf = key.key_file
        keydir = hashdir + kf
        dest = keydir + "/" + kf
        target = (symlink_target(key, f) if bare else
                  "../" * f.count("/") + ".git/annex/objects/" + dest)
        tmp = self._tmp_name(f)
        fresh = self._keydir_made(hashdir[:-1], keydir)
        if (not fresh or self._other_layout) and self.store.find(key) is not None:
            # Same content already stored: the work-tree copy is redundant.
            if fresh:
                os.rmdir(keydir, dir_fd=obj_fd)
            os.symlink(target, tmp, dir_fd=top_fd)
            try:
                os.rename(tmp, f, src_dir_fd=top_fd, dst_dir_fd=top_fd)
            except BaseException:
                os.unlink(tmp, dir_fd=top_fd)
                raise
            return key, target
        if not fresh:
            os.chmod(keydir, 0o755, dir_fd=obj_fd)
        # A hard link first: until the symlink replaces it, the work-tree name still
        # has the content, so a crash (kill -9) at any point never makes the user's
        # file disappear. Filesystems without hard links get rename + symlink.
        try:
            os.link(f, dest, src_dir_fd=top_fd, dst_dir_fd=obj_fd, follow_symlinks=False)
            linked = True
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                if fresh:
                    os.rmdir(keydir, dir_fd=obj_fd)
                raise
            os.rename(f, dest, src_dir_fd=top_fd, dst_dir_fd=obj_fd)
            linked = False
        try:
            # The name we linked must still be the inode we hashed, unchanged.
            moved = os.stat(dest, dir_fd=obj_fd, follow_symlinks=False)
            if not _same_content_stat(st, moved):
                raise ChangedWhileAdding(f"{f} changed while it was being added; not added")
            os.chmod(fd, (st.st_mode & 0o555) | 0o444)
            os.chmod(keydir, 0o555, dir_fd=obj_fd)
            if linked:
                os.symlink(target, tmp, dir_fd=top_fd)
                os.rename(tmp, f, src_dir_fd=top_fd, dst_dir_fd=top_fd)
            else:
                os.symlink(target, f, dir_fd=top_fd)
        except BaseException:
            objects = os.path.join(self.annex_dir, "objects")
            self._undo(os.path.join(self.top, f), os.path.join(objects, dest),
                       os.path.join(objects, keydir), os.path.join(self.top, tmp), st, linked)
            raise
        return key, target

    def _tmp_name(self, f: str) -> str:
        """A temporary name beside ``f`` (top-relative), unique to this process and thread."""
        d = f.rpartition("/")[0]
        name = f".annexsync-link.{self._pid}.{threading.get_ident()}"
        return d + "/" + name if d else name

    @staticmethod
    def _undo(path: str, dest: str, keydir: str, tmp: str, st: os.stat_result,
              linked: bool) -> None:
        """Leave the content where the user had it, and nothing in the store."""
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

    def _ingest_by_path(self, f: str, st: os.stat_result) -> tuple[Key, str]:
        """:meth:`_ingest` for WORM keys (no content read) and without directory fds."""
        path = os.path.join(self.top, f)
        key, hst = hash_file(path, self.backend, relpath_for_worm=f)
        after = os.lstat(path)
        if not (_same_content_stat(st, hst) and _same_content_stat(st, after)
                and st.st_ctime_ns == after.st_ctime_ns):
            raise ChangedWhileAdding(f"{f} changed while it was being added; not added "
                                     "(add it again once it is finished)")
        with self._key_lock(key):
            return self._store_by_path(f, st, path, key)

    def _store_by_path(self, f: str, st: os.stat_result, path: str,
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
        os.makedirs(hashdir, exist_ok=True)
        try:
            os.mkdir(keydir)
        except FileExistsError:
            os.chmod(keydir, 0o755)
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
            self._undo(path, dest, keydir, tmp, st, linked)
            raise
        return key, target


def _interleaved(n: int, ways: int) -> list[int]:
    """0..n-1 cut into ``ways`` consecutive runs, taken in turn: 0, k, 2k, 1, k+1, ...

    Workers taking chunks in this order each work on their own part of the list,
    which is in ls-files order, so mostly in their own directories: creating a file
    in a directory holds that directory's lock, inode allocation included.
    """
    k = -(-n // ways) if n else 0
    runs = [range(start, min(start + k, n)) for start in range(0, n, k or 1)]
    return [i for group in itertools.zip_longest(*runs) for i in group if i is not None]


def _message(e: BaseException) -> str:
    return e.strerror if isinstance(e, OSError) and e.strerror else str(e)


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
