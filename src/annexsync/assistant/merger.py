"""The merger service: merges what other clones push into us, at once.

Theory of operation
-------------------
inotify on ``.git/refs`` (recursively) and ``.git/packed-refs``. Another clone's push
writes ``refs/heads/synced/BRANCH`` and ``refs/heads/synced/git-annex``; a fetch
writes ``refs/remotes/NAME/...``. After a short calm (5 ms) the merger, holding the
work-tree lock and after the committer has committed what is pending, merges
``synced/BRANCH`` and each remote's ``BRANCH``/``synced/BRANCH`` into the checked-out
branch (conflicts resolved automatically) and union-merges every ``*/git-annex``.
If anything came in, the pusher is poked (to pass it on to the other remotes) and
the transfer scanner is told which commits changed.

Our own ref updates also produce events; merging a ref that is already contained
in HEAD is a cheap no-op, so they need no special casing.
"""

from __future__ import annotations

import os
import select
import threading
import time

from inotify_simple import INotify
from inotify_simple import flags as F

from annexsync.assistant.hub import Hub
from annexsync.git.refs import for_each_ref, rev_parse
from annexsync.sync.gitsync import GitSync, current_branch

_MASK = F.CREATE | F.MOVED_TO | F.CLOSE_WRITE | F.DELETE | F.ONLYDIR


class Merger:
    name = "merger"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sync = GitSync(hub.repo, on_event=lambda k, d: hub.emit(self.name, k, **d))
        self._stop_r, self._stop_w = os.pipe()
        self._wanted = threading.Event()
        self._last_incoming: frozenset[tuple[str, str]] | None = None

    def poke(self) -> None:
        self._wanted.set()
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass

    def run(self, stop: threading.Event) -> None:
        git_dir = str(self.hub.repo.git_dir)
        refs = os.path.join(git_dir, "refs")
        ino = INotify()
        wd_dir: dict[int, str] = {}

        def watch(d: str) -> None:
            try:
                wd_dir[ino.add_watch(d, _MASK)] = d
            except OSError:
                return
            try:
                for e in os.scandir(d):
                    if e.is_dir(follow_symlinks=False):
                        watch(e.path)
            except OSError:
                pass

        try:
            watch(refs)
            try:
                wd_dir[ino.add_watch(git_dir, F.MOVED_TO | F.CLOSE_WRITE)] = git_dir
            except OSError:
                pass
            self.merge()  # whatever arrived while we were not running
            while not stop.is_set():
                r, _, _ = select.select([ino.fileno(), self._stop_r], [], [], 60)
                relevant = self._wanted.is_set()
                self._wanted.clear()
                if self._stop_r in r:
                    os.read(self._stop_r, 4096)
                if ino.fileno() in r:
                    # a short calm: a push writes several refs in a row
                    events = ino.read(timeout=5)
                    for ev in events:
                        d = wd_dir.get(ev.wd, "")
                        if ev.mask & F.ISDIR and ev.mask & (F.CREATE | F.MOVED_TO):
                            watch(os.path.join(d, ev.name))
                        if d == git_dir and ev.name != "packed-refs":
                            continue
                        if not ev.name.endswith(".lock"):
                            relevant = True
                if relevant and not stop.is_set():
                    self.merge()
        finally:
            ino.close()

    def _incoming(self) -> frozenset[tuple[str, str]]:
        """Refs others may have moved, minus those that just point at our own tips."""
        repo = self.hub.repo
        refs = for_each_ref(repo.git, "refs/heads/synced", "refs/remotes", "refs/synced")
        ours = {rev_parse(repo.git, "HEAD"), self.hub.branch.tip()}
        return frozenset((n, o) for n, o in refs.items() if o not in ours)

    def merge(self) -> None:
        hub = self.hub
        repo = hub.repo
        t0 = time.monotonic()
        incoming = self._incoming()
        if incoming == self._last_incoming:
            return  # only our own refs moved
        self._last_incoming = incoming
        with hub.worktree_lock:
            if hub.committer is not None:
                hub.committer.commit_pending()
            old_head = rev_parse(repo.git, "HEAD")
            old_annex = hub.branch.tip()
            branch = current_branch(repo)
            remotes = [s.name for s in self.sync.sync_remotes()]
            merged, conflicts = self.sync.merge_from(remotes, branch)
            new_head = rev_parse(repo.git, "HEAD")
            new_annex = hub.branch.tip()
            if branch is not None and new_head is not None and new_head != old_head:
                from annexsync.git.refs import update_ref

                update_ref(repo.git, f"refs/heads/synced/{branch}", new_head)
        if new_head != old_head or new_annex != old_annex:
            hub.emit(self.name, "merge-done", refs=merged, conflicts=conflicts,
                     seconds=round(time.monotonic() - t0, 4))
            if hub.pusher is not None:
                hub.pusher.poke()
            if hub.scanner is not None:
                hub.scanner.changed(old_head, new_head, annex_changed=new_annex != old_annex)
