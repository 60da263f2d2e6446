"""One round of git-level syncing with every remote, the way ``git annex sync`` does it.

Theory of operation
-------------------
1. *commit*: the journal goes into the git-annex branch; new and changed files are
   added (``annex.largefiles`` decides annex or git), deleted files are removed from
   the index (in the same ``update-index``), and if the index differs from HEAD it is
   committed with plumbing, message ``git-annex in <description>``: when nothing else
   was staged, HEAD's tree with the staged paths changed (one ``fast-import``; a
   ``write-tree`` refreshes the index's tree cache meanwhile), else
   ``write-tree``/``commit-tree``; then ``update-ref`` compare-and-swap.
2. *merge local*: ``synced/BRANCH`` pushed into us by another clone is merged.
3. *fetch* every syncable remote, in parallel; a local clone whose branches are
   already our tracking refs is not fetched from (:mod:`annexsync.sync.localpeer`).
4. *merge* each remote's ``BRANCH`` and ``synced/BRANCH`` (cheapest remote first);
   conflicts are resolved automatically (:mod:`annexsync.sync.merge`), then every
   ``*/git-annex`` branch is union-merged.
5. *push* in parallel, one ``git push --porcelain`` per remote:
   ``BRANCH:synced/BRANCH +git-annex:synced/git-annex`` must succeed, ``git-annex``
   and ``BRANCH`` pushed directly may be refused (expected and ignored, as git-annex
   does). A push rejected because the remote moved on is answered by fetch, merge
   and push again. An unreachable remote is reported and skipped; it never stops the
   others. A local clone without receive hooks gets the same objects and ref
   updates without receive-pack and its connectivity walk
   (:mod:`annexsync.sync.localpeer`).

Each step reports through ``on_event`` so the CLI and the assistant can show it.

Cost when little changed (a large repository, a few files changed): work
proportional to the number of files is left to git, once: one ``git status`` pass
finds new, modified and deleted files (nothing more happens when it finds none), with
the untracked cache, so only directories that changed are read;
git-annex branch files are read without listing the branch
(:class:`~annexsync.sync.branchview.SyncBranch`). Refs already merged are found
with one ``for-each-ref --no-merged`` per branch kind, and a remote whose
``synced/BRANCH`` and ``git-annex`` already hold ours is not pushed to (git-annex's
rule). HEAD is read from its file, not asked of git; its commit and tree come from
the shared ``cat-file``. A local clone read by the fetch is not read again for the
push.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annexsync.annex.branch import REF as ANNEX_REF
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.logs import current_uuid_values, parse_uuid_log
from annexsync.annex.repo import AnnexRepo
from annexsync.git.index import IndexEntry, removal, update_index
from annexsync.git.maintenance import AutoGc
from annexsync.git.refs import commit_tree, update_ref, write_tree
from annexsync.remotes.registry import RemoteSpec, remote_specs
from annexsync.sync import localpeer
from annexsync.sync.branchview import SyncBranch
from annexsync.sync.localpeer import LocalPeer, NotDone, nothing_to_fetch, open_peer
from annexsync.sync.status import PendingStatus, merge_in_progress, status_args

if TYPE_CHECKING:
    from annexsync.annex.add import Adder

EventSink = Callable[[str, dict[str, Any]], None]


@dataclass
class SyncOptions:
    commit: bool = True
    pull: bool = True
    push: bool = True
    jobs: int = 4
    remotes: Sequence[str] = ()  # names; empty = every syncable remote
    message: str | None = None


@dataclass
class RemoteResult:
    name: str
    fetched: bool = False
    pushed: bool = False
    error: str | None = None


@dataclass
class SyncResult:
    committed: str | None = None
    merged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    remotes: dict[str, RemoteResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.error is None for r in self.remotes.values())


@dataclass
class LocalChanges:
    """What ``git status`` says about the work tree and the index."""

    changed: list[str] = field(default_factory=list)  # new or modified (or unmerged)
    deleted: list[str] = field(default_factory=list)
    # Of ``changed``: untracked, or staged as a symlink: none is staged unlocked.
    not_unlocked: set[str] = field(default_factory=set)
    staged: bool = False  # the index differs from HEAD (or HEAD is unborn)

    @property
    def nothing(self) -> bool:
        return not (self.changed or self.deleted or self.staged)


def local_changes(repo: AnnexRepo, pending: PendingStatus | None = None) -> LocalChanges:
    """New, modified and deleted work-tree files, and whether anything is staged.

    One ``git status`` (:mod:`annexsync.sync.status`; ``pending`` when it was started
    already) is one pass over the work tree: it stats every index entry (in threads),
    looks at the content of entries whose stat info is stale, reads again the
    directories that changed (untracked cache), and writes the refreshed stat info
    back (when it can take the index lock), so later passes stay cheap.
    """
    out = pending.output() if pending is not None else repo.git.run(*status_args(repo))
    res = LocalChanges()
    for rec in out.split(b"\0"):
        kind = rec[:1]
        if kind == b"?":
            path = rec[2:].decode("utf-8", "surrogateescape")
            res.changed.append(path)
            res.not_unlocked.add(path)
        elif kind == b"1":  # 1 XY sub mH mI mW hH hI path
            fields = rec.split(b" ", 8)
            path = fields[8].decode("utf-8", "surrogateescape")
            index, worktree = fields[1][:1], fields[1][1:2]
            res.staged = res.staged or index != b"."
            if worktree == b"D":
                res.deleted.append(path)
            elif worktree != b".":
                res.changed.append(path)
                if fields[4] == b"120000":  # the index has a symlink (mI)
                    res.not_unlocked.add(path)
        elif kind == b"u":  # u XY sub m1 m2 m3 mW h1 h2 h3 path: unmerged, no MERGE_HEAD
            res.changed.append(rec.split(b" ", 10)[10].decode("utf-8", "surrogateescape"))
            res.staged = True
        elif rec.startswith(b"# branch.oid (initial)"):
            res.staged = True  # unborn branch: let the commit step decide
    return res


def _adder(repo: AnnexRepo, branch: AnnexBranch, changes: LocalChanges,
           staged: list[IndexEntry], removals: list[IndexEntry], index_writes: _Serial,
           on_staged: Callable[[], None] | None = None) -> Adder:
    """An :class:`Adder` for files :func:`local_changes` already found: it does not
    look for them again (that would be a second pass over the whole work tree), nor
    ask the index about files status showed are not staged unlocked.

    Its index updates carry ``removals`` too (one index write, not two). What it
    stages (removals included) is appended to ``staged`` and ``on_staged`` is called;
    the index itself is written through ``index_writes``, in the background, while
    the adder goes on to record locations and commit the git-annex branch (and the
    caller builds its commit): rewriting a 100,000-entry index takes ~40 ms. The
    caller waits for it before it moves HEAD."""
    from annexsync.annex.add import Adder  # imported only when something changed

    class KnownChanges(Adder):
        def candidates(self, paths: Sequence[str]) -> list[tuple[str, str]]:
            self.not_unlocked.update(changes.not_unlocked)
            return [(f, f) for f in changes.changed]

        def _update_index(self, entries: list[IndexEntry]) -> None:
            # Removals first: a file that replaced a directory, or the reverse.
            batch = [*removals, *entries]
            staged.extend(batch)
            removals.clear()
            if on_staged is not None:
                on_staged()
            index_writes.submit(lambda: Adder._update_index(self, batch))

        def _finish_unlocked(self) -> None:
            if self._unlocked:
                index_writes.wait()  # their index entries are refreshed next
            super()._finish_unlocked()

    return KnownChanges(repo, branch)


class _Serial:
    """Runs submitted jobs one after another in a background thread; :meth:`wait`
    joins them and raises the first failure."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], None]) -> None:
        prev = self._thread

        def run() -> None:
            if prev is not None:
                prev.join()
            if self._error is not None:
                return
            try:
                job()
            except BaseException as e:  # handed to the caller by wait()
                self._error = e

        self._thread = threading.Thread(target=run, name="index-write", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        t, self._thread = self._thread, None
        if t is not None:
            t.join()
        if self._error is not None:
            e, self._error = self._error, None
            raise e


class _EarlyCommit:
    """The commit of what was staged, built in a thread while the adder goes on to
    commit the git-annex branch (two ``fast-import`` at once, ~20 ms each)."""

    def __init__(self, build: Callable[[list[IndexEntry]], str]) -> None:
        self._build = build
        self._thread: threading.Thread | None = None
        self._entries: list[IndexEntry] = []
        self._commit: str | None = None
        self._error: BaseException | None = None

    def start(self, entries: list[IndexEntry]) -> None:
        self.wait()
        self._entries, self._commit, self._error = list(entries), None, None

        def run() -> None:
            try:
                self._commit = self._build(self._entries)
            except BaseException as e:  # handed to the caller by result()
                self._error = e

        self._thread = threading.Thread(target=run, name="annexsync-commit", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def result(self, entries: list[IndexEntry]) -> str:
        """The commit of ``entries``: the one built early when they are the same."""
        self.wait()
        if self._entries == entries:
            if self._error is not None:
                raise self._error
            if self._commit is not None:
                return self._commit
        return self._build(list(entries))


def head_and_tree(repo: AnnexRepo) -> tuple[str | None, str | None]:
    """HEAD's commit and tree ids (None, None on an unborn branch), asked of the
    shared ``cat-file --batch`` (no new process; it resolves HEAD afresh each time)."""
    obj = repo.catfile.get("HEAD^{commit}")
    if obj is None or obj.type != "commit" or not obj.data.startswith(b"tree "):
        return None, None
    return obj.oid, _tree_of(obj.data)


def _tree_of(commit: bytes) -> str:
    """The tree id in a commit object's text."""
    return commit.split(b"\n", 1)[0][5:].decode()


def refs_not_merged(repo: AnnexRepo, into: str, refs: Sequence[str]) -> list[str] | None:
    """Those of ``refs`` (full names) that exist and are not merged into ``into``,
    in the given order; None when ``into`` does not exist."""
    if not refs:
        return []
    proc = repo.git.run_status("for-each-ref", "--format=%(refname)", f"--no-merged={into}",
                               *refs)
    if proc.returncode != 0:
        return None
    found = set(proc.stdout.decode("utf-8", "surrogateescape").splitlines())
    return [r for r in refs if r in found]


def head_ref(repo: AnnexRepo) -> str | None:
    """The ref HEAD points to (``refs/heads/BRANCH``), or None when it is detached.

    Read from the ``HEAD`` file (no process) when it is a plain symbolic ref."""
    try:
        text = (repo.git_dir / "HEAD").read_text(encoding="utf-8", errors="surrogateescape")
    except OSError:
        text = ""
    if text.startswith("ref: refs/") and text.endswith("\n") and text.count("\n") == 1:
        return text[5:-1]
    proc = repo.git.run_status("symbolic-ref", "-q", "HEAD")
    name = proc.stdout.decode("utf-8", "surrogateescape").strip()
    return name if proc.returncode == 0 and name else None


def current_branch(repo: AnnexRepo) -> str | None:
    """The checked-out branch's short name, or None when HEAD is detached."""
    ref = head_ref(repo)
    return ref[len("refs/heads/"):] if ref is not None and ref.startswith("refs/heads/") else None


def git_env_for(spec: RemoteSpec, repo: AnnexRepo) -> dict[str, str]:
    """Environment for git fetch/push to this remote (the cached ssh connection)."""
    if spec.kind != "ssh":
        return {}
    from annexsync.remotes.ssh import SshConnections

    # The same connections (ControlMaster sockets, annex-ssh-options) as the remote's
    # content transfers use; git's ssh goes through the annexsync-ssh-wrapper.
    return SshConnections.for_repo(repo.git_dir, repo.config, remote=spec.name).git_env()


def local_unavailable(spec: RemoteSpec, repo: AnnexRepo) -> str | None:
    """For a local-path remote that is not there now (drive unplugged, empty mount
    point, another repository at its path): why. None for every other remote."""
    if spec.kind != "local" or not spec.url:
        return None
    from annexsync.remotes.gitlocal import unavailable_reason
    from annexsync.remotes.registry import local_path_of

    return unavailable_reason(local_path_of(spec.url, repo.top), spec.uuid)


class GitSync:
    """Runs sync rounds for one repository."""

    def __init__(self, repo: AnnexRepo, *, on_event: EventSink | None = None,
                 skip_unavailable: bool = False, fill_in_process: bool = False,
                 pending_status: PendingStatus | None = None,
                 auto_gc: AutoGc | None = None) -> None:
        self.repo = repo
        # git's automatic maintenance, which our plumbing does not trigger by itself
        # (:mod:`annexsync.git.maintenance`); the clones pushed into directly are noted
        # in _fed until housekeeping() looks at them.
        self.auto_gc = auto_gc or AutoGc()
        self._fed: dict[str, LocalPeer] = {}
        self._fed_lock = threading.Lock()
        # A status started for the next commit_local (by the sync command, before
        # it imported this module); None: commit_local runs its own.
        self.pending_status = pending_status
        # The assistant: when the repository's only hooks are the smudge --update ones,
        # merge without hooks and fill unlocked files here (no Python start-up per merge).
        self.fill_in_process = fill_in_process
        # The assistant's triggers: an unplugged drive is left out of sync_remotes().
        self.skip_unavailable = skip_unavailable
        self.branch = SyncBranch(repo)
        self.on_event = on_event or (lambda kind, data: None)
        self._merging = threading.Lock()
        self._peer_configs: localpeer.ConfigCache = {}
        # During sync(): clones its fetch read and found nothing new in; the round's
        # push reuses that reading (a clone that moved since fails the push's
        # compare-and-swap, and git push takes over).
        self._fetched_peers: dict[str, LocalPeer] | None = None
        self._in_round = False
        self._tree_refresh: subprocess.Popen[bytes] | None = None

    # -- commit ------------------------------------------------------------------
    def commit_local(self, message: str | None = None) -> str | None:
        """Add new/changed files, remove deleted ones, commit if anything changed.

        When nothing else was staged, the index is HEAD's tree plus what this step
        staged, so the commit is built from HEAD with just those paths changed (one
        ``fast-import``, ~15 ms) instead of by ``write-tree``, which reads and rewrites
        the whole index (~45 ms for 100,000 files). ``write-tree`` still runs, so the
        index keeps the cache of its trees that ``status`` relies on; in a sync round
        it runs while the round goes on (see :meth:`_finish_tree_refresh`)."""
        repo = self.repo
        self.branch.commit()
        if repo.bare:
            return None
        pending, self.pending_status = self.pending_status, None
        if merge_in_progress(repo):
            from annexsync.sync.merge import resolve_conflicts

            if pending is not None:
                pending.discard()  # it ran before the merge's index changes
                pending = None
            resolve_conflicts(repo)
        if pending is not None:
            # While git status runs: the adder is needed whenever anything changed.
            import annexsync.annex.add  # noqa: F401
        changes = local_changes(repo, pending)
        if changes.nothing:
            return None  # the index is HEAD's tree and the work tree is the index
        head, head_tree = head_and_tree(repo)
        fast = head is not None and not changes.staged and self._plain_commits()
        if message is None:
            message = f"git-annex in {self.description()}".rstrip()
        staged: list[IndexEntry] = []
        removals = [removal(p) for p in changes.deleted]
        early: _EarlyCommit | None = None
        if fast:
            assert head is not None
            parent, text = head, message
            early = _EarlyCommit(lambda entries: self._commit_staged(parent, entries, text))
        if changes.changed:
            on_staged = (lambda: early.start(staged)) if early is not None else None
            index_writes = _Serial()
            try:
                for r in _adder(repo, self.branch, changes, staged, removals,
                                index_writes, on_staged).add(["."]):
                    if not r.success:
                        self.on_event("add-failed", {"file": r.file, "error": r.error})
            finally:
                try:
                    index_writes.wait()  # the index has what HEAD is about to get
                finally:
                    if early is not None:
                        early.wait()
        if removals:  # the adder staged nothing (or there was nothing to add)
            update_index(repo.git, removals)
            staged += removals
        if early is not None:
            # The index is HEAD's tree plus what was staged: HEAD with those paths
            # changed is the commit write-tree + commit-tree would make.
            assert head is not None
            if not staged:
                return None  # the index is still HEAD's tree
            commit = early.result(staged)
            self._start_tree_refresh()
            obj = repo.catfile.get(commit)
            if obj is None or _tree_of(obj.data) == head_tree:
                return None  # what was staged is what HEAD has (a dangling commit)
        else:
            tree = write_tree(repo.git)
            head, head_tree = head_and_tree(repo)
            if tree == head_tree:
                return None
            commit = commit_tree(repo.git, tree, [head] if head else [], message)
        ref = head_ref(repo) or "HEAD"
        update_ref(repo.git, ref, commit, head or "0" * 40, "annexsync: commit")
        self.on_event("committed", {"commit": commit})
        return commit

    def _plain_commits(self) -> bool:
        """Would ``commit-tree`` write a commit with nothing but tree, parent, author,
        committer and message? (Not with signing or a commit encoding configured.)"""
        cfg = self.repo.config
        return not cfg.get_bool("commit.gpgsign") and cfg.get("i18n.commitencoding") is None

    def _commit_staged(self, head: str, staged: Sequence[IndexEntry], message: str) -> str:
        """HEAD's tree with the staged entries applied, committed on HEAD (no ref moves);
        the same commit ``write-tree`` + ``commit-tree`` would make from the index."""
        from annexsync.git.fastimport import author_ident, commit_tree_changes, committer_ident

        last = {e.path: e for e in staged}  # a path staged twice: the index has the last
        cfg = self.repo.config
        return commit_tree_changes(
            self.repo.git, head,
            {p: None if e.mode == "0" else ("oid", e.oid) for p, e in last.items()},
            message, ident=committer_ident(self.repo.git, cfg),
            author=author_ident(self.repo.git, cfg),
            modes={p: e.mode for p, e in last.items() if e.mode != "0"}, config=cfg)

    def _start_tree_refresh(self) -> None:
        """``write-tree`` for the index's tree cache: in the background during a sync
        round (nothing else there touches the index until a merge, which waits for it),
        at once otherwise."""
        self._finish_tree_refresh()
        proc = self.repo.git.popen("write-tree", stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._tree_refresh = proc
        if not self._in_round:
            self._finish_tree_refresh()

    def _finish_tree_refresh(self) -> None:
        """Wait for :meth:`_start_tree_refresh`'s ``write-tree`` (before anything that
        writes the index). Its failure (say another git held the index lock) only
        leaves the tree cache to be rebuilt later."""
        proc, self._tree_refresh = self._tree_refresh, None
        if proc is not None:
            proc.wait()

    def description(self) -> str:
        """This repository's description (uuid.log), as the commit message uses it."""
        values = current_uuid_values(parse_uuid_log(self.branch.read("uuid.log")))
        line = values.get(self.repo.uuid)
        return line.value if line is not None else ""

    # -- remotes -----------------------------------------------------------------
    def sync_remotes(self, names: Sequence[str] = ()) -> list[RemoteSpec]:
        """Git remotes to sync with, cheapest first (``annex-sync=false`` skipped)."""
        specs = [s for s in remote_specs(self.repo, self.branch) if not s.special and s.url]
        if names:
            by_name = {s.name: s for s in specs}
            missing = [n for n in names if n not in by_name]
            if missing:
                from annexsync.errors import AnnexError

                raise AnnexError(f"there is no available git remote named \"{missing[0]}\"")
            return [by_name[n] for n in names]
        return [s for s in specs if s.sync and not (
            self.skip_unavailable and local_unavailable(s, self.repo) is not None)]

    def fetch(self, spec: RemoteSpec) -> str | None:
        """``git fetch REMOTE``; returns an error message or None."""
        peer, why = self._local_peer(spec)
        if why is not None:
            return f"{spec.name} is not available: {why}"  # no git process, no noise
        if peer is not None and nothing_to_fetch(self.repo, spec.name, peer):
            if self._fetched_peers is not None:
                self._fetched_peers[spec.name] = peer
            self.on_event("fetched", {"remote": spec.name})
            return None
        proc = self.repo.git.run_status("fetch", "--quiet", "--no-tags", spec.name,
                                        env=git_env_for(spec, self.repo))
        if proc.returncode != 0:
            return _first_error(proc.stderr) or f"fetch from {spec.name} failed"
        self.on_event("fetched", {"remote": spec.name})
        return None

    # -- merge -------------------------------------------------------------------
    def merge_from(self, specs: Sequence[str], branch: str | None) -> tuple[list[str], list[str]]:
        """Merge local synced/BRANCH and each remote's branches; union-merge git-annex.

        One merge at a time: pushes to several remotes run in threads, and each may
        answer a rejection by merging (in the one work tree)."""
        with self._merging:
            return self._merge_from(specs, branch)

    def _merge_from(self, specs: Sequence[str], branch: str | None
                    ) -> tuple[list[str], list[str]]:
        merged: list[str] = []
        conflicts: list[str] = []
        if branch is not None and not self.repo.bare:
            refs = [f"refs/heads/synced/{branch}"]
            for name in specs:
                refs += [f"refs/remotes/{name}/{branch}", f"refs/remotes/{name}/synced/{branch}"]
            pending = refs_not_merged(self.repo, "HEAD", refs)
            todo = refs if pending is None else pending
            hooks = True
            if todo:
                # Imported only when there is something to merge (start-up of a sync).
                from annexsync.annex.init import hooks_are_ours_only
                from annexsync.sync.merge import merge_ref

                self._finish_tree_refresh()  # a merge writes the index
                hooks = not (self.fill_in_process and hooks_are_ours_only(self.repo))
            for ref in todo:
                res = merge_ref(self.repo, ref, run_hooks=hooks)
                if res.merged:
                    merged.append(ref)
                    conflicts += res.conflicts
                    self.on_event("merged", {"ref": ref, "conflicts": res.conflicts})
            if merged and not hooks:
                self._fill_unlocked()
        if self._siblings_to_merge() and self.branch.merge_siblings() is not None:
            self.on_event("merged", {"ref": "git-annex"})
        return merged, conflicts

    def _fill_unlocked(self) -> None:
        """What the post-merge hook (``smudge --update``) would have done, in-process."""
        from annexsync.annex.smudge import update_smudged
        from annexsync.errors import AnnexError

        try:
            # The keys database is reconciled by its next reader, as after the hook.
            res = update_smudged(self.repo, reconcile=False)
        except AnnexError as e:
            self.on_event("fill-failed", {"error": str(e)})
            return
        if res.populated or res.failed:
            self.on_event("filled", {"files": len(res.populated), "failed": len(res.failed)})

    def _siblings_to_merge(self) -> bool:
        """Is some other */git-annex branch not merged into ours yet (or ours missing)?"""
        proc = self.repo.git.run_status(
            "for-each-ref", "--format=%(refname)", f"--no-merged={ANNEX_REF}",
            "refs/remotes", "refs/heads/synced", "refs/synced")
        if proc.returncode != 0:
            return True
        return any(r.endswith("/git-annex") and r != ANNEX_REF
                   for r in proc.stdout.decode("utf-8", "surrogateescape").splitlines())

    def needs_push(self, spec: RemoteSpec, branch: str | None) -> bool:
        """Does ``spec`` lack commits of our BRANCH or git-annex? (git-annex's rule: judged
        by its synced/BRANCH, synced/git-annex and git-annex as last fetched or pushed.)"""
        return self._needs_push(spec, branch)[0]

    def _needs_push(self, spec: RemoteSpec, branch: str | None) -> tuple[bool, dict[str, str]]:
        """:meth:`needs_push`, and the ids of our git-annex and BRANCH refs."""
        ours = [ANNEX_REF] + ([f"refs/heads/{branch}"] if branch is not None else [])
        tracking = [f"refs/remotes/{spec.name}/{b}" for b in
                    ("synced/git-annex", "git-annex", *([f"synced/{branch}"] if branch else []))]
        proc = self.repo.git.run_status("for-each-ref", "--format=%(objectname) %(refname)",
                                        *ours, *tracking)
        have: dict[str, str] = {}
        for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
            oid, _, name = line.partition(" ")
            have[name] = oid
        theirs = [t for t in tracking if t in have]
        mine = {o: have[o] for o in ours if o in have}
        if not theirs:
            return bool(mine), mine
        proc = self.repo.git.run_status("rev-list", "-n1", *mine, "--not", *theirs, "--")
        return proc.returncode != 0 or bool(proc.stdout.strip()), mine

    def _local_peer(self, spec: RemoteSpec) -> tuple[LocalPeer | None, str | None]:
        """(the clone behind a local remote, for the fast paths, or None; why the remote
        is not available, or None)."""
        if spec.kind == "local" and spec.url:
            peer = open_peer(self.repo, spec, self._peer_configs)
            if peer is not None and (not spec.uuid or peer.config.get("annex.uuid") == spec.uuid):
                return peer, None
        return None, local_unavailable(spec, self.repo)

    # -- push --------------------------------------------------------------------
    def push(self, spec: RemoteSpec, branch: str | None, *, force: bool = False
             ) -> str | None:
        """Push our branches to ``spec`` (unless it has them already and not ``force``);
        returns an error message or None.

        ``BRANCH:synced/BRANCH`` and ``+git-annex:synced/git-annex`` must succeed; the
        direct ``git-annex:git-annex`` and ``BRANCH:BRANCH`` (refused by a non-bare
        clone that has BRANCH checked out, or when not a fast-forward) may fail, as in
        git-annex. A local clone is pushed to without receive-pack when it can be
        (:mod:`annexsync.sync.localpeer`); one ``git push`` otherwise."""
        peers = self._fetched_peers
        peer = peers.pop(spec.name, None) if peers else None
        why = None
        if peer is None:
            peer, why = self._local_peer(spec)
        if why is not None:
            return f"{spec.name} is not available: {why}"
        needed, ours = self._needs_push(spec, branch)
        if not force and not needed:
            return None
        if peer is not None:
            specs = [(ANNEX_REF, "refs/heads/synced/git-annex", True, True),
                     (ANNEX_REF, ANNEX_REF, False, False)]
            if branch is not None:
                head = f"refs/heads/{branch}"
                specs[:0] = [(head, f"refs/heads/synced/{branch}", False, True)]
                specs.append((head, head, False, False))
            try:
                updated = localpeer.push(self.repo, spec.name, peer, ours, specs)
            except NotDone:
                pass  # git push decides (and answers a rejection)
            else:
                if updated:
                    with self._fed_lock:
                        self._fed[str(peer.git.git_dir)] = peer
                self.on_event("pushed", {"remote": spec.name})
                return None
        git = self.repo.git
        env = git_env_for(spec, self.repo)
        required = ["refs/heads/synced/git-annex"]
        refspecs = ["+refs/heads/git-annex:refs/heads/synced/git-annex",
                    "refs/heads/git-annex:refs/heads/git-annex"]
        if branch is not None:
            required.append(f"refs/heads/synced/{branch}")
            refspecs[:0] = [f"refs/heads/{branch}:refs/heads/synced/{branch}"]
            refspecs.append(f"refs/heads/{branch}:refs/heads/{branch}")
        error: str | None = None
        for attempt in range(3):
            # One push, not atomic: each ref is accepted or refused on its own.
            proc = git.run_status("push", "--porcelain", spec.name, *refspecs, env=env)
            error = _push_error(proc, required)
            if error is None:
                break
            error = error or f"push to {spec.name} failed"
            if attempt == 2:
                break
            # Most likely the remote moved on: pull what it has, merge, and push
            # again. If it cannot even be fetched, give up.
            if self.fetch(spec) is not None:
                break
            self.merge_from([spec.name], branch)
        if error is not None:
            return error
        self.on_event("pushed", {"remote": spec.name})
        return None

    # -- a whole round -------------------------------------------------------------
    def sync(self, opts: SyncOptions | None = None) -> SyncResult:
        opts = opts or SyncOptions()
        result = SyncResult()
        self._fetched_peers = {}
        self._in_round = True
        try:
            self._sync(opts, result)
            self.housekeeping()
            return result
        finally:
            self._in_round = False
            self._fetched_peers = None
            self._finish_tree_refresh()
            if self.pending_status is not None:  # --no-commit, or a failure before it
                self.pending_status.discard()
                self.pending_status = None

    def housekeeping(self) -> list[Path]:
        """git's automatic maintenance here and in the clones fed without receive-pack
        (receive-pack would have run it there); returns the git dirs it started in."""
        with self._fed_lock:
            fed, self._fed = self._fed, {}
        started = []
        if self.auto_gc.check(self.repo.git, self.repo.config):
            started.append(self.repo.git.git_dir)
        for peer in fed.values():
            if self.auto_gc.check(peer.git, peer.config, foreign=True):
                started.append(peer.git.git_dir)
        return started

    def _sync(self, opts: SyncOptions, result: SyncResult) -> SyncResult:
        specs = self.sync_remotes(opts.remotes)
        for s in specs:
            result.remotes[s.name] = RemoteResult(s.name)
        reachable = [s.name for s in specs]
        with ThreadPoolExecutor(max(1, opts.jobs)) as pool:
            # Fetching needs nothing from the commit step: it runs meanwhile.
            fetches = [pool.submit(self.fetch, s) for s in specs] if opts.pull else []
            if opts.commit:
                result.committed = self.commit_local(opts.message)
            else:
                self.branch.commit()
            errors = [f.result() for f in fetches]
        branch = current_branch(self.repo)
        if fetches:
            reachable = []
            for s, err in zip(specs, errors, strict=True):
                rr = result.remotes[s.name]
                rr.fetched = err is None
                rr.error = err
                if err is None:
                    reachable.append(s.name)
                else:
                    self.on_event("remote-failed", {"remote": s.name, "error": err})
        if opts.pull:
            merged, conflicts = self.merge_from(reachable, branch)
            result.merged, result.conflicts = merged, conflicts
        if branch is not None and not self.repo.bare:
            # pushLocal: synced/BRANCH follows BRANCH, so other clones can merge it.
            self.repo.git.run_status("update-ref", f"refs/heads/synced/{branch}", "HEAD")
        if opts.push:
            targets = [s for s in specs if s.name in reachable or not opts.pull]
            with ThreadPoolExecutor(max(1, opts.jobs)) as pool:
                errors = list(pool.map(lambda s: self.push(s, branch), targets))
            for s, err in zip(targets, errors, strict=True):
                rr = result.remotes[s.name]
                rr.pushed = err is None
                if err is not None:
                    rr.error = err
                    self.on_event("remote-failed", {"remote": s.name, "error": err})
        return result


def _push_error(proc: subprocess.CompletedProcess[bytes], required: list[str]) -> str | None:
    """None if ``git push --porcelain`` updated (or found up to date) every required
    destination ref; else the reason ("" when git did not say)."""
    done: set[str] = set()
    for line in proc.stdout.decode("utf-8", "surrogateescape").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] in (" ", "+", "-", "*", "=") and ":" in parts[1]:
            done.add(parts[1].rsplit(":", 1)[1])
    if all(r in done for r in required):
        return None
    return _first_error(proc.stderr)


def _first_error(stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("fatal:", "error:", "ERROR")):
            return ln
    return lines[0] if lines else ""
