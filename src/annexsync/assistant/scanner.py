"""The transfer scanner: finds content to move, fully at start-up, incrementally after.

At start-up every annexed file is checked once: content this repository wants and
lacks is queued for download, content it has that a remote wants and lacks is
queued for upload; content that this repository or a remote has and no longer
wants is handed to the transferrer's drop pass. The index is streamed and checked
``CHUNK`` files at a time (:func:`annexsync.annex.worktree.iter_annexed_chunks`),
so the scan of a big tree stays small in memory. After a merge only the files the
merge changed are checked (the merger hands over the list it computed from
``diff-tree`` between the old and new HEAD), and, when the git-annex branch
changed, the downloads that found no source before are tried again.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from annexsync.annex.keys import Key, parse_pointer, parse_symlink_target
from annexsync.annex.location import locations_many
from annexsync.annex.objects import ObjectStore
from annexsync.annex.worktree import annexed_files, iter_annexed_chunks
from annexsync.assistant.hub import Hub
from annexsync.assistant.transferrer import Job
from annexsync.git.refs import diff_tree


class TransferScanner:
    name = "scanner"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.cond = threading.Condition()
        self._full = True  # the start-up scan
        self._changes: list[tuple[str | None, str | None]] = []
        self._files: list[tuple[str, Key]] = []  # changed files handed over by the merger
        self._deferred: dict[Key, str] = {}
        self._recheck_deferred = False
        self.store = ObjectStore(hub.repo.annex_dir, bare=hub.repo.bare)

    def changed(self, old: str | None, new: str | None, *, annex_changed: bool) -> None:
        with self.cond:
            if old != new:
                self._changes.append((old, new))
            if annex_changed:
                self._recheck_deferred = True
            self.cond.notify()

    def changed_files(self, files: list[tuple[str, Key]], *, annex_changed: bool) -> None:
        """These annexed files changed (a merge brought them): check them."""
        with self.cond:
            self._files.extend(files)
            if annex_changed:
                self._recheck_deferred = True
            self.cond.notify()

    def defer(self, file: str, key: Key) -> None:
        """No remote we have holds ``key`` yet: check it again after the next change of
        the location logs (a clone that got it will record and push that)."""
        with self.cond:
            self._deferred[key] = file

    def poke(self) -> None:
        with self.cond:
            self._recheck_deferred = True
            self.cond.notify()

    def rescan(self) -> None:
        """Check every annexed file again (a drive was mounted, a remote came back)."""
        with self.cond:
            self._full = True
            self._recheck_deferred = True
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self.cond:
                if not (self._full or self._changes or self._files
                        or self._recheck_deferred):
                    self.cond.wait(5)
                    continue
                full, self._full = self._full, False
                changes, self._changes = self._changes, []
                files, self._files = self._files, []
                recheck, self._recheck_deferred = self._recheck_deferred, False
            if not self.hub.settings.content or self.hub.transfers is None:
                continue
            try:
                self._scan(full, changes, files, recheck)
            except BaseException:  # the supervisor restarts us: keep the work for then
                with self.cond:
                    self._full |= full
                    self._changes[:0] = changes
                    self._files[:0] = files
                    self._recheck_deferred |= recheck
                raise

    def _scan(self, full: bool, changes: list[tuple[str | None, str | None]],
              files: list[tuple[str, Key]], recheck: bool) -> None:
        if full:
            # What the committer found at start-up (files added by a daemon killed before
            # it committed) is committed first, or this scan would not see it.
            with self.hub.worktree_lock:
                if self.hub.committer is not None:
                    self.hub.committer.commit_pending()
            count = 0
            for chunk in iter_annexed_chunks(self.hub.repo, chunk=self.CHUNK):
                count += len(chunk)
                self._check_chunk([(f.file, f.key) for f in chunk])
                del chunk
            self.hub.emit(self.name, "scan-done", files=count)
        if files:
            self.check(files)
        for old, new in changes:
            self.check(self._changed_files(old, new))
        if recheck:
            with self.cond:
                deferred, self._deferred = self._deferred, {}
            if deferred:
                self.check([(f, k) for k, f in deferred.items()])

    def _changed_files(self, old: str | None, new: str | None) -> list[tuple[str, Key]]:
        if new is None:
            return []
        if old is None:
            return [(f.file, f.key) for f in annexed_files(self.hub.repo)]
        out: list[tuple[str, Key]] = []
        changes = [c for c in diff_tree(self.hub.repo.git, old, new) if c.new_mode != "000000"]
        blobs = {oid: (obj.data if obj else b"") for oid, obj in
                 self.hub.repo.catfile.get_many({c.new_oid for c in changes})}
        for c in changes:
            data = blobs.get(c.new_oid, b"")
            key = (parse_symlink_target(data) if c.new_mode == "120000"
                   else parse_pointer(data) if len(data) < 32768 else None)
            if key is not None:
                out.append((c.path, key))
        return out

    CHUNK = 2000
    """Files checked per batch: bounds the memory of the start-up scan of a big tree."""

    def check(self, files: Iterable[tuple[str, Key]]) -> None:
        files = list(files)
        for i in range(0, len(files), self.CHUNK):
            self._check_chunk(files[i:i + self.CHUNK])

    def _check_chunk(self, files: list[tuple[str, Key]]) -> None:
        hub = self.hub
        tr = hub.transfers
        assert tr is not None
        if not files:
            return
        here = hub.repo.uuid
        policy = tr.policy()
        all_remotes = tr.remotes()
        reachable = {r.info.uuid for r in all_remotes}
        remotes = [r for r in all_remotes if not r.info.readonly]
        where = locations_many(hub.branch, [k for _, k in files])
        may_drop = policy.may_drop_anything()
        for f, key in files:
            locs = set(where.get(key, set()))
            present = self.store.has(key)
            if present:
                locs.add(here)
            if may_drop and any(policy.wants_drop(u, f, key, frozenset(locs))
                                for u in locs if u == here or u in reachable):
                tr.consider_drop(key, f)  # by the drop pass, once the queue drained
            if present:
                for r in remotes:
                    u = r.info.uuid
                    if u not in locs and policy.wants(u, f, key, frozenset(locs)):
                        tr.enqueue(Job("upload", key, f, u))
            elif policy.wants(here, f, key, frozenset(locs)):
                if locs & reachable:
                    tr.enqueue(Job("download", key, f, locs=frozenset(locs)))
                else:  # only repositories we have no remote for hold it (yet)
                    self.defer(f, key)
