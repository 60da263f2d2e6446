"""The pusher service: pushes to every remote right after each commit, in parallel.

A poke (after a commit, a merge, or content moving) wakes it; it pushes
``BRANCH:synced/BRANCH`` and ``git-annex:synced/git-annex`` to every syncable git
remote at once (:meth:`annexsync.sync.gitsync.GitSync.push`, which answers a rejected
push by fetch, merge and push again). After a commit of a few new files it first
waits (at most ``upload_wait``) for their uploads, so clones that merge can read them
at once; a burst (more than ``upload_wait_keys`` files) is pushed at once, so the
other clones merge it, and start fetching its content themselves, while the uploads
run. A remote that fails is retried with a doubling
back-off, and every ``push_retry_max`` seconds (30 minutes) in any case.

While a remote is in back-off, pokes (new commits) do not push to it: it is tried
again only when its back-off step is due, so an unreachable remote costs one attempt
and one ``push-failed`` line per step (1 s, 2 s, 4 s ... capped at ``push_retry_max``),
never one per commit. :meth:`Pusher.push_now` (the triggers: network up, drive
mounted, ``annexsync remotechanged``) clears the back-off and pushes at once.

After each round it starts git's automatic maintenance where it is due
(:mod:`annexsync.git.maintenance`): here, and in clones it fed without receive-pack.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from annexsync.annex.keys import Key
from annexsync.assistant.hub import Hub
from annexsync.git.maintenance import AutoGc
from annexsync.git.refs import rev_parse
from annexsync.sync.gitsync import GitSync, current_branch, local_unavailable


class Pusher:
    name = "pusher"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.cond = threading.Condition()
        self._poked = False
        self._retry_at: dict[str, float] = {}
        self._backoff: dict[str, float] = {}
        self._asked: set[str] = set()  # push_now() names not yet served by a push
        self._wait_keys: set[Key] = set()
        self.sync = GitSync(hub.repo, on_event=lambda kind, data: hub.emit(self.name, kind,
                                                                           **data),
                            fill_in_process=True, auto_gc=AutoGc(wait=False))
        # A rejected push is answered by fetch + merge: merges touch the work tree, so
        # they take the work-tree lock and commit pending changes first.
        unlocked_merge = self.sync.merge_from

        def merge_locked(*args: object, **kwargs: object) -> object:
            from annexsync.assistant.merger import note_merge

            with hub.worktree_lock:
                if hub.committer is not None:
                    hub.committer.commit_pending()
                old_head = rev_parse(hub.repo.git, "HEAD")
                old_annex = hub.branch.tip()
                result = unlocked_merge(*args, **kwargs)  # type: ignore[arg-type]
                # what the merge brought is scanned for content like the merger's
                note_merge(hub, old_head, rev_parse(hub.repo.git, "HEAD"),
                           annex_changed=hub.branch.tip() != old_annex)
            return result

        self.sync.merge_from = merge_locked  # type: ignore[method-assign,assignment]

    def poke(self, after_uploads: set[Key] | None = None) -> None:
        """Push soon; with ``after_uploads``, once those keys reached the remotes or
        ``upload_wait`` passed (content first, so clones that merge can read at once)."""
        with self.cond:
            self._poked = True
            if after_uploads:
                self._wait_keys |= after_uploads
            self.cond.notify()

    def push_now(self, names: set[str]) -> None:
        """Push to these remotes now, forgetting their back-off (a trigger saw them
        come back)."""
        with self.cond:
            for n in names:
                self._backoff.pop(n, None)
                self._retry_at[n] = 0.0
                self._asked.add(n)
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def run(self, stop: threading.Event) -> None:
        with ThreadPoolExecutor(8, thread_name_prefix="push") as pool:
            while not stop.is_set():
                with self.cond:
                    now = time.monotonic()
                    due = [r for r, t in self._retry_at.items() if t <= now]
                    if not self._poked and not due:
                        nxt = min(self._retry_at.values(), default=now + 60) - now
                        self.cond.wait(max(0.01, min(nxt, 60)))
                        continue
                    poked, self._poked = self._poked, False
                    wait_keys, self._wait_keys = self._wait_keys, set()
                if (wait_keys and self.hub.transfers is not None
                        and len(wait_keys) <= self.hub.settings.upload_wait_keys):
                    deadline = time.monotonic() + self.hub.settings.upload_wait
                    while (time.monotonic() < deadline and not stop.is_set()
                           and self.hub.transfers.uploads_pending(wait_keys)):
                        time.sleep(0.005)
                self.push_all(pool, only=None if poked else set(due))

    def push_all(self, pool: ThreadPoolExecutor, only: set[str] | None = None) -> None:
        hub = self.hub
        self.hub.branch.commit()
        specs = self.sync.sync_remotes()
        if only is not None:
            for gone in only - {s.name for s in specs}:  # unplugged or removed: no spin
                self._retry_at.pop(gone, None)
                self._backoff.pop(gone, None)
                self._asked.discard(gone)
            specs = [s for s in specs if s.name in only]
        else:  # a poke: remotes in back-off wait for their step (no retry storm)
            now = time.monotonic()
            specs = [s for s in specs if s.name not in self._backoff
                     or self._retry_at.get(s.name, 0.0) <= now]
        with self.cond:
            self._asked -= {s.name for s in specs}
        branch = current_branch(hub.repo)
        results = list(pool.map(lambda s: (s, self._push_one(s, branch)), specs))
        now = time.monotonic()
        for spec, err in results:
            with self.cond:
                if spec.name in self._asked:  # push_now() came during this push: again
                    self._retry_at[spec.name] = 0.0
                    if err is not None:
                        hub.emit(self.name, "push-failed", remote=spec.name, error=err,
                                 retry_in=0)
                    continue
            if err is None:
                self._retry_at[spec.name] = now + self.hub.settings.push_retry_max
                self._backoff.pop(spec.name, None)
            elif local_unavailable(spec, hub.repo) is not None:
                # unplugged during the push: not a failure, the mount watcher brings it back
                self._retry_at.pop(spec.name, None)
                self._backoff.pop(spec.name, None)
            else:
                delay = min(self._backoff.get(spec.name, 0.5) * 2,
                            self.hub.settings.push_retry_max)
                self._backoff[spec.name] = delay
                self._retry_at[spec.name] = now + delay
                hub.emit(self.name, "push-failed", remote=spec.name, error=err, retry_in=delay)
        # git's automatic maintenance, here and in the clones just fed directly
        for git_dir in self.sync.housekeeping():
            hub.emit(self.name, "maintenance-started", repository=str(git_dir))

    def _push_one(self, spec: object, branch: str | None) -> str | None:
        from annexsync.remotes.registry import RemoteSpec

        assert isinstance(spec, RemoteSpec)
        t0 = time.monotonic()
        err = self.sync.push(spec, branch)
        if err is None:
            self.hub.emit(self.name, "push-done", remote=spec.name,
                          seconds=round(time.monotonic() - t0, 4))
        return err
