"""Batched location-log updates for one repository (ours, or a local remote's).

Theory of operation
-------------------
A command that moves thousands of keys must not pay a journal file, let alone a
commit, per key. :class:`LocationRecorder` keeps the changes ("uuid has / lacks
key") in memory and flushes them in batches:

* ``mode="commit"`` (our own repository): one
  :meth:`~annexsync.annex.branch.AnnexBranch.change_and_commit` per batch: under the
  journal lock, the current content of every touched log is read in one batch
  (journal first, then the committed blob, found by its path without listing the
  branch; a log the command read moments before at the same tip, e.g. through
  :func:`~annexsync.annex.location.locations_many`, or wrote in its previous batch,
  comes from the branch's per-repository cache without any git process), the
  changes are applied with :func:`annexsync.annex.logs.set_presence` (git-annex's
  timestamp and no-churn rules) and committed together with the journal in one
  commit on the tip that was read (a compare-and-swap; a branch moved meanwhile is
  union-merged). A batch therefore costs in proportion to its keys, not to the size
  of the git-annex branch.
* ``mode="journal"`` (a local remote's repository, as git-annex does it): the same
  batched read, journal files written under that repository's journal lock, then
  that journal committed to its git-annex branch (git-annex commits a local remote's
  branch after acting on it, ``commitOnCleanup``). Left in the journal, those files
  would shadow what a push later brings into that branch: a journal file holds the
  whole log, and the next commit there would replace the pushed lines with it.

Flushes happen when the batch is large or old, before anything reads the logs for
a decision (drops), and at the end of the command. A crash loses at most the
unflushed batch: the location log then under-reports copies, which is safe (the
content is still where it is) and which ``fsck`` repairs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import log_path, now
from annexsync.annex.logs import Timestamp, set_presence
from annexsync.annex.repo import AnnexRepo
from annexsync.git.runner import GitError

Mode = Literal["commit", "journal"]


class LocationRecorder:
    """Collects location changes for one repository and writes them in batches."""

    def __init__(self, repo: AnnexRepo, *, mode: Mode = "commit", max_pending: int = 5000,
                 max_age: float = 30.0, monotonic: Callable[[], float] = time.monotonic
                 ) -> None:
        self.repo = repo
        self.branch = AnnexBranch(repo)
        self.mode = mode
        self.max_pending = max_pending
        self.max_age = max_age
        self._monotonic = monotonic
        self._pending: list[tuple[Key, str, str, Timestamp]] = []
        self._since = 0.0
        self._lock = threading.Lock()

    def record(self, key: Key, uuid: str, present: bool) -> None:
        """Note that ``uuid`` now has (or lacks) ``key``; flushed later."""
        with self._lock:
            if not self._pending:
                self._since = self._monotonic()
            self._pending.append((key.without_chunk(), uuid, "1" if present else "0", now()))
            due = (len(self._pending) >= self.max_pending
                   or self._monotonic() - self._since >= self.max_age)
        if due:
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Write every pending change (see the module docstring)."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            if self.mode == "journal":
                self._flush_journal(pending)
            else:
                self._flush_commit(pending)
        except BaseException:
            with self._lock:
                self._pending = pending + self._pending
            raise

    def _compute(self, pending: list[tuple[Key, str, str, Timestamp]]) -> dict[str, bytes]:
        paths: dict[str, list[tuple[str, str, Timestamp]]] = {}
        for key, uuid, status, ts in pending:
            paths.setdefault(log_path(key), []).append((uuid, status, ts))
        old = self.branch.read_many(paths)
        changed: dict[str, bytes] = {}
        for path, updates in paths.items():
            data = old[path]
            for uuid, status, ts in updates:
                new = set_presence(data, uuid, status, ts)
                if new is not None:
                    data = new
            if data != old[path]:
                changed[path] = data
        return changed

    def _flush_journal(self, pending: list[tuple[Key, str, str, Timestamp]]) -> None:
        journal = self.branch.journal
        with journal.locked():
            for path, data in self._compute(pending).items():
                journal.write(path, data)
            try:
                self.branch.commit()
            except (GitError, OSError):
                pass  # the journal is written: whoever commits there next has it

    def _flush_commit(self, pending: list[tuple[Key, str, str, Timestamp]]) -> None:
        changes: dict[str, list[tuple[str, str, Timestamp]]] = {}
        for key, uuid, status, ts in pending:
            changes.setdefault(log_path(key), []).append((uuid, status, ts))

        def apply(updates: list[tuple[str, str, Timestamp]]) -> Callable[[bytes], bytes | None]:
            def fn(old: bytes) -> bytes | None:
                data = old
                for uuid, status, ts in updates:
                    new = set_presence(data, uuid, status, ts)
                    if new is not None:
                        data = new
                return data if data != old else None
            return fn

        self.branch.change_and_commit({p: apply(u) for p, u in changes.items()})

    def close(self) -> None:
        self.flush()
