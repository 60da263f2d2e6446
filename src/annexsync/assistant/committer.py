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

Our own writes cost nothing: whoever writes the work tree *and* the index under the
work-tree lock (this committer: the symlinks that replace added files; the merger: a
merge's checkout) tells :meth:`Committer.expect` what each path now is (a symlink
target, or absent). When the watcher's note for such a path comes, one ``lstat`` /
``readlink`` shows it is still exactly that, and it is dropped without running git;
anything else (the user changed it since) is handled as usual. An expectation is
used once and forgotten after ``EXPECT_TTL`` seconds. The add's own temporary link
names (``.annexsync-link.<pid>.*``) are ignored once gone. A batch left with nothing
to add or remove commits nothing. A batch that fails (git busy, say) is put back,
and the next batch commits the index whatever it finds.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Mapping

from annexsync.annex.add import Adder
from annexsync.annex.keys import Key, symlink_target
from annexsync.annex.repos import RepoMap
from annexsync.assistant.aggregator import Aggregator
from annexsync.assistant.hub import Hub
from annexsync.assistant.openfiles import open_for_writing
from annexsync.assistant.watcher import Note
from annexsync.git.index import ls_files, removal, update_index
from annexsync.sync.commit import commit_index

_MISSING = object()


class Committer:
    name = "committer"
    EXPECT_TTL = 30.0
    """Seconds an expectation (see the module docstring) stays usable."""

    def __init__(self, hub: Hub, clock: object = time.monotonic) -> None:
        self.hub = hub
        s = hub.settings
        self.agg = Aggregator(quiet=s.quiet, max_delay=s.max_delay, delay_add=s.delay_add)
        self.maybe_open: set[str] = set()
        self.cond = threading.Condition()
        self._now = clock  # type: ignore[assignment]
        self._message: str | None = None
        # path -> (symlink target, or None: absent; when it was expected)
        self._expected: dict[str, tuple[str | None, float]] = {}
        self._expect_lock = threading.Lock()
        self._expect_pruned = 0.0
        self._tmp_prefix = f".annexsync-link.{os.getpid()}."
        self._owed = False  # a batch failed part-way: the next one commits the index

    # -- input -------------------------------------------------------------------
    def note(self, n: Note) -> None:
        """Called by the watcher (from its thread)."""
        now = self._now()  # type: ignore[operator]
        with self.cond:
            idle = self.agg.idle
            if n.rescan:
                self.agg.rescan(now)
            elif not n.new_dir:
                self.agg.add(n.path, now)
                if n.maybe_open:
                    self.maybe_open.add(n.path)
                else:
                    self.maybe_open.discard(n.path)
            # Only a change of plan wakes the committer: the first note of a batch, a
            # batch that is full, a rescan. Later notes only push the deadline back,
            # which it sees when it wakes (one wake-up per batch, not per note: a
            # burst's thousands of notes must not ping-pong the GIL with the watcher).
            if idle or n.rescan or len(self.agg) >= self.agg.max_batch:
                self.cond.notify()

    def expect(self, states: Mapping[str, str | None]) -> None:
        """The work tree and the index now both hold this at these paths (a symlink
        target, or None: absent); notes that find exactly that are dropped."""
        now = time.monotonic()
        with self._expect_lock:
            if now - self._expect_pruned > self.EXPECT_TTL:
                self._expect_pruned = now
                limit = now - self.EXPECT_TTL
                self._expected = {p: v for p, v in self._expected.items() if v[1] >= limit}
            for p, target in states.items():
                self._expected[p] = (target, now)

    def forget_expected(self) -> None:
        """Someone changed the index behind our back: trust nothing remembered."""
        with self._expect_lock:
            self._expected.clear()

    def _take_expected(self, paths: set[str]) -> dict[str, str | None]:
        limit = time.monotonic() - self.EXPECT_TTL
        out: dict[str, str | None] = {}
        with self._expect_lock:
            if not self._expected:
                return out
            for p in paths:
                v = self._expected.pop(p, None)
                if v is not None and v[1] >= limit:
                    out[p] = v[0]
        return out

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
        try:
            return self._commit_batch(paths, maybe_open, rescan=rescan)
        except BaseException:
            # (a git process of a killed daemon may still hold index.lock, say) Nothing
            # is lost: the batch goes back, and whatever got staged is committed by the
            # next batch, which the supervisor's restart or the next note brings.
            now = self._now()  # type: ignore[operator]
            with self.cond:
                self._owed = True
                for p in paths:
                    self.agg.add(p, now)
                self.maybe_open |= maybe_open
                if rescan:
                    self.agg.rescan(now)
                self.cond.notify()
            raise

    def _commit_batch(self, paths: set[str], maybe_open: set[str], *,
                      rescan: bool = False) -> str | None:
        hub = self.hub
        repo = hub.repo
        top = str(repo.top)
        started = time.monotonic()
        with hub.worktree_lock:
            expected = self._take_expected(paths)
            files: list[str] = []
            gone: list[str] = []
            for p in sorted(paths):
                want = expected.get(p, _MISSING)
                full = os.path.join(top, p)
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    if want is None or os.path.basename(p).startswith(self._tmp_prefix):
                        continue  # removed by us (a merge), or our add's temporary link
                    gone.append(p)
                    continue
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode) and isinstance(want, str):
                    try:
                        if os.readlink(full) == want:
                            continue  # exactly what we wrote and staged
                    except OSError:
                        pass
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
            written: dict[str, str | None] = {}
            targets = ["."] if rescan else files
            if targets:
                for r in Adder(repo, hub.branch).add(targets):
                    if r.success and r.key is not None:
                        if r.note != "symlink":
                            keys.append((r.file, r.key))
                        try:
                            written[r.file] = symlink_target(r.key, r.file)
                        except ValueError:
                            pass
                    elif not r.success:
                        hub.emit(self.name, "add-failed", file=r.file, error=r.error)
            removed = ls_files(repo.git, "--deleted") if rescan else (
                ls_files(repo.git, paths=gone) if gone else [])
            if removed:
                update_index(repo.git, [removal(p) for p in removed])
            if written:
                self.expect(written)
            owed, self._owed = self._owed, False
            try:
                commit = (commit_index(repo, self._commit_message())
                          if rescan or files or removed or owed else None)
            except BaseException:
                self._owed = True
                raise
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
