"""The resync service: where every trigger asks "sync with these remotes, now".

Theory of operation
-------------------
Triggers run in their own threads and only *ask*: a drive holding remotes was
mounted (:mod:`~annexsync.assistant.mountwatcher`), the network came up
(:mod:`~annexsync.assistant.netwatcher`), the refs of a local-path remote moved
(:mod:`~annexsync.assistant.remotewatcher`), a program ran ``annexsync
remotechanged`` (:mod:`~annexsync.assistant.control`). :meth:`Resyncer.request`
queues the request and returns a :class:`SyncRequest` whose ``done`` event is set
when the round that served it has finished. Requests that queue up while a round
runs are coalesced into the next round (the union of their remotes).

A round, for the remotes asked for (every syncable remote when ``None``):

1. *fetch* them in parallel (:meth:`GitSync.fetch`; a local-path remote that is not
   there, such as an unplugged drive, is skipped without running git);
2. *merge*: :meth:`Merger.merge` (under the work-tree lock; a no-op when nothing
   new came in);
3. *push*: :meth:`Pusher.push_now` for the remotes that answered, which also
   forgets their push back-off;
4. *content*: failed transfers are retried at once (:meth:`Transferrer.retry_now`);
   with ``full_scan`` (a drive was mounted; by default also when a fetched remote's
   git-annex branch moved, as git-annex's reconnect does) the transfer scanner checks
   every annexed file again, otherwise it re-checks the downloads that had found no
   source. The remote watcher, whose requests are frequent, never asks for a full scan
   (the merger already tells the scanner what a merge changed).

Failures are logged without storms (:class:`FailureLog`): the first failure of a
remote, then the 2nd, 4th, 8th ... (one line per back-off step) or when the error
changes; the first success after failures is logged as ``remote-back``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from annexsync.assistant.hub import Hub
from annexsync.errors import AnnexError
from annexsync.git.refs import for_each_ref
from annexsync.remotes.registry import RemoteSpec
from annexsync.sync.gitsync import GitSync, local_unavailable


class FailureLog:
    """Decides which repeated failures of a remote are worth a log line."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._last: dict[str, str] = {}

    def failed(self, remote: str, error: str) -> int | None:
        """Record a failure; its ordinal number if it should be logged, else None."""
        n = self._count.get(remote, 0) + 1
        self._count[remote] = n
        changed = self._last.get(remote) != error
        self._last[remote] = error
        return n if changed or (n & (n - 1)) == 0 else None

    def succeeded(self, remote: str) -> int:
        """Record a success; how many failures it ends (0: it was not failing)."""
        self._last.pop(remote, None)
        return self._count.pop(remote, 0)


@dataclass
class SyncRequest:
    """One trigger's request; ``done`` is set when a round has served it."""

    remotes: frozenset[str] | None  # None: every syncable remote
    reason: str
    full_scan: bool | None = None  # True: always; False: never; None: if git-annex moved
    push: bool = True
    wait: bool = False  # done only once the pushes were made (remotechanged --wait)
    done: threading.Event = field(default_factory=threading.Event)
    errors: dict[str, str] = field(default_factory=dict)  # remote -> error, once done
    synced: list[str] = field(default_factory=list)  # remotes fetched (and pushed)


class Resyncer:
    """The service that runs the sync rounds the triggers ask for."""

    name = "resync"

    def __init__(self, hub: Hub, *, push_wait: float = 60.0) -> None:
        self.hub = hub
        self.cond = threading.Condition()
        self._pending: list[SyncRequest] = []
        self.failures = FailureLog()
        self.push_wait = push_wait
        self.rounds = 0
        # we report ourselves; unplugged drives are left out quietly
        self.sync = GitSync(hub.repo, on_event=lambda k, d: None, skip_unavailable=True)

    # -- asking ----------------------------------------------------------------------
    def request(self, remotes: Iterable[str] | None, reason: str, *,
                full_scan: bool | None = None,
                push: bool = True, wait: bool = False) -> SyncRequest:
        """Queue a sync with ``remotes`` (None: all); returns at once."""
        req = SyncRequest(None if remotes is None else frozenset(remotes), reason,
                          full_scan=full_scan, push=push, wait=wait)
        with self.cond:
            self._pending.append(req)
            self.cond.notify()
        return req

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- the loop --------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        with ThreadPoolExecutor(4, thread_name_prefix="resync") as pool:
            while not stop.is_set():
                with self.cond:
                    if not self._pending:
                        self.cond.wait(5)
                        continue
                    batch, self._pending = self._pending, []
                try:
                    self._serve(batch, pool)
                finally:
                    for req in batch:
                        req.done.set()

    def _serve(self, batch: list[SyncRequest], pool: ThreadPoolExecutor) -> None:
        hub = self.hub
        names: set[str] | None = set()
        for req in batch:
            if req.remotes is None or names is None:
                names = None
            else:
                names |= req.remotes
        full_scan = any(r.full_scan for r in batch)
        scan_if_moved = any(r.full_scan is None for r in batch)
        push = any(r.push for r in batch)
        reasons = sorted({r.reason for r in batch})
        t0 = time.monotonic()
        errors: dict[str, str] = {}
        specs = self._specs(names, errors)
        hub.emit(self.name, "resync-start", reason=",".join(reasons),
                 remotes=[s.name for s in specs])
        annex_before = self._annex_refs(specs)
        results = list(pool.map(lambda s: (s, self.sync.fetch(s)), specs))
        ok: list[RemoteSpec] = []
        for spec, err in results:
            if err is None:
                ok.append(spec)
                if (n := self.failures.succeeded(spec.name)) > 0:
                    hub.emit(self.name, "remote-back", remote=spec.name, after_failures=n)
            else:
                errors[spec.name] = err
                if (n := self.failures.failed(spec.name, err)) is not None:
                    hub.emit(self.name, "fetch-failed", remote=spec.name, error=err,
                             failures=n)
        if hub.merger is not None and ok:
            hub.merger.merge()
        pushed_from = hub.events.last_id
        if hub.pusher is not None and ok and push:
            hub.pusher.push_now({s.name for s in ok})
        # Content: a remote came back, so what failed may work now.
        annex_moved = annex_before != self._annex_refs(specs)
        if annex_moved and scan_if_moved:
            full_scan = True
        if hub.transfers is not None:
            hub.transfers.retry_now()
        if hub.scanner is not None:
            if full_scan:
                hub.scanner.rescan()
            else:
                hub.scanner.poke()
        if hub.pusher is not None and ok and push and any(r.wait for r in batch):
            self._wait_pushed({s.name for s in ok}, pushed_from, errors)
        self.rounds += 1
        for req in batch:
            wanted = ({s.name for s in specs} if req.remotes is None
                      else set(req.remotes))
            req.errors = {n: e for n, e in errors.items() if n in wanted}
            req.synced = sorted(s.name for s in ok if s.name in wanted)
        hub.emit(self.name, "resync-done", reason=",".join(reasons),
                 synced=[s.name for s in ok], failed=sorted(errors),
                 full_scan=full_scan,
                 seconds=round(time.monotonic() - t0, 4))

    def _specs(self, names: set[str] | None, errors: dict[str, str]) -> list[RemoteSpec]:
        if names is None:
            return self.sync.sync_remotes()
        specs: list[RemoteSpec] = []
        for n in sorted(names):
            try:
                found = self.sync.sync_remotes([n])
            except AnnexError as e:
                errors[n] = str(e)
                continue
            for s in found:
                if (why := local_unavailable(s, self.hub.repo)) is not None:
                    errors[n] = f"not available: {why}"  # an unplugged drive: no noise
                else:
                    specs.append(s)
        return specs

    def _annex_refs(self, specs: list[RemoteSpec]) -> dict[str, str]:
        """Where each remote's tracking git-annex branch points (did a fetch move it?)."""
        if not specs:
            return {}
        try:
            refs = for_each_ref(self.hub.repo.git,
                                *[f"refs/remotes/{s.name}/git-annex" for s in specs])
        except AnnexError:
            return {}
        return refs

    def _wait_pushed(self, names: set[str], since: int, errors: dict[str, str]) -> None:
        """Wait (bounded) until the pusher reported on each of ``names``."""
        deadline = time.monotonic() + self.push_wait
        left = set(names)
        while left:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            ev = self.hub.events.wait_for(
                lambda e: (e.id > since and e.service == "pusher"
                           and e.kind in ("push-done", "push-failed")
                           and e.data.get("remote") in left), timeout)
            if ev is None:
                return
            left.discard(ev.data.get("remote", ""))
            if ev.kind == "push-failed":
                errors[ev.data.get("remote", "")] = str(ev.data.get("error"))
