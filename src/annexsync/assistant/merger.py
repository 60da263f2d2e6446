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
the transfer scanner is told which annexed files changed (one ``diff-tree`` between
the old and new HEAD, whose symlink blobs are read in one batch). The same list tells
the committer what the merge's checkout wrote (:meth:`Committer.expect`), so the
watcher's notes for those files cost nothing. Content does not wait for the
checkout: before it, the incoming ``*/git-annex`` refs are union-merged and the
annexed files each incoming branch ref brings (``diff-tree`` from its merge base
with HEAD) go to the scanner, so downloads run while git writes the work tree.

Only events on refs others move wake a merge: ``refs/heads/synced/*``,
``refs/remotes/*``, ``refs/synced/*`` and ``packed-refs`` (our own commits move
``refs/heads/BRANCH`` and ``git-annex``, which need nothing). Our own ``synced/BRANCH``
also produces events; refs that point at our own tips are left out, so they cost one
``for-each-ref``. When only ``*/git-annex`` refs moved (other clones recording where
content went), they are union-merged without the work-tree lock and without
committing pending changes first: the committer is not held up by them.
"""

from __future__ import annotations

import os
import select
import threading
import time

from inotify_simple import INotify
from inotify_simple import flags as F

from annexsync.annex.keys import Key, parse_pointer, parse_symlink_target
from annexsync.assistant.hub import Hub
from annexsync.git.catfile import check_many
from annexsync.git.refs import diff_tree, for_each_ref, rev_parse
from annexsync.sync.gitsync import GitSync, current_branch
from annexsync.sync.merge import merge_in_progress

_MASK = F.CREATE | F.MOVED_TO | F.CLOSE_WRITE | F.DELETE | F.ONLYDIR
_INCOMING = ("refs/heads/synced/", "refs/remotes/", "refs/synced/")
MAX_POINTER_SIZE = 32768


def relevant_ref(rel: str) -> bool:
    """Pure: may a change of this path (relative to the git dir) bring something in?"""
    return rel == "packed-refs" or rel.startswith(_INCOMING)


def note_merge(hub: Hub, old_head: str | None, new_head: str | None, *,
               annex_changed: bool) -> None:
    """After a merge, with the work-tree lock still held: the committer learns what the
    checkout wrote, the transfer scanner which annexed files changed."""
    files: list[tuple[str, Key]] | None = None
    if old_head is not None and new_head is not None and old_head != new_head:
        files, states = changed_by_merge(hub, old_head, new_head)
        if hub.committer is not None:
            if merge_in_progress(hub.repo):  # the index is not HEAD's: trust nothing
                hub.committer.forget_expected()
            else:
                hub.committer.expect(states)
    if hub.scanner is None:
        return
    if files is not None:
        hub.scanner.changed_files(files, annex_changed=annex_changed)
    elif old_head != new_head:
        hub.scanner.changed(old_head, new_head, annex_changed=annex_changed)
    elif annex_changed:
        hub.scanner.poke()


def changed_by_merge(hub: Hub, old: str, new: str
                     ) -> tuple[list[tuple[str, Key]], dict[str, str | None]]:
    """Annexed files that differ between two commits, and what the work tree holds
    now for the paths a checkout wrote as symlinks or removed."""
    repo = hub.repo
    changes = list(diff_tree(repo.git, old, new))
    want = {c.new_oid for c in changes if c.new_mode == "120000"}
    regular = {c.new_oid for c in changes if c.new_mode in ("100644", "100755")}
    if regular:  # pointer files are small: never read a big git file
        want |= {oid for oid, t in check_many(repo.git, regular).items()
                 if t is not None and t[1] < MAX_POINTER_SIZE}
    blobs = {oid: (obj.data if obj else b"") for oid, obj in repo.catfile.get_many(want)}
    files: list[tuple[str, Key]] = []
    states: dict[str, str | None] = {}
    for c in changes:
        if c.new_mode == "000000":
            states[c.path] = None
            continue
        data = blobs.get(c.new_oid, b"")
        if c.new_mode == "120000":
            states[c.path] = os.fsdecode(data)
            key = parse_symlink_target(data)
        else:
            key = parse_pointer(data) if len(data) < MAX_POINTER_SIZE else None
        if key is not None:
            files.append((c.path, key))
    return files, states


class Merger:
    name = "merger"

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.sync = GitSync(hub.repo, on_event=lambda k, d: hub.emit(self.name, k, **d),
                            fill_in_process=True)
        self._stop_r, self._stop_w = os.pipe()
        self._wanted = threading.Event()
        self._last_incoming: frozenset[tuple[str, str]] | None = None
        # One merge at a time (the resync service also calls merge()), so an
        # annex-only merge never runs beside, or reports between, a full one.
        self._merging = threading.Lock()

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
                            relevant = True  # refs may have landed before the watch
                            continue
                        if ev.name.endswith(".lock"):
                            continue
                        if relevant_ref(os.path.relpath(os.path.join(d, ev.name), git_dir)):
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
        with self._merging:
            self._merge()

    def _merge(self) -> None:
        hub = self.hub
        repo = hub.repo
        t0 = time.monotonic()
        incoming = self._incoming()
        last, self._last_incoming = self._last_incoming, incoming
        if incoming == last:
            return  # only our own refs moved
        if last is not None and all(n.endswith("/git-annex") for n, _ in incoming ^ last):
            self._merge_annex_only(t0)
            return
        old_annex = hub.branch.tip()
        self._fetch_ahead(incoming - (last or frozenset()))
        with hub.worktree_lock:
            if hub.committer is not None:
                hub.committer.commit_pending()
            old_head = rev_parse(repo.git, "HEAD")
            branch = current_branch(repo)
            remotes = [s.name for s in self.sync.sync_remotes()]
            merged, conflicts = self.sync.merge_from(remotes, branch)
            new_head = rev_parse(repo.git, "HEAD")
            new_annex = hub.branch.tip()
            if branch is not None and new_head is not None and new_head != old_head:
                from annexsync.git.refs import update_ref

                update_ref(repo.git, f"refs/heads/synced/{branch}", new_head)
            if new_head != old_head or new_annex != old_annex:
                note_merge(hub, old_head, new_head, annex_changed=new_annex != old_annex)
        if new_head != old_head or new_annex != old_annex:
            hub.emit(self.name, "merge-done", refs=merged, conflicts=conflicts,
                     seconds=round(time.monotonic() - t0, 4))
            if hub.pusher is not None:
                hub.pusher.poke()

    def _fetch_ahead(self, moved: frozenset[tuple[str, str]]) -> None:
        """Content of what is about to be merged starts moving while git checks it out.

        The location logs are merged first (no work-tree lock needed), then the
        annexed files each moved branch ref changed since its merge base with HEAD go
        to the transfer scanner. After the merge the scanner is told what the merge
        really changed; what it already queued or fetched costs nothing then.
        """
        hub = self.hub
        if hub.scanner is None or not hub.settings.content:
            return
        if not any(not name.endswith("/git-annex") for name, _ in moved):
            return
        branch = current_branch(hub.repo)
        head = rev_parse(hub.repo.git, "HEAD")
        if branch is None or head is None:
            return
        # only what merge_from merges: synced/BRANCH, each remote's BRANCH and synced/BRANCH
        tips = [oid for name, oid in moved if name == f"refs/heads/synced/{branch}" or (
            name.startswith("refs/remotes/")
            and (name.endswith(f"/synced/{branch}") or name.count("/") == 3
                 and name.endswith(f"/{branch}")))]
        if not tips:
            return
        if hub.branch.merge_siblings() is not None:
            hub.emit(self.name, "merged", ref="git-annex")
        for oid in dict.fromkeys(tips):
            proc = hub.repo.git.run_status("merge-base", head, oid)
            base = proc.stdout.decode().strip() if proc.returncode == 0 else ""
            if not base or base == oid:
                continue  # unrelated histories, or nothing new
            files, _ = changed_by_merge(hub, base, oid)
            if files:
                hub.scanner.changed_files(files, annex_changed=False)

    def _merge_annex_only(self, t0: float) -> None:
        """Only */git-annex refs moved: union-merge them, without the work-tree lock
        (the git-annex branch has its own compare-and-swap and journal lock), so the
        committer is not held up by other clones' location updates."""
        hub = self.hub
        old_annex = hub.branch.tip()
        if hub.branch.merge_siblings() is None:
            return
        hub.emit(self.name, "merged", ref="git-annex")
        note_merge(hub, None, None, annex_changed=True)
        hub.emit(self.name, "merge-done", refs=[], conflicts=[],
                 seconds=round(time.monotonic() - t0, 4))
        if hub.pusher is not None and hub.branch.tip() != old_annex:
            hub.pusher.poke()
