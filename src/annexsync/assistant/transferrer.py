"""The transferrer service: a de-duplicated transfer queue served by several slots.

Theory of operation
-------------------
Jobs are downloads of a key (from the cheapest remote that has it, falling back to
the next) or uploads of a key to one remote. A job equal to one queued or running is
not added again. ``slots`` worker threads (not git-annex's single slot) take jobs
from the front; uploads of freshly committed files go to the front, scans append.
Small keys (under 1 MiB) are taken in runs of up to ``BATCH`` jobs per slot (never
more than a fair share of the queue, so all slots stay busy), and the locations of a
run's downloads are read in one batch unless the scanner already handed them over
with the job. Small keys to and from a clone on this machine are staged and made
durable in batches (one ``syncfs`` pair for many files): downloads by the store's
committer thread, a run's uploads at the run's end; a staged transfer that then fails
comes back through ``_late`` and is retried. The pusher counts a staged upload as
pending until it is committed. Every transfer goes through
:class:`annexsync.transfers.runner.Transfers` (transfer info files, verification,
bandwidth limits, retries); a slot is released in a ``finally`` whatever happens. A
failed job is retried with a doubling back-off.

A burst (a commit of more than ``upload_wait_keys`` files) to a clone on a local
path whose own assistant is running (its ``daemon.pid`` lock is held) is uploaded
only after ``peer_grace`` seconds: that assistant merges the commit and downloads
what it wants itself, with far fewer disk syncs than one upload per file, and the
late upload then finds the content there. Any other clone gets it at once.

When the queue drains, the location-log changes are committed, content the
transfers since then made unwanted somewhere is dropped where numcopies allows (a
transfer remote once a client has it, a source repository once it sent it: the
decisions are ``sync --content``'s, :func:`annexsync.sync.content.drop_unwanted`),
and the pusher is poked, so other clones learn where content went. A download is followed by uploads
to the other remotes that want the content (flood fill, until the network map's
routing replaces it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from annexsync.annex.drop import Dropper
from annexsync.annex.keys import Key
from annexsync.annex.location import locations_many
from annexsync.annex.locks import lock_holder
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repos import RepoMap
from annexsync.annex.worktree import iter_annexed_chunks
from annexsync.assistant.hub import Hub
from annexsync.policy.preferred import ContentPolicy
from annexsync.remotes.base import RecentlyAvailable, Remote
from annexsync.remotes.registry import load_remotes
from annexsync.sync.content import drop_unwanted
from annexsync.transfers.info import Direction
from annexsync.transfers.runner import SMALL_KEY, PeerRepoRemote, TransferResult, Transfers

BATCH = 32
"""Most small-key jobs one slot takes at a time."""

_DROP_RETRY = 30.0
"""Seconds before keys of a drop pass that failed (the branch locked, say) are tried
again, when no transfer brings a pass sooner."""


@dataclass(frozen=True)
class Job:
    direction: str  # "download" | "upload"
    key: Key
    file: str | None
    remote: str | None = None  # upload target uuid (downloads pick a source)
    # downloads: where the scanner saw the key (None: read the location log)
    locs: frozenset[str] | None = field(default=None, compare=False)

    @property
    def ident(self) -> tuple[str, Key, str | None]:
        return (self.direction, self.key, self.remote)


@dataclass
class _Retry:
    job: Job
    at: float
    delay: float


@dataclass
class TransferState:
    queued: int = 0
    running: dict[str, dict[str, object]] = field(default_factory=dict)
    failed: int = 0


class Transferrer:
    name = "transferrer"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.cond = threading.Condition()
        self.queue: deque[Job] = deque()
        self.known: set[tuple[str, Key, str | None]] = set()
        self.running: dict[tuple[str, Key, str | None], Job] = {}
        self.retries: list[_Retry] = []
        self.later: list[_Retry] = []  # bursts held back for a peer that fetches itself
        # downloaded since the last flush: small keys may still wait for the batch sync
        # before they show in the store; a second scan must not fetch them again
        self.fetched: set[Key] = set()
        self._peer_seen: dict[str, tuple[float, bool]] = {}
        self.state = TransferState()
        self.store = ObjectStore(hub.repo.annex_dir, bare=hub.repo.bare)
        self._remotes: list[Remote] = []
        self._remotes_loaded = 0.0
        self._policy: ContentPolicy | None = None
        self._policy_tip: str | None = None
        self._dirty = False
        # moved here or there since the last drop pass: content that may now be
        # unwanted somewhere (a transfer remote once clients have it, say)
        self._touched: dict[Key, str | None] = {}
        self._drop_retry_at = float("inf")  # after a failed drop pass: when to try again
        # asked per job (an ssh remote answers with a new session); seen down is asked
        # again at once (a trigger that retries jobs means it came back)
        self._available = RecentlyAvailable()
        self._local = threading.local()
        self.tr: Transfers | None = None

    # -- configuration snapshots ----------------------------------------------------
    def remotes(self) -> list[Remote]:
        now = time.monotonic()
        if not self._remotes or now - self._remotes_loaded > 30:
            self._remotes = [r for r in load_remotes(self.hub.repo, self.hub.branch)
                             if r.info.sync]
            self._remotes_loaded = now
        return self._remotes

    def policy(self) -> ContentPolicy:
        tip = self.hub.branch.tip()
        if self._policy is None or tip != self._policy_tip:
            self._policy = ContentPolicy.from_logs(self.hub.branch.read_many(ContentPolicy.LOGS))
            self._policy_tip = tip
        return self._policy

    # -- queueing -------------------------------------------------------------------
    def enqueue(self, job: Job, *, front: bool = False) -> bool:
        with self.cond:
            if job.ident in self.known:
                return False
            self.known.add(job.ident)
            if front:
                self.queue.appendleft(job)
            else:
                self.queue.append(job)
            self.state.queued = len(self.queue)
            self.cond.notify()
            return True

    def upload_new(self, files: Sequence[tuple[str, Key]]) -> None:
        """Freshly committed content: send it to every remote that wants it, first."""
        if not self.hub.settings.content or not files:
            return
        policy = self.policy()
        remotes = [r for r in self.remotes() if not r.info.readonly]
        here = self.hub.repo.uuid
        s = self.hub.settings
        burst = len(files) > s.upload_wait_keys
        hold = {r.info.uuid for r in remotes if burst and self._peer_fetches(r)}
        at = time.monotonic() + s.peer_grace
        for f, key in files:
            locs = frozenset({here})
            for r in remotes:
                if policy.wants(r.info.uuid, f, key, locs):
                    job = Job("upload", key, f, r.info.uuid)
                    if r.info.uuid in hold and (key.size or 0) < SMALL_KEY:
                        self._enqueue_later(job, at)
                    else:
                        self.enqueue(job, front=True)

    def _peer_fetches(self, r: Remote) -> bool:
        """Is ``r`` a repository on this machine with an assistant running in it?"""
        if not isinstance(r, PeerRepoRemote):
            return False
        now = time.monotonic()
        seen = self._peer_seen.get(r.info.uuid)
        if seen is not None and now - seen[0] < 2.0:
            return seen[1]
        try:
            running = lock_holder(r.peer_annex_dir() / "daemon.pid") is not None
        except Exception:  # noqa: BLE001 - unavailable or unreadable: upload as usual
            running = False
        self._peer_seen[r.info.uuid] = (now, running)
        return running

    def _enqueue_later(self, job: Job, at: float) -> None:
        with self.cond:
            if job.ident in self.known:
                return
            self.known.add(job.ident)
            self.later.append(_Retry(job, at, 1.0))
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def retry_now(self, remote_uuids: set[str] | None = None) -> None:
        """Failed jobs are tried again at once (a remote came back): uploads to
        ``remote_uuids`` (every remote if None) and every download. (Bursts held back
        for a peer that fetches itself stay held: that peer is there.)"""
        with self.cond:
            now = time.monotonic()
            for r in self.retries:
                if (remote_uuids is None or r.job.direction == "download"
                        or r.job.remote in remote_uuids):
                    r.at = now
                    r.delay = 1.0
            self._remotes = []  # re-read the remotes (their availability changed)
            self.cond.notify_all()

    def uploads_pending(self, keys: set[Key]) -> bool:
        """Are uploads of any of ``keys`` queued or running?"""
        with self.cond:
            jobs = list(self.queue) + list(self.running.values())
        if any(j.direction == "upload" and j.key in keys for j in jobs):
            return True
        tr = self.tr
        return tr is not None and tr.uploads_staged(keys)

    # -- the slots -------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        with Transfers(self.hub.repo, commit_rounds=0.1, on_done=self._late) as tr:
            self.tr = tr
            # The slots end with this loop, however it ends (a restart by the
            # supervisor must not leave the old slots running on the old Transfers).
            halt = threading.Event()
            workers = [threading.Thread(target=self._slot, args=(_AnyOf(stop, halt),),
                                        daemon=True, name=f"transfer-slot-{i}")
                       for i in range(self.hub.settings.slots)]
            for w in workers:
                w.start()
            try:
                self._loop(stop, tr)
            finally:
                halt.set()
                with self.cond:
                    self.cond.notify_all()
                for w in workers:
                    w.join(5)
            tr.commit_staged()

    def _loop(self, stop: threading.Event, tr: Transfers) -> None:
        """Promote retries; when the queue drains, record, drop and push."""
        while not stop.is_set():
            with self.cond:
                self._promote_retries()
                idle = not self.queue and not self.running
                retry_drops = bool(self._touched) and time.monotonic() >= self._drop_retry_at
                if idle and (self._dirty or retry_drops):
                    self._dirty = False
                    flush = True
                else:
                    flush = False
                    nxt = min((r.at for r in self.later), default=None)
                    wait = 0.5 if nxt is None else min(0.5, nxt - time.monotonic())
                    self.cond.wait(max(0.01, wait))
            if flush:
                # Location changes are batched by the recorders: write them now, so
                # whereis and other clones learn at once where content went (a
                # drive unplugged meanwhile keeps its own changes pending).
                try:
                    tr.flush()
                except OSError as e:
                    self.hub.emit(self.name, "record-deferred", error=str(e))
                for problem in tr.unfilled:
                    self.hub.emit(self.name, "populate-failed", error=problem)
                tr.unfilled.clear()
                with self.cond:
                    self.fetched.clear()
                self.hub.branch.commit()
                self._drop_pass(tr)
                if self.hub.pusher is not None:
                    self.hub.pusher.poke()
                self.hub.emit(self.name, "queue-drained")

    def consider_drop(self, key: Key, file: str | None) -> None:
        """Content that may be unwanted somewhere (the scanner saw it): the next drop
        pass, once the queue drained, decides."""
        with self.cond:
            self._touched[key] = file
            self._dirty = True
            self.cond.notify_all()

    def _drop_pass(self, tr: Transfers) -> None:
        """Drop what the transfers since the last pass made unwanted, where numcopies
        allows (as git-annex's assistant does; the decisions are
        :func:`annexsync.sync.content.drop_unwanted`'s). Runs when the queue drained;
        on a failure the keys wait for the next pass."""
        with self.cond:
            touched, self._touched = self._touched, {}
        if not touched:
            return
        try:
            self._drop(tr, touched)
        except Exception as e:  # noqa: BLE001 - reported; the keys are tried again
            with self.cond:
                for k, f in touched.items():
                    self._touched.setdefault(k, f)
                self._drop_retry_at = time.monotonic() + _DROP_RETRY
            self.hub.emit(self.name, "drop-error", error=str(e))
        else:
            self._drop_retry_at = float("inf")

    def _drop(self, tr: Transfers, touched: dict[Key, str | None]) -> None:
        policy = self.policy()
        if not policy.may_drop_anything():
            return
        # Which copies here count: those in the store now, made durable and logged
        # by the commit below (one a slot moves in meanwhile waits for a later pass),
        # and the logs the decisions read must have every transfer recorded.
        here_now = {k for k in touched if self.store.has(k)}
        tr.commit_staged()
        tr.recorder.flush()
        hub = self.hub
        remotes = self.remotes()
        here = hub.repo.uuid
        repos = RepoMap.load(hub.repo, hub.branch)
        where = locations_many(hub.branch, list(touched))
        locations: dict[Key, set[str]] = {}
        for key in touched:
            locs = set(where.get(key, ()))
            locs.discard(here)
            if key in here_now:
                locs.add(here)
            locations[key] = locs
        # Content is dropped only where none of a key's files is wanted: a key whose
        # known file is wanted wherever it is needs no listing of its other files.
        candidates = {k for k, f in touched.items()
                      if any(policy.wants_drop(u, f, k, frozenset(locations[k]))
                             for u in locations[k])}
        files = self._files_of(candidates) if candidates else {}
        available = {r.info.uuid: self._available(r) for r in remotes}
        dropper = Dropper(hub.repo, hub.branch, remotes, repos, tr.recorder)
        changed = False
        try:
            for key, file in touched.items():
                if key not in candidates:
                    continue
                locs = locations[key]
                paths = files.get(key) or ([file] if file else [])
                try:
                    dropped, _ = drop_unwanted(
                        dropper, policy, repos, key, paths, locs, remotes, available,
                        lambda kind, data: hub.emit(self.name, kind, **data))
                except Exception as e:  # noqa: BLE001 - reported; the content stays
                    hub.emit(self.name, "drop", file=file, ok=False, error=str(e))
                    continue
                changed = changed or dropped
        finally:
            dropper.close()
        if changed:
            try:
                tr.flush()
            except OSError as e:  # (an unplugged clone keeps its changes pending)
                hub.emit(self.name, "record-deferred", error=str(e))
            hub.branch.commit()

    def _files_of(self, keys: set[Key]) -> dict[Key, list[str]]:
        """Every work-tree file of these keys: numcopies is the largest any of them
        asks for, and content is unwanted only when none of them wants it."""
        out: dict[Key, list[str]] = {}
        if self.hub.repo.bare:
            return out
        for chunk in iter_annexed_chunks(self.hub.repo):
            for f in chunk:
                if f.key in keys:
                    out.setdefault(f.key, []).append(f.file)
        return out

    def _late(self, res: TransferResult) -> None:
        """A staged transfer that failed at its batch commit, after its job had ended
        as a success: reported, and the job goes back to be tried again."""
        if not res.extra.get("late"):
            return
        if res.direction is Direction.DOWNLOAD:
            job = Job("download", res.key, res.file, None)
        else:
            uuid = next((r.info.uuid for r in self.remotes() if r.info.name == res.remote),
                        None)
            if uuid is None:  # the remote is gone meanwhile: nothing to retry
                return
            job = Job("upload", res.key, res.file, uuid)
        self.hub.emit(self.name, job.direction, file=res.file, remote=res.remote, ok=False,
                      error=res.error)
        with self.cond:
            self.fetched.discard(res.key)
            if job.ident not in self.known:
                self.known.add(job.ident)
                self.retries.append(_Retry(job, time.monotonic() + 1.0, 2.0))
                self.state.failed += 1
                self._dirty = True
                self.cond.notify_all()

    def _promote_retries(self) -> None:
        now = time.monotonic()
        due = [r for r in self.retries if r.at <= now]
        for r in due:
            self.retries.remove(r)
            self.queue.append(r.job)
        if self.later and min(r.at for r in self.later) <= now:
            ready = [r for r in self.later if r.at <= now]
            self.later = [r for r in self.later if r.at > now]
            self.queue.extendleft(r.job for r in ready)  # like upload_new: at the front
            due += ready
        if due:
            self.state.queued = len(self.queue)
            self.cond.notify_all()

    def _take(self) -> list[Job]:
        """The next job, or a run of small-key jobs of one direction (cond held)."""
        job = self.queue.popleft()
        jobs = [job]
        if not _small(job):
            return jobs
        share = -(-(len(self.queue) + 1) // max(1, self.hub.settings.slots))
        limit = min(BATCH, share)
        while (len(jobs) < limit and self.queue and self.queue[0].direction == job.direction
               and _small(self.queue[0])):
            jobs.append(self.queue.popleft())
        return jobs

    def _slot(self, stop: _AnyOf) -> None:
        while not stop.is_set():
            with self.cond:
                while not self.queue and not stop.is_set():
                    self.cond.wait(0.5)
                    self._promote_retries()
                if stop.is_set():
                    return
                jobs = self._take()
                for job in jobs:
                    self.running[job.ident] = job
                self.state.queued = len(self.queue)
            self._prefetch_locations(jobs)
            try:
                for i, job in enumerate(jobs):
                    if stop.is_set():  # hand the rest back untouched, still queued
                        with self.cond:   # (a restarted transferrer takes them on)
                            for j in reversed(jobs[i:]):
                                self.running.pop(j.ident, None)
                                self.queue.appendleft(j)
                            self.state.queued = len(self.queue)
                        return
                    self._run_one(job, last=i == len(jobs) - 1)
            finally:
                if jobs[0].direction == "upload" and self.tr is not None:
                    self._commit_uploads(self.tr)

    def _commit_uploads(self, tr: Transfers) -> None:
        """The run's staged uploads into their remotes (a failure there comes back
        through :meth:`_late`, which retries the job)."""
        try:
            tr.commit_uploads()
        except Exception as e:  # noqa: BLE001 - reported; the staged ones were retried
            self.hub.emit(self.name, "transfer-error", error=str(e))

    def _prefetch_locations(self, jobs: list[Job]) -> None:
        """Downloads of a run whose locations are unknown: read them in one batch."""
        need = [j for j in jobs if j.direction == "download" and j.locs is None]
        if len(need) < 2:
            return
        try:
            where = locations_many(self.hub.branch, [j.key for j in need])
        except Exception:  # noqa: BLE001 - each job reads its own then
            return
        for k, j in enumerate(jobs):
            if j.direction == "download" and j.locs is None:
                jobs[k] = Job(j.direction, j.key, j.file, j.remote,
                              locs=frozenset(where.get(j.key, set())))

    def _run_one(self, job: Job, *, last: bool) -> None:
        ok = False
        self._local.last_error = None
        try:
            ok = self._do(job)
        except Exception as e:  # noqa: BLE001 - reported, retried; the slot survives
            self.hub.emit(self.name, "transfer-error", key=str(job.key), error=str(e))
        finally:
            with self.cond:
                self.running.pop(job.ident, None)
                if ok:
                    self.known.discard(job.ident)
                else:
                    prev = next((r.delay for r in self.retries if r.job == job), 1.0)
                    if "already in progress" in (getattr(self._local, "last_error", None)
                                                 or ""):
                        # the other side is moving this very content: look again soon
                        prev = 0.1
                    # locations are read afresh next time (they may have moved on)
                    self.retries.append(_Retry(replace(job, locs=None),
                                               time.monotonic() + prev, min(prev * 2, 300.0)))
                    self.state.failed += 1
                self._dirty = True
                if last or not ok:
                    self.cond.notify_all()

    def _do(self, job: Job) -> bool:
        tr = self.tr
        assert tr is not None
        remotes = {r.info.uuid: r for r in self.remotes()}
        if job.direction == "upload":
            r = remotes.get(job.remote or "")
            if r is None or not tr.has(job.key):
                return True  # nothing to do any more
            if not self._available(r):
                return False
            # A small upload to a clone on this machine is staged; the run it is part
            # of is committed at its end (_slot): one syncfs pair per run, not two
            # fsyncs per file (a USB drive pays ~10-50 ms each).
            res = tr.upload(r, job.key, job.file, staged_ok=True)
            if res.skipped:
                return True  # it had the content already (recorded as such)
            self._local.last_error = res.error
            self.hub.emit(self.name, "upload", file=job.file, remote=r.info.name,
                          ok=res.success, error=res.error)
            if res.success:
                with self.cond:
                    self._touched[job.key] = job.file
            return res.success
        with self.cond:
            if job.key in self.fetched:
                return True
        locs: set[str] = set(job.locs or ())
        candidates = [r for r in self.remotes() if r.info.uuid in locs]
        if not candidates:  # unknown, or the scanner's view names no remote we have
            if tr.has(job.key):
                return True
            locs = locations_many(self.hub.branch, [job.key])[job.key]
            candidates = [r for r in self.remotes() if r.info.uuid in locs]
        for r in candidates:
            if not self._available(r):
                continue
            res = tr.download(r, job.key, job.file)  # (present already: skipped)
            if res.skipped:
                return True
            self._local.last_error = res.error
            self.hub.emit(self.name, "download", file=job.file, remote=r.info.name,
                          ok=res.success, error=res.error)
            if res.success:
                with self.cond:
                    self.fetched.add(job.key)
                    self._touched[job.key] = job.file
                self._after_download(job, locs | {self.hub.repo.uuid})
                return True
        if not candidates and job.file is not None and self.hub.scanner is not None:
            # nobody we can reach has it (yet): the scanner looks again when the
            # location logs change
            self.hub.scanner.defer(job.file, job.key)
        return not candidates

    def _after_download(self, job: Job, locs: set[str]) -> None:
        # (Unlocked files of the key are filled by Transfers once it is stored.)
        others = [r for r in self.remotes() if r.info.uuid not in locs and not r.info.readonly]
        if not others:
            return
        policy = self.policy()
        for r in others:
            u = r.info.uuid
            if policy.wants(u, job.file, job.key, frozenset(locs)):
                self.enqueue(Job("upload", job.key, job.file, u))

    def snapshot(self) -> dict[str, object]:
        with self.cond:
            return {"queued": len(self.queue), "running": len(self.running),
                    "retrying": len(self.retries), "held": len(self.later),
                    "jobs": [{"direction": j.direction, "file": j.file, "key": str(j.key)}
                             for j in list(self.running.values())[:20]]}


def _small(job: Job) -> bool:
    return job.key.size is not None and job.key.size < SMALL_KEY


class _AnyOf:
    """Set when any of these events is (the slots stop with the service or the loop)."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)
