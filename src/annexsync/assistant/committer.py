"""The committer service: turns the watcher's notes into commits.

Theory of operation
-------------------
Notes go into an :class:`~annexsync.assistant.aggregator.Aggregator`; when it says a
batch is ready the committer, holding the work-tree lock, looks at each path on
disk:

* gone: every index entry at or under it is removed;
* a regular file or symlink: handed to :class:`annexsync.annex.add.Adder` (which asks
  git which of them are new or modified, so unchanged paths — our own symlinks —
  cost nothing); a file that may still be open for writing is skipped when a
  process has it open for writing (its close-write will come);
* a directory: nothing (its files arrive as notes of their own).

Then the index is committed (``git-annex in <description>``), ``synced/BRANCH`` moves
along, the pusher is poked, and uploads are queued for the new keys.
"""

from __future__ import annotations

import os
import stat
import threading
import time

from annexsync.annex.add import Adder
from annexsync.annex.keys import Key
from annexsync.annex.repos import RepoMap
from annexsync.assistant.aggregator import Aggregator
from annexsync.assistant.hub import Hub
from annexsync.assistant.openfiles import open_for_writing
from annexsync.assistant.watcher import Note
from annexsync.git.index import ls_files, removal, update_index
from annexsync.sync.commit import commit_index


class Committer:
    name = "committer"

    def __init__(self, hub: Hub, clock: object = time.monotonic) -> None:
        self.hub = hub
        s = hub.settings
        self.agg = Aggregator(quiet=s.quiet, max_delay=s.max_delay, delay_add=s.delay_add)
        self.maybe_open: set[str] = set()
        self.cond = threading.Condition()
        self._now = clock  # type: ignore[assignment]
        self._message: str | None = None

    # -- input -------------------------------------------------------------------
    def note(self, n: Note) -> None:
        """Called by the watcher (from its thread)."""
        now = self._now()  # type: ignore[operator]
        with self.cond:
            if n.rescan:
                self.agg.rescan(now)
            elif not n.new_dir:
                self.agg.add(n.path, now)
                if n.maybe_open:
                    self.maybe_open.add(n.path)
                else:
                    self.maybe_open.discard(n.path)
            self.cond.notify()

    def request_full_scan(self) -> None:
        with self.cond:
            self.agg.rescan(self._now())  # type: ignore[operator]
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- the loop ------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.cond:
                batch, wait = self.agg.decide(self._now())  # type: ignore[operator]
                if batch is None:
                    self.cond.wait(wait if wait is not None else 1.0)
                    continue
                rescan = self.agg.take_rescan()
                maybe_open = self.maybe_open & batch
                self.maybe_open -= batch
            self.commit_batch(batch, maybe_open, rescan=rescan)

    def commit_pending(self) -> None:
        """Commit whatever is pending now (the merger calls this before merging)."""
        with self.cond:
            batch = set(self.agg._pending)
            self.agg._pending.clear()
            self.agg._first = self.agg._last = None
            rescan = self.agg.take_rescan()
            maybe_open = self.maybe_open & batch
            self.maybe_open -= batch
        if batch or rescan:
            self.commit_batch(batch, maybe_open, rescan=rescan)

    # -- one batch -------------------------------------------------------------------
    def commit_batch(self, paths: set[str], maybe_open: set[str], *,
                     rescan: bool = False) -> str | None:
        hub = self.hub
        repo = hub.repo
        top = str(repo.top)
        started = time.monotonic()
        with hub.worktree_lock:
            files: list[str] = []
            gone: list[str] = []
            for p in sorted(paths):
                try:
                    st = os.lstat(os.path.join(top, p))
                except FileNotFoundError:
                    gone.append(p)
                    continue
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    files.append(p)
            if maybe_open:
                busy = open_for_writing({os.path.join(top, p) for p in maybe_open
                                         if p in set(files)})
                if busy:
                    skip = {os.path.relpath(b, top) for b in busy}
                    files = [f for f in files if f not in skip]
                    hub.emit(self.name, "still-open", files=sorted(skip))
            keys: list[tuple[str, Key]] = []
            targets = ["."] if rescan else files
            if targets:
                for r in Adder(repo, hub.branch).add(targets):
                    if r.success and r.key is not None and r.note != "symlink":
                        keys.append((r.file, r.key))
                    elif not r.success:
                        hub.emit(self.name, "add-failed", file=r.file, error=r.error)
            removed = ls_files(repo.git, "--deleted") if rescan else (
                ls_files(repo.git, paths=gone) if gone else [])
            if removed:
                update_index(repo.git, [removal(p) for p in removed])
            commit = commit_index(repo, self._commit_message())
        if commit is not None:
            hub.emit(self.name, "committed", commit=commit, added=len(keys),
                     removed=len(removed), seconds=round(time.monotonic() - started, 4))
            if hub.transfers is not None and keys:
                hub.transfers.upload_new(keys)
            if hub.pusher is not None:
                hub.pusher.poke(after_uploads={k for _, k in keys})
        return commit

    def _commit_message(self) -> str:
        if self._message is None:
            repo = self.hub.repo
            desc = RepoMap.load(repo, self.hub.branch).descriptions.get(repo.uuid, "")
            self._message = f"git-annex in {desc}".rstrip()
        return self._message
