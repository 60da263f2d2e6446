"""Running transfers: verified downloads into the object store, uploads to remotes.

Theory of operation
-------------------
One :class:`Transfers` object serves one command (or one assistant worker). Each
:meth:`~Transfers.download` / :meth:`~Transfers.upload` of a key:

1. takes the transfer lock and writes the info file (:mod:`.info`), here and, for a
   local git remote, also in the remote repository from its point of view (our
   download is its upload), as git-annex does;
2. moves the bytes through a *meter* that updates the info files every 1%,
   throttles to ``annex.bwlimit`` (token bucket on the injected clock), feeds stall
   detection (``annex.stalldetection``, plus a watchdog thread for a remote that
   blocks without reporting progress) and reports progress to the caller;
3. retries failures like git-annex's ``stdRetry``: up to ``annex.forward-retry``
   (default 5) more attempts while each one moved bytes forward, and
   ``annex.retry`` attempts with ``annex.retry-delay`` doubling back-off;
4. records the result: success clears a failed record, failure writes one.

A download writes ``.git/annex/tmp/<keyfile>``, resuming from its size (the prefix
is hashed first), and hashes the bytes as they land; a remote that can hand us a
local file descriptor (local clone, directory remote) is copied with
``copy_file_range``/reflink by :mod:`.localcopy`. Other remotes write into a sink
that, for big keys, hashes in a thread of its own (pipelined with receiving and
writing) and starts writeback as it goes. Wrong size or hash: the temp file is
deleted and nothing enters the store. Verified content is fsynced and renamed
into the store.

Small keys (under :data:`SMALL_KEY`) are made durable in batches: their verified
temp files are staged, then one ``syncfs`` makes them durable before they are
renamed into the store (by two threads: creating the three levels of object
directories is kernel work that runs in parallel), and the next ``syncfs`` (the
next batch's first, or a final one) before the location log records them — one
fsync per small file would cost more than the copy. A crash at any point leaves
either a temp file (garbage, removed by a later run) or durable verified content
whose location is not yet logged (under-reporting, which fsck repairs).

Uploads of small keys to a repository on this machine, where the caller allows it
(``copy --to``: ``staged_ok``), go the same way in reverse
(:meth:`Transfers._upload_small_local`): our copy is verified, written to the
clone's tmp directory, and per batch one ``syncfs`` of the clone's filesystem comes
before the renames into its store (each directory opened beneath its root, never
through a symlink), a second one before both location logs record them.

*Small keys from a local remote* (:meth:`Transfers._download_small_local`) take a
fast path that costs no file creation beyond the temp file itself. The transfer
lock files exist to keep two transfers of one key from writing the same
``tmp/<keyfile>`` and to show running transfers to observers; the fast path writes
a temp file of its own (``tmp/annexsync.<pid>.<n>``, created exclusively, never a
key file name, so git-annex never resumes from it), and a transfer that finishes
in microseconds would never be seen (info files of small keys are deferred
anyway). So it only *looks* for the lock files, here and in the remote (a lock
directory found absent is believed absent for 50 ms, so a burst does not look
for every key's lock file): if any
exists (a transfer of the key running in git-annex or in another annexsync, or a
stale file), it takes the ordinary path, which locks and refuses a busy transfer;
within this process keys in flight are tracked in memory. Any anomaly (missing
content, wrong size or hash, an error) also falls back to the ordinary path, which
keeps its failure records, retries and messages.

Location changes go to :class:`.locationlog.LocationRecorder` (ours: batched
commits; a local remote's: its journal); :meth:`Transfers.close` flushes
everything. Results are reported through ``on_done``: once, when final; a staged
small transfer twice (``extra["staged"]`` when staged, then ``extra["committed"]``
or, failed at the batch commit, ``extra["late"]``).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from annexsync.annex.backends import Hasher, hasher_for_key
from annexsync.annex.keys import Key
from annexsync.annex.locks import LockBusy
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.unlocked import UnlockedContent
from annexsync.errors import AnnexError
from annexsync.git.config import GitConfig
from annexsync.remotes.base import (
    KeyNotPresent,
    Remote,
    RemoteError,
    TransferAborted,
)
from annexsync.transfers.clock import SYSTEM_CLOCK, Clock
from annexsync.transfers.info import Direction, Transfer, TransferAlreadyRunning, TransferRecord
from annexsync.transfers.localcopy import CHUNK, copy_verify, hash_prefix, start_writeback
from annexsync.transfers.locationlog import LocationRecorder
from annexsync.transfers.ratelimit import (
    FixedRate,
    RateController,
    StallDetector,
    StallSpec,
    Throttle,
    parse_bwlimit,
    parse_stalldetection,
)

__all__ = [
    "LocalContentRemote",
    "PeerRepoRemote",
    "Progress",
    "StagingRemote",
    "TransferResult",
    "TransferSettings",
    "Transfers",
    "VerificationFailed",
    "download",
    "upload",
]

SMALL_KEY = 1 << 20
"""Keys below this size are made durable in batches and get deferred info files."""

_THREADED_HASH_MIN = 4 << 20  # downloads at least this big hash in a thread of their own
_HASH_QUEUE_DEPTH = 64  # chunks (of about 1 MiB) written but not hashed yet
_WRITEBACK_STEP = 16 << 20
_BATCH_FILES = 4096
_ROUND_FILES = 1024  # the committer thread commits a round at this many staged files
_BATCH_BYTES = 64 << 20
_STORE_THREADS = 2
_TMP_PREFIX = "annexsync."
_LOCK_DIR_TTL = 0.05
_STALE_TMP_SECONDS = 3600.0
_SENT_TMP = re.compile(r"\.annexsync-(\d+)-[0-9a-f]{8}$")  # remotes.gitlocal's temp names


class VerificationFailed(RemoteError):
    """The received bytes do not match the key."""


@runtime_checkable
class LocalContentRemote(Protocol):
    """A remote whose content is a file on this machine (fast local copies)."""

    def open_content(self, key: Key) -> int:
        """A read-only fd of the key's content; raises KeyNotPresent/RemoteUnavailable."""
        ...


@runtime_checkable
class PeerRepoRemote(Protocol):
    """A remote that is a git-annex repository on this machine."""

    def peer_annex_dir(self) -> Path:
        """Its annex directory (for its transfer records)."""
        ...

    def location_recorder(self) -> LocationRecorder:
        """Records changes in its own location log (its journal)."""
        ...


@runtime_checkable
class StagingRemote(Protocol):
    """A repository on this machine that takes small uploads in batches: each staged
    in its tmp directory, then moved into its store once the caller synced its
    filesystem (see :meth:`Transfers.upload`)."""

    def stage_object(self, key: Key, data: bytes) -> str: ...

    def commit_object(self, key: Key, name: str) -> None: ...

    def discard_staged(self, name: str) -> None: ...


@dataclass(frozen=True)
class TransferSettings:
    """Per-remote, per-direction knobs from git config (git-annex's names)."""

    bwlimit: float | None = None
    stall: StallSpec | None = None
    retry: int = 0
    retry_delay: float = 1.0
    forward_retry: int = 5
    # annex.verify AND remote.NAME.annex-verify, as git-annex combines them (false:
    # trust the remote's bytes; the size is still checked, fsck still hashes)
    verify: bool = True

    @classmethod
    def from_config(cls, cfg: GitConfig, remote: str | None, direction: Direction
                    ) -> TransferSettings:
        """``remote.NAME.annex-X`` beats ``annex.X``; ``-upload``/``-download`` beat both."""
        d = direction.value

        def get(name: str) -> str | None:
            if remote is not None:
                for n in (f"remote.{remote}.annex-{name}-{d}", f"remote.{remote}.annex-{name}"):
                    v = cfg.get(n)
                    if v is not None:
                        return v
            for n in (f"annex.{name}-{d}", f"annex.{name}"):
                v = cfg.get(n)
                if v is not None:
                    return v
            return None

        def num(name: str, default: float) -> float:
            v = get(name)
            try:
                return float(v) if v is not None else default
            except ValueError:
                return default

        try:
            stall = parse_stalldetection(get("stalldetection"))
        except ValueError as e:
            raise AnnexError(f"bad annex.stalldetection: {e}") from None
        verify = cfg.get_bool("annex.verify", True)
        if remote is not None:
            verify = verify and cfg.get_bool(f"remote.{remote}.annex-verify", True)
        return cls(bwlimit=parse_bwlimit(get("bwlimit")), stall=stall,
                   retry=int(num("retry", 0)), retry_delay=num("retry-delay", 1.0),
                   forward_retry=int(num("forward-retry", 5)), verify=verify)


@dataclass
class Progress:
    """Progress of one transfer, as data (for terminals, JSON and status APIs)."""

    key: Key
    file: str | None
    direction: Direction
    remote: str
    bytes_done: int
    total: int | None
    started: float
    now: float

    @property
    def rate(self) -> float:
        """Bytes per second since the transfer started."""
        dt = self.now - self.started
        return self.bytes_done / dt if dt > 0 else 0.0


@dataclass
class TransferResult:
    """The outcome of one transfer."""

    key: Key
    file: str | None
    direction: Direction
    remote: str
    success: bool
    error: str | None = None
    note: str | None = None
    bytes: int = 0
    skipped: bool = False  # nothing to do (already present)
    extra: dict[str, object] = field(default_factory=dict)


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _syncfs(path: Path | str) -> None:
    """Make everything written to ``path``'s filesystem durable; raises if it was not
    (a write error reported by the kernel). Without ``syncfs``: ``sync``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fn = _libc().syncfs
        except AttributeError:
            os.sync()
            return
        if fn(fd) != 0:
            err = ctypes.get_errno()
            if err == errno.ENOSYS:
                os.sync()
                return
            raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    finally:
        os.close(fd)


_KIND_CACHE: dict[tuple[type, type], bool] = {}


def _is_kind(remote: object, protocol: type) -> bool:
    """``isinstance(remote, protocol)``, cached per class (protocol checks are slow)."""
    k = (type(remote), protocol)
    hit = _KIND_CACHE.get(k)
    if hit is None:
        hit = _KIND_CACHE[k] = isinstance(remote, protocol)
    return hit


def _is_local(remote: object) -> bool:
    return _is_kind(remote, LocalContentRemote)


def _is_peer(remote: object) -> bool:
    return _is_kind(remote, PeerRepoRemote)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _FdSink:
    """A Sink writing to our temp file at a position, hashing what it writes.

    With ``threaded`` (big keys), hashing runs in a thread of its own, fed the same
    immutable chunks that were written, so receiving + writing and hashing overlap
    (SHA-256 alone is about as slow as a fast network); writeback of what was
    written is started every :data:`_WRITEBACK_STEP` bytes, so the final fsync
    waits only for the tail. Call :meth:`finish` before reading the digest, and
    :meth:`close` in any case.
    """

    def __init__(self, fd: int, pos: int, hasher: Hasher | None, *,
                 threaded: bool = False) -> None:
        self.fd = fd
        self.pos = pos
        self.hasher = hasher
        self._flushed = pos  # writeback started up to here
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._failure: list[BaseException] = []
        if threaded and hasher is not None:
            self._queue = queue.Queue(_HASH_QUEUE_DEPTH)
            self._thread = threading.Thread(target=self._hash_worker, daemon=True,
                                            name="hash")
            self._thread.start()

    def _hash_worker(self) -> None:
        assert self._queue is not None and self.hasher is not None
        try:
            while (item := self._queue.get()) is not None:
                self.hasher.update(item)
        except BaseException as e:  # re-raised by the writing thread
            self._failure.append(e)
            while self._queue.get() is not None:
                pass

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        n = len(view)
        done = 0
        while done < n:
            done += os.pwrite(self.fd, view[done:], self.pos + done)
        if self._queue is not None:
            if self._failure:
                raise self._failure[0]
            self._queue.put(data if isinstance(data, bytes) else bytes(view))
        elif self.hasher is not None:
            self.hasher.update(view)
        self.pos += n
        if self._thread is not None and self.pos - self._flushed >= _WRITEBACK_STEP:
            start_writeback(self.fd, self._flushed, self.pos - self._flushed)
            self._flushed = self.pos
        return n

    def finish(self) -> None:
        """Wait until everything written is hashed."""
        self.close()
        if self._failure:
            raise self._failure[0]

    def close(self) -> None:
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class _Meter:
    """Counts bytes; updates records, throttles, detects stalls, reports progress."""

    def __init__(self, owner: Transfers, records: list[TransferRecord], progress: Progress,
                 throttle: Throttle | None, stall: StallDetector | None,
                 abort: threading.Event) -> None:
        self.owner = owner
        self.records = records
        self.p = progress
        self.throttle = throttle
        self.stall = stall
        self.abort = abort
        self.lock = threading.Lock()
        self.abort_reason = "transfer cancelled"

    def __call__(self, n: int) -> None:
        p = self.p
        p.bytes_done += n
        for r in self.records:
            r.progress(p.bytes_done)
        if self.throttle is not None:
            self.throttle(n)
        clock = self.owner.clock
        if self.stall is not None:
            with self.lock:
                self.stall.progress()
                stalled = self.stall.check(clock.monotonic(), p.bytes_done)
            if stalled:
                self.abort_reason = "transfer stalled"
                self.abort.set()
        if self.abort.is_set():
            raise TransferAborted(self.abort_reason)
        cb = self.owner.on_progress
        if cb is not None:
            p.now = clock.monotonic()
            cb(p)


@dataclass
class _Staged:
    key: Key
    tmp: str
    result: TransferResult
    fill: bool  # unlocked files may point at the key: fill them once it is stored


@dataclass
class _StagedUpload:
    remote: Remote
    key: Key
    name: str  # in the remote's tmp directory
    result: TransferResult


class Transfers:
    """Downloads and uploads for one command; see the module docstring."""

    def __init__(self, repo: AnnexRepo, *, clock: Clock = SYSTEM_CLOCK,
                 recorder: LocationRecorder | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 on_done: Callable[[TransferResult], None] | None = None,
                 rate_controller: Callable[[Remote, Direction], RateController] | None = None,
                 batch_durability: bool = True, commit_rounds: float | None = None) -> None:
        self.repo = repo
        self.clock = clock
        self.uuid = repo.uuid
        self.store = ObjectStore(repo.annex_dir, bare=repo.bare)
        self.recorder = recorder or LocationRecorder(repo, mode="commit",
                                                     monotonic=clock.monotonic)
        self.on_progress = on_progress
        self.on_done = on_done
        self.rate_controller = rate_controller
        self.batch_durability = batch_durability
        self.commit_rounds = commit_rounds
        self._peer_recorders: dict[str, LocationRecorder] = {}
        self._staged: list[_Staged] = []
        self._staged_bytes = 0
        self._staged_at = 0.0  # when the oldest staged file was staged
        self._staged_keys: set[Key] = set()  # staged and not yet renamed into the store
        self._moved_unsynced: list[_Staged] = []  # renamed in, awaiting a syncfs
        self._up_staged: list[_StagedUpload] = []  # written to remotes' tmp, not synced
        self._up_staged_bytes = 0
        self._up_committing: list[_StagedUpload] = []  # taken by a commit in progress
        self._lock = threading.Lock()
        self._staged_cond = threading.Condition(self._lock)
        self._commit_lock = threading.Lock()
        self._committer: threading.Thread | None = None
        self._closing = False
        self._unlocked: UnlockedContent | None = None  # open while filling unlocked files
        self._unlocked_lock = threading.Lock()
        self.unfilled: list[str] = []  # "KEY: why" of unlocked files left unfilled
        self._settings: dict[tuple[str, Direction], TransferSettings] = {}
        # The small-key fast path (see the module docstring).
        self._annex = str(repo.annex_dir)
        self._tmp = self._annex + "/tmp"
        self._tmp_prefix = f"{_TMP_PREFIX}{os.getpid()}."
        self._tmp_counter = itertools.count()
        self._tmp_swept = False
        self._in_flight: set[Key] = set()
        self._dir_exists: dict[str, bool] = {}
        self._lock_dir_absent: dict[str, float] = {}  # lock directory -> absent until

    # -- configuration ---------------------------------------------------------------
    def settings(self, remote: Remote, direction: Direction) -> TransferSettings:
        k = (remote.info.name, direction)
        s = self._settings.get(k)
        if s is None:
            s = TransferSettings.from_config(self.repo.config, remote.info.name, direction)
            self._settings[k] = s
        return s

    def _peer_recorder(self, remote: Remote) -> LocationRecorder | None:
        if not isinstance(remote, PeerRepoRemote):
            return None
        with self._lock:
            rec = self._peer_recorders.get(remote.info.uuid)
            if rec is None:
                rec = remote.location_recorder()
                self._peer_recorders[remote.info.uuid] = rec
            return rec

    # -- the shared skeleton --------------------------------------------------------------
    @contextmanager
    def _records(self, remote: Remote, direction: Direction, key: Key,
                 file: str | None) -> Iterator[list[TransferRecord]]:
        now_ns = self.clock.time_ns()
        # Small keys move faster than anyone could watch: their info files are only
        # written if the transfer turns out slow (the lock is always taken).
        defer = key.size is not None and key.size < SMALL_KEY
        recs = [TransferRecord.begin(self.repo.annex_dir, Transfer(direction, remote.info.uuid,
                                                                    key), file, now_ns,
                                     defer_info=defer)]
        try:
            if _is_peer(remote):
                other = Direction.UPLOAD if direction is Direction.DOWNLOAD else Direction.DOWNLOAD
                try:
                    recs.append(TransferRecord.begin(cast(PeerRepoRemote, remote).peer_annex_dir(),
                                                     Transfer(other, self.uuid, key), file,
                                                     now_ns, defer_info=defer))
                except TransferAlreadyRunning:
                    raise
                except OSError:
                    pass  # a read-only remote: git-annex skips its records too
        except BaseException:
            for r in recs:
                r.finish(False)
            raise
        ok = False
        try:
            yield recs
            ok = True
        finally:
            for r in recs:
                r.finish(ok)

    def _run(self, remote: Remote, direction: Direction, key: Key, file: str | None,
             attempt_fn: Callable[[_Meter], int], partial: Callable[[], int]) -> int:
        """Run ``attempt_fn`` under transfer records with meter and retries."""
        settings = self.settings(remote, direction)
        with self._records(remote, direction, key, file) as recs:
            old = partial()
            n = 0
            while True:
                abort = threading.Event()
                progress = Progress(key, file, direction, remote.info.name, old, key.size,
                                    self.clock.monotonic(), self.clock.monotonic())
                throttle = self._throttle(remote, direction, settings)
                stall = (StallDetector(settings.stall, self.clock.monotonic())
                         if settings.stall is not None else None)
                meter = _Meter(self, recs, progress, throttle, stall, abort)
                watchdog = self._watchdog(meter, remote) if stall is not None else None
                try:
                    return attempt_fn(meter)
                except (KeyNotPresent, VerificationFailed, TransferAlreadyRunning):
                    raise
                except (RemoteError, OSError) as e:
                    new = partial()
                    n += 1
                    forward = new > old and n <= settings.forward_retry
                    configured = n <= settings.retry
                    if not (forward or configured):
                        raise
                    if configured:
                        self.clock.sleep(settings.retry_delay * 2 ** (n - 1))
                    old = new
                    del e
                finally:
                    if watchdog is not None:
                        watchdog()

    def _throttle(self, remote: Remote, direction: Direction,
                  settings: TransferSettings) -> Throttle | None:
        if self.rate_controller is not None:
            controller = self.rate_controller(remote, direction)
        elif settings.bwlimit is not None:
            controller = FixedRate(settings.bwlimit)
        else:
            return None
        return Throttle(controller, self.clock.monotonic, self.clock.sleep)

    def _watchdog(self, meter: _Meter, remote: Remote) -> Callable[[], None]:
        """A thread that notices a stall when the remote blocks without progress."""
        stop = threading.Event()
        assert meter.stall is not None
        interval = max(0.05, min(1.0, meter.stall.spec.seconds / 4))

        def watch() -> None:
            while not stop.wait(interval):
                with meter.lock:
                    assert meter.stall is not None
                    stalled = meter.stall.check(self.clock.monotonic(), meter.p.bytes_done)
                if stalled:
                    meter.abort_reason = "transfer stalled"
                    meter.abort.set()
                    cancel = getattr(remote, "abort_transfers", None)
                    if callable(cancel):
                        cancel()
                    return

        t = threading.Thread(target=watch, daemon=True, name="stall-watchdog")
        t.start()

        def stop_it() -> None:
            stop.set()
            t.join()

        return stop_it

    # -- downloads -----------------------------------------------------------------------
    def download(self, remote: Remote, key: Key, file: str | None = None, *,
                 unlocked: bool | None = None, absent: bool = False) -> TransferResult:
        """Get ``key`` from ``remote`` into the object store (verified).

        ``unlocked``: whether an unlocked file uses the key (None: find out from
        ``file``); their content is filled once the key is stored. ``absent``: the
        caller just saw the key is not here (no second look).
        """
        res = TransferResult(key, file, Direction.DOWNLOAD, remote.info.name, False)
        if key in self._staged_keys or (not absent and self.store.has(key)):
            res.success, res.skipped = True, True
            return self._done(res)
        fill = self._may_be_unlocked(file) if unlocked is None else unlocked
        if (self.batch_durability and key.size is not None and key.size < SMALL_KEY
                and _is_local(remote)):
            staged = self._download_small_local(remote, key, file, res, fill)
            if staged is not None:
                return staged
        tmp = self.store.tmp_path(key)
        try:
            nbytes = self._run(remote, Direction.DOWNLOAD, key, file,
                               lambda m: self._download_attempt(remote, key, tmp, m),
                               lambda: _size(tmp))
        except (RemoteError, AnnexError, OSError) as e:
            res.error = _message(e)
            return self._done(res)
        res.bytes = nbytes
        size = key.size if key.size is not None else nbytes
        if self.batch_durability and size < SMALL_KEY:
            return self._stage(key, str(tmp), res, size, fill)
        try:
            self.store.move_in(key, tmp, durable=True)
        except OSError as e:
            res.error = _message(e)
            return self._done(res)
        self.recorder.record(key, self.uuid, True)
        if fill:
            self._fill_unlocked([key])
        res.success = True
        return self._done(res)

    # -- unlocked files ------------------------------------------------------------------
    def _may_be_unlocked(self, file: str | None) -> bool:
        """Whether the work-tree file a download is for (top-relative) is unlocked.

        A symlink is a locked file: nothing to fill (one ``lstat``, so a repository
        of locked files never pays for the keys database). Unknown: maybe.
        """
        if self.repo.bare:
            return False
        if file is None:
            return True
        try:
            return not stat.S_ISLNK(os.lstat(f"{self.repo.top}/{file}").st_mode)
        except OSError:
            return False

    def _fill_unlocked(self, keys: list[Key]) -> None:
        """Content for ``keys`` is in the store now: fill the unlocked files pointing
        at them (every one the keys database knows, as git-annex does). The index is
        restaged once, at :meth:`flush`."""
        if not keys:
            return
        with self._unlocked_lock:
            uc = self._unlocked
            if uc is None:
                uc = self._unlocked = UnlockedContent(self.repo)
            for key in keys:
                try:
                    uc.populate(key)
                except (OSError, AnnexError) as e:
                    self.unfilled.append(f"{key}: {_message(e)}")
            uc.db.flush()  # short transactions: git's clean filter may want the db

    def _close_unlocked(self) -> None:
        with self._unlocked_lock:
            uc, self._unlocked = self._unlocked, None
        if uc is not None:
            uc.close()

    def _download_attempt(self, remote: Remote, key: Key, tmp: Path, meter: _Meter) -> int:
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            offset = os.fstat(fd).st_size
            if key.size is not None and offset > key.size:
                os.ftruncate(fd, 0)
                offset = 0
            meter.p.bytes_done = offset
            verify = self.settings(remote, Direction.DOWNLOAD).verify
            hasher = hasher_for_key(key) if verify else None
            if _is_local(remote):
                src = cast(LocalContentRemote, remote).open_content(key)
                try:
                    t = meter.throttle
                    total = copy_verify(src, fd, start=offset, size=key.size, hasher=hasher,
                                        meter=meter,
                                        chunk=t.chunk_size(CHUNK) if t else CHUNK,
                                        allow_fast=t is None or not t.limited)
                finally:
                    os.close(src)
            else:
                hash_prefix(fd, offset, hasher)
                big = key.size is None or key.size - offset >= _THREADED_HASH_MIN
                sink = _FdSink(fd, offset, hasher, threaded=big)
                try:
                    remote.retrieve(key, sink, offset, meter)
                    sink.finish()
                finally:
                    sink.close()
                total = sink.pos
            ok = key.size is None or total == key.size
            if ok and hasher is not None:
                ok = hasher.hexdigest() == key.hash_digest
        finally:
            os.close(fd)
        if not ok:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise VerificationFailed("verification of content failed")
        return total

    def _stage(self, key: Key, tmp: str, res: TransferResult, size: int,
               fill: bool) -> TransferResult:
        """Verified already; durable, stored and logged at the next batch commit.

        Reported through ``on_done`` now (``extra["staged"]``) and again once final:
        ``extra["committed"]``, or on a failure there ``extra["late"]``.
        """
        res.success = True
        res.extra["staged"] = True
        self._done(res)  # before a committer thread can see it
        with self._lock:
            if not self._staged:
                self._staged_at = time.monotonic()
            self._staged.append(_Staged(key, tmp, res, fill))
            self._staged_keys.add(key)
            self._staged_bytes += size
            # A full batch is committed by this thread (with rounds: backpressure).
            backlog = (len(self._staged) >= _BATCH_FILES
                       or self._staged_bytes >= _BATCH_BYTES)
            if self.commit_rounds is not None:
                if self._committer is None and not self._closing:
                    self._committer = threading.Thread(target=self._commit_loop,
                                                       daemon=True, name="store-commit")
                    self._committer.start()
                if len(self._staged) in (1, _ROUND_FILES):
                    self._staged_cond.notify()
        if backlog:
            self._commit_round()
        return res

    def has(self, key: Key) -> bool:
        """Whether ``key`` is here: in the store, or verified and about to enter it."""
        return key in self._staged_keys or self.store.has(key)

    # -- the small-key fast path ------------------------------------------------------------
    def _lock_dir_present(self, lck: str) -> bool:
        """Whether the directory of lock file ``lck`` exists; an absent one is believed
        absent for :data:`_LOCK_DIR_TTL` (no transfer of any key there: a burst need
        not look for each key's lock file)."""
        d = lck.rpartition("/")[0]
        now = time.monotonic()
        if self._lock_dir_absent.get(d, 0.0) > now:
            return False
        if os.path.isdir(d):
            return True
        self._lock_dir_absent[d] = now + _LOCK_DIR_TTL
        return False

    def _exists_cached(self, path: str) -> bool:
        """Whether a directory existed when first asked (failed-record dirs are rare)."""
        hit = self._dir_exists.get(path)
        if hit is None:
            hit = self._dir_exists[path] = os.path.isdir(path)
        return hit

    def _sweep_tmp(self) -> None:
        """Remove temp files left by crashed annexsync processes (once): our fast
        path's, and those another repository's annexsync wrote while sending here
        (``KEY.annexsync-PID-XXXXXXXX``), once untouched for an hour."""
        self._tmp_swept = True
        try:
            names = os.listdir(self._tmp)
        except OSError:
            return
        limit = time.time() - _STALE_TMP_SECONDS  # file times are real times
        for name in names:
            if name.startswith(_TMP_PREFIX):
                pid = name[len(_TMP_PREFIX):].partition(".")[0]
            else:
                m = _SENT_TMP.search(name)
                if m is None:
                    continue
                pid = m.group(1)
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            path = f"{self._tmp}/{name}"
            try:
                if os.lstat(path).st_mtime < limit:
                    os.unlink(path)
            except OSError:
                pass

    def _download_small_local(self, remote: Remote, key: Key, file: str | None,
                              res: TransferResult, fill: bool) -> TransferResult | None:
        """Stage a small key from a local remote (see the module docstring).

        Returns None when the ordinary path must run instead.
        """
        settings = self.settings(remote, Direction.DOWNLOAD)
        if self._paced(settings):
            return None
        size = key.size
        assert size is not None
        hasher = hasher_for_key(key) if settings.verify else None
        if hasher is None and settings.verify:
            return None  # a key without a checksum: the ordinary path's rules
        kf = key.key_file
        uuid = remote.info.uuid.replace("/", "")
        xfer = self._annex + "/transfer/"
        locks = [f"{xfer}download/lck/lck.{kf}", f"{xfer}download/{uuid}/lck.{kf}"]
        peer_dir: str | None = None
        if _is_peer(remote):
            try:
                peer_dir = str(cast(PeerRepoRemote, remote).peer_annex_dir())
            except (RemoteError, OSError):
                return None
            locks.append(f"{peer_dir}/transfer/upload/{self.uuid.replace('/', '')}/lck.{kf}")
        with self._lock:
            if key in self._in_flight:
                return None
            self._in_flight.add(key)
        try:
            if self._any_lock(locks):
                return None  # someone's transfer (or a stale one): the careful path
            if not self._tmp_swept:
                self._sweep_tmp()
            try:
                src = cast(LocalContentRemote, remote).open_content(key)
            except (RemoteError, OSError):
                return None
            tmp = f"{self._tmp}/{self._tmp_prefix}{next(self._tmp_counter)}"
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
                try:
                    dst = os.open(tmp, flags, 0o444)
                except FileNotFoundError:
                    os.mkdir(self._tmp)
                    dst = os.open(tmp, flags, 0o444)
                try:
                    # One read: a regular file returns less than asked only at its end
                    # (and a short read that was not would fail verification below).
                    data = os.pread(src, size + 1, 0)
                    view = memoryview(data)
                    done = 0
                    while done < len(view):
                        done += os.write(dst, view[done:])
                finally:
                    os.close(dst)
            except OSError:
                _unlink_quiet(tmp)
                return None
            finally:
                os.close(src)
            if hasher is not None:
                hasher.update(data)
            if len(data) != size or (hasher is not None
                                     and hasher.hexdigest() != key.hash_digest):
                _unlink_quiet(tmp)
                return None  # the ordinary path fails it properly (records, message)
        finally:
            with self._lock:
                self._in_flight.discard(key)
        failed = [f"{xfer}failed/download/{uuid}"]
        if peer_dir is not None:
            failed.append(f"{peer_dir}/transfer/failed/upload/{self.uuid.replace('/', '')}")
        self._clear_failed(failed, kf)
        res.bytes = size
        self._whole(key, file, Direction.DOWNLOAD, remote, size)
        return self._stage(key, tmp, res, size, fill)

    # -- shared by the small-key fast paths ----------------------------------------------
    def _paced(self, settings: TransferSettings) -> bool:
        """A rate controller, bandwidth limit or stall detection wants the careful path."""
        return (self.rate_controller is not None or settings.bwlimit is not None
                or settings.stall is not None)

    def _any_lock(self, locks: list[str]) -> bool:
        """Does any of these transfer lock files exist (someone's transfer, or a stale
        one)? Their directories' absence is cached briefly."""
        return any(self._lock_dir_present(lck) and os.path.lexists(lck) for lck in locks)

    def _clear_failed(self, dirs: list[str], kf: str) -> None:
        """Success clears failed records of this transfer, as the ordinary path does."""
        for d in dirs:
            if self._exists_cached(d):
                _unlink_quiet(f"{d}/{kf}")

    def _whole(self, key: Key, file: str | None, direction: Direction, remote: Remote,
               size: int) -> None:
        """Report a transfer that moved all its bytes at once."""
        if self.on_progress is not None:
            now = self.clock.monotonic()
            self.on_progress(Progress(key, file, direction, remote.info.name, size, size,
                                      now, now))

    # -- batch commits of staged small keys ------------------------------------------------
    def commit_staged(self) -> None:
        """Make staged small downloads and uploads durable, move them in, record and
        report them."""
        self._commit_round()
        with self._commit_lock:
            if self._moved_unsynced:
                try:
                    _syncfs(self._annex)
                except OSError as e:  # in the store, but not known to be durable
                    moved, self._moved_unsynced = self._moved_unsynced, []
                    for m in moved:
                        self._late_failure(m.result, _message(e))
                else:
                    self._record_moved()
        self._commit_uploads()

    def _commit_loop(self) -> None:
        """With ``commit_rounds`` (seconds): a thread commits what is staged once
        :data:`_ROUND_FILES` are, or the oldest has waited that long.

        So content becomes readable a round at a time while a burst downloads,
        rather than all at its end, and downloading does not wait for the disk.
        (A command like ``get`` commits inline in big batches: on a journalling
        filesystem each syncfs costs a journal commit.)
        """
        age = self.commit_rounds or 0.0
        while True:
            with self._lock:
                while not self._closing:
                    if len(self._staged) >= _ROUND_FILES:
                        break
                    if not self._staged:
                        self._staged_cond.wait()
                        continue
                    left = self._staged_at + age - time.monotonic()
                    if left <= 0:
                        break
                    self._staged_cond.wait(left)
                if not self._staged:
                    return
            try:
                self._commit_round()
            except Exception:  # noqa: BLE001 - its files were reported as failed
                pass

    def _commit_round(self) -> None:
        """One batch: syncfs, rename into the store (threads), record what is durable.

        The syncfs that makes this batch's temp files durable also makes the previous
        batch's renames durable, so those are recorded then (:meth:`commit_staged`
        adds the syncfs for the last batch's renames).
        """
        with self._commit_lock:
            with self._lock:
                staged, self._staged = self._staged, []
                self._staged_bytes = 0
            if not staged and not self._moved_unsynced:
                return
            try:
                _syncfs(self._annex)
                self._record_moved()
                if staged:
                    self._moved_unsynced = self._move_all(staged)
                    self._fill_unlocked([m.key for m in self._moved_unsynced if m.fill])
            except BaseException as e:
                moved = {m.key for m in self._moved_unsynced}
                why = _message(e) if isinstance(e, Exception) else "interrupted"
                for st in staged:  # reported; their temp files are garbage for the sweep
                    if st.key not in moved:
                        self._late_failure(st.result, why)
                raise
            finally:
                with self._lock:
                    self._staged_keys.difference_update(st.key for st in staged)

    def _record_moved(self) -> None:
        moved, self._moved_unsynced = self._moved_unsynced, []
        for s in moved:
            self.recorder.record(s.key, self.uuid, True)
            self._committed(s.result)

    def _move_all(self, staged: list[_Staged]) -> list[_Staged]:
        """Rename verified temp files into the store; returns those now in it."""
        bare = self.store.bare
        jobs = sorted(((s.key.object_path(bare), s) for s in staged), key=lambda j: j[0])
        if len(jobs) < 64:
            return [s for rel, s in jobs if self._move_one(rel, s)]
        # Contiguous halves of the sorted list: the threads rarely share a directory.
        n = _STORE_THREADS
        parts = [jobs[i * len(jobs) // n:(i + 1) * len(jobs) // n] for i in range(n)]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="store") as pool:
            done = list(pool.map(lambda part: [s for rel, s in part if self._move_one(rel, s)],
                                 parts))
        return [s for part in done for s in part]

    def _move_one(self, rel: str, s: _Staged) -> bool:
        keydir, _, name = f"{self._annex}/{rel}".rpartition("/")
        try:
            try:
                try:
                    os.mkdir(keydir)
                except FileNotFoundError:  # the hash directories (or objects/) are new
                    os.makedirs(keydir.rpartition("/")[0], exist_ok=True)
                    os.mkdir(keydir)
            except FileExistsError:
                # The key's directory is there already (content, or a leftover): the
                # general path looks before it moves anything.
                self.store.move_in(s.key, Path(s.tmp))
                return True
            os.rename(s.tmp, f"{keydir}/{name}")
            os.chmod(keydir, 0o555)
            return True
        except FileNotFoundError:
            if self.store.has(s.key):  # another process moved it in for us
                _unlink_quiet(s.tmp)
                return True
            self._late_failure(s.result, "temporary file vanished before it was stored")
        except (OSError, AnnexError) as e:
            self._late_failure(s.result, _message(e))
        return False

    def _late_failure(self, res: TransferResult, error: str) -> None:
        res.success = False
        res.error = error
        res.extra["late"] = True
        self._done(res)

    # -- uploads -------------------------------------------------------------------------
    def upload(self, remote: Remote, key: Key, file: str | None = None, *,
               staged_ok: bool = False) -> TransferResult:
        """Send ``key`` (present here) to ``remote``; the remote stores it atomically.

        A repository on this machine that has the content already (its assistant
        fetched it, say) is only recorded, in our log, as having it (as git-annex's
        ``copy --to`` does; its own log is its business): ``skipped``, no transfer.

        ``staged_ok`` (a caller that does nothing with the remote's copy before
        :meth:`commit_staged`, such as ``copy --to``): a small key for a repository on
        this machine is verified here and written to the remote's tmp directory, and
        a batch of them is made durable with one ``syncfs`` before it is moved into
        the remote's store, synced again and recorded — as small downloads are, instead
        of two ``fsync`` per file. Reported through ``on_done`` as staged
        (``extra["staged"]``), then ``extra["committed"]`` or, failed, ``extra["late"]``."""
        res = TransferResult(key, file, Direction.UPLOAD, remote.info.name, False)
        if remote.info.readonly:
            res.error = f"{remote.info.name} is read-only"
            return self._done(res)
        if _is_local(remote):
            try:
                there = remote.check_present(key)  # a stat: cheaper than the transfer
            except (RemoteError, OSError):
                there = False  # the transfer below says what is wrong
            if there:
                self.recorder.record(key, remote.info.uuid, True)
                res.success, res.skipped = True, True
                return self._done(res)
        if (staged_ok and self.batch_durability and key.size is not None
                and key.size < SMALL_KEY and _is_kind(remote, StagingRemote)
                and _is_peer(remote) and key not in self._staged_keys):
            staged = self._upload_small_local(remote, key, file, res)
            if staged is not None:
                return staged
        if key in self._staged_keys:
            self._commit_round()  # downloaded a moment ago: into the store first
        try:
            lock = self.store.lock_shared(key)
        except LockBusy:
            res.error = "content is being dropped here"
            return self._done(res)
        except OSError as e:
            res.error = _message(e)
            return self._done(res)
        try:
            src = self.store.find(key)
            if src is None:
                res.error = "content not present here"
                return self._done(res)
            done = [0]

            def attempt(meter: _Meter) -> int:
                meter.p.bytes_done = 0
                remote.store(key, src, meter)
                done[0] = meter.p.bytes_done
                return meter.p.bytes_done

            res.bytes = self._run(remote, Direction.UPLOAD, key, file, attempt,
                                  lambda: done[0])
        except (RemoteError, AnnexError, OSError) as e:
            res.error = _message(e)
            return self._done(res)
        finally:
            lock.release()
        self.record_remote(remote, key, True)
        res.success = True
        return self._done(res)

    def _upload_small_local(self, remote: Remote, key: Key, file: str | None,
                            res: TransferResult) -> TransferResult | None:
        """Stage a small upload (see :meth:`upload`); None: the ordinary path runs."""
        settings = self.settings(remote, Direction.UPLOAD)
        if self._paced(settings):
            return None
        kf = key.key_file
        uuid = remote.info.uuid.replace("/", "")
        ours = self.uuid.replace("/", "")
        try:
            peer_dir = cast(PeerRepoRemote, remote).peer_annex_dir()
            self._peer_recorder(remote)  # (a remote that cannot record fails here, early)
        except (RemoteError, OSError):
            return None
        # ours for this upload, and the clone's for any download of the key into it
        locks = [f"{self._annex}/transfer/upload/{uuid}/lck.{kf}",
                 f"{peer_dir}/transfer/download/lck/lck.{kf}",
                 f"{peer_dir}/transfer/download/{ours}/lck.{kf}"]
        if self._any_lock(locks):
            return None  # someone's transfer (or a stale one): the careful path
        src = self.store.find(key)
        if src is None:
            return None
        size = key.size
        assert size is not None
        try:
            fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            try:
                data = os.pread(fd, size + 1, 0)
            finally:
                os.close(fd)
        except OSError:
            return None
        hasher = hasher_for_key(key)
        if hasher is not None:
            hasher.update(data)
        if len(data) != size or (hasher is not None and hasher.hexdigest() != key.hash_digest):
            return None  # our copy is bad: the ordinary path (and fsck) deal with it
        try:
            name = cast(StagingRemote, remote).stage_object(key, data)
        except (RemoteError, OSError):
            return None  # the ordinary path reports it properly
        self._clear_failed([f"{self._annex}/transfer/failed/upload/{uuid}",
                            f"{peer_dir}/transfer/failed/download/{ours}"], kf)
        res.success, res.bytes = True, size
        res.extra["staged"] = True
        self._whole(key, file, Direction.UPLOAD, remote, size)
        self._done(res)  # before the commit can see it (another thread may commit)
        with self._lock:
            self._up_staged.append(_StagedUpload(remote, key, name, res))
            self._up_staged_bytes += size
            backlog = (len(self._up_staged) >= _BATCH_FILES
                       or self._up_staged_bytes >= _BATCH_BYTES)
        if backlog:
            self._commit_uploads()
        return res

    def commit_uploads(self) -> None:
        """Make the staged small uploads durable in their remotes now, and record
        them (a caller that stages a run of uploads and wants them there at its end)."""
        self._commit_uploads()

    def uploads_staged(self, keys: Collection[Key]) -> bool:
        """Is an upload of any of ``keys`` staged and not committed yet?"""
        with self._lock:
            return any(st.key in keys for st in (*self._up_staged, *self._up_committing))

    def _commit_uploads(self) -> None:
        """Per remote: syncfs (the staged files are durable), move them into its store,
        syncfs (the renames are), then record where the content is and report each
        result ``committed`` (or, failed, ``late``)."""
        with self._commit_lock:
            with self._lock:
                staged, self._up_staged = self._up_staged, []
                self._up_staged_bytes = 0
                self._up_committing = staged
            try:
                self._commit_uploads_of(staged)
            finally:
                with self._lock:
                    self._up_committing = []

    def _commit_uploads_of(self, staged: list[_StagedUpload]) -> None:
        by_remote: dict[str, list[_StagedUpload]] = {}
        for st in staged:
            by_remote.setdefault(st.remote.info.uuid, []).append(st)
        for items in by_remote.values():
            settled: set[int] = set()
            try:
                self._commit_uploads_to(items, settled)
            except BaseException as e:
                why = _message(e) if isinstance(e, Exception) else "interrupted"
                for st in items:
                    if id(st) not in settled:
                        cast(StagingRemote, st.remote).discard_staged(st.name)
                        self._late_failure(st.result, why)
                if not isinstance(e, Exception):
                    raise

    def _commit_uploads_to(self, items: list[_StagedUpload], settled: set[int]) -> None:
        remote = items[0].remote
        staging = cast(StagingRemote, remote)
        annex = cast(PeerRepoRemote, remote).peer_annex_dir()
        _syncfs(annex)
        moved: list[_StagedUpload] = []
        for st in items:
            try:
                staging.commit_object(st.key, st.name)
                moved.append(st)
            except (RemoteError, OSError) as e:
                staging.discard_staged(st.name)
                settled.add(id(st))
                self._late_failure(st.result, _message(e))
        if not moved:
            return
        try:
            _syncfs(annex)
        except OSError as e:
            for st in moved:  # in place but maybe not durable: not recorded
                settled.add(id(st))
                self._late_failure(st.result, _message(e))
            return
        for st in moved:
            self.record_remote(remote, st.key, True)
            settled.add(id(st))
            self._committed(st.result)

    def _committed(self, res: TransferResult) -> None:
        """A staged result is final now: durable, stored and logged."""
        res.extra["committed"] = True
        self._done(res)

    def record_remote(self, remote: Remote, key: Key, present: bool) -> None:
        """Log that ``remote`` has (or lacks) ``key``: in our log and the remote's own."""
        self.recorder.record(key, remote.info.uuid, present)
        peer = self._peer_recorder(remote)
        if peer is not None:
            peer.record(key, remote.info.uuid, present)

    # -- the end ------------------------------------------------------------------------
    def _done(self, res: TransferResult) -> TransferResult:
        if self.on_done is not None:
            self.on_done(res)
        return res

    def flush(self) -> None:
        """Finish staged downloads, fill and restage unlocked files, and write all
        pending location changes."""
        self.commit_staged()
        self._close_unlocked()
        self.recorder.flush()
        error: OSError | None = None
        for rec in self._peer_recorders.values():
            try:
                rec.flush()
            except OSError as e:  # a drive unplugged meanwhile: its changes stay pending
                error = error or e
            finally:
                # No process stays in a peer repository: it may be a drive to unmount.
                rec.repo.close()
        if error is not None:
            raise error

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._closing = True
                self._staged_cond.notify_all()
                t = self._committer
            if t is not None and t is not threading.current_thread():
                t.join()

    def __enter__(self) -> Transfers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, AnnexError):
        if e.errno == errno.ENOSPC:
            return "not enough free space"
        return e.strerror or str(e)
    return str(e)


def download(repo: AnnexRepo, remote: Remote, key: Key, associated_file: str | None = None,
             *, clock: Clock = SYSTEM_CLOCK) -> TransferResult:
    """Download one key (a one-shot :class:`Transfers`, committed before returning)."""
    with Transfers(repo, clock=clock, batch_durability=False) as t:
        return t.download(remote, key, associated_file)


def upload(repo: AnnexRepo, remote: Remote, key: Key, associated_file: str | None = None,
           *, clock: Clock = SYSTEM_CLOCK) -> TransferResult:
    """Upload one key (a one-shot :class:`Transfers`, committed before returning)."""
    with Transfers(repo, clock=clock, batch_durability=False) as t:
        return t.upload(remote, key, associated_file)
