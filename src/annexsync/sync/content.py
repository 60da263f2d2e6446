"""The key/value half of a sync round: move content where preferred content wants it.

Theory of operation
-------------------
For every annexed file in the work tree (after the git round, so the location logs
are merged):

1. if this repository wants the content and lacks it, get it from the cheapest
   available remote that has it;
2. send it to every content remote that wants it and lacks it (cheapest first);
3. once every file had 1 and 2: drop it from remotes, then from here, where it is no
   longer wanted and numcopies allows (``drop --auto`` semantics, with git-annex's
   drop-safety proofs).

Small keys between repositories on this machine move in batches (made durable with
one ``syncfs`` each, see :mod:`annexsync.transfers.runner`), so they are in a store
only once their batch is committed; the drops wait for that (``commit_staged``)
because their proofs lock the copies 1 and 2 just made. A staged move is reported
once final; one that failed at its commit leaves the locations this round believes in.

Then the location log changes are committed and pushed with a git-only round, so
the other clones learn where content now is. The decisions come from
:class:`annexsync.policy.preferred.ContentPolicy`; the moves from
:mod:`annexsync.transfers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from annexsync.annex.drop import Dropper
from annexsync.annex.keys import Key
from annexsync.annex.location import locations_many
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.repos import RepoMap
from annexsync.annex.worktree import annexed_files
from annexsync.policy.numcopies import CopyNeeds, auto_drop_allowed, count_copies
from annexsync.policy.preferred import ContentPolicy
from annexsync.remotes.base import Remote
from annexsync.remotes.registry import load_remotes
from annexsync.sync.gitsync import GitSync, SyncOptions, SyncResult
from annexsync.transfers.info import Direction
from annexsync.transfers.runner import TransferResult, Transfers

EventSink = Callable[[str, dict[str, Any]], None]


def content_remotes(repo: AnnexRepo, syncer: GitSync, names: list[str] | None = None
                    ) -> list[Remote]:
    """Remotes content moves to and from: syncable, not ignored, cheapest first."""
    remotes = [r for r in load_remotes(repo, syncer.branch) if r.info.sync]
    if names:
        remotes = [r for r in remotes if r.info.name in names]
    return remotes


def sync_content(repo: AnnexRepo, syncer: GitSync, result: SyncResult, *, jobs: int = 1,
                 on_event: EventSink | None = None, remote_names: list[str] | None = None,
                 push_after: bool = True) -> bool:
    """Transfer and drop per preferred content; returns False if anything failed.

    Events (``on_event``): ``get``, ``put`` and ``drop`` with ``file``, ``remote``
    (``"here"`` for our own copy), ``ok`` and ``error``/``errors``. A small key moved
    between repositories on this machine goes in a batch and is reported once the
    batch is durable and stored (or failed there).
    """
    emit = on_event or (lambda kind, data: None)
    branch = syncer.branch
    policy = ContentPolicy.from_logs(branch.read_many(ContentPolicy.LOGS))
    repos = RepoMap.load(repo, branch)
    here = repo.uuid
    remotes = content_remotes(repo, syncer, remote_names)
    store = ObjectStore(repo.annex_dir, bare=repo.bare)
    files = annexed_files(repo) if not repo.bare else []
    by_key: dict[Key, list[str]] = {}
    for f in files:
        by_key.setdefault(f.key, []).append(f.file)
    where = locations_many(branch, by_key)
    state = _Round(emit, {r.info.name: r.info.uuid for r in remotes}, here)
    available = {r.info.uuid: r.available() for r in remotes}
    with Transfers(repo, on_done=state.final) as tr:
        dropper = Dropper(repo, branch, remotes, repos, tr.recorder)
        try:
            # Gets and sends first: small ones are only staged until commit_staged, and
            # a drop may count on the copies they make (its proofs lock those copies).
            for key, paths in by_key.items():
                file = paths[0]
                locs = set(where[key])
                state.locs[key] = locs
                present = store.has(key)
                if present:
                    locs.add(here)
                # 1. get (wanted when any of the key's files is, as git-annex per file)
                if not present and _wanted(policy, here, paths, key, locs):
                    errors: list[str] = []
                    tried: list[str] = []
                    for r in remotes:
                        if r.info.uuid in locs and available[r.info.uuid]:
                            res = tr.download(r, key, file)
                            if res.success:
                                state.report("get", res)
                                present = True
                                locs.add(here)
                                break
                            tried.append(r.info.name)
                            errors.append(f"{r.info.name}: {res.error or 'failed'}")
                    else:
                        if tried:  # one get that failed from every remote it tried
                            state.failed("get", file, tried[0], errors)
                        elif any(r.info.uuid in locs for r in remotes):
                            state.ok = False  # only unavailable remotes have it
                # 2. send
                if present:
                    for r in remotes:
                        u = r.info.uuid
                        if (u in locs or r.info.readonly or not available[u]
                                or not _wanted(policy, u, paths, key, locs)):
                            continue
                        res = tr.upload(r, key, file, staged_ok=True)
                        state.report("put", res)
                        if res.success:
                            locs.add(u)
            tr.commit_staged()
            # 3. drop where unwanted (remotes first, here last)
            # (A drop that fails is reported, but as git-annex: a failure to drop does
            # not mean the sync failed.)
            for key, paths in by_key.items():
                changed, _ = drop_unwanted(dropper, policy, repos, key, paths,
                                           state.locs[key], remotes, available, emit)
                state.changed = state.changed or changed
        finally:
            dropper.close()
    if state.changed and push_after:
        # Tell the others where content went: commit the logs and push (no merge).
        sub = syncer.sync(SyncOptions(commit=False, pull=False, push=True,
                                      remotes=[s for s in result.remotes]))
        state.ok = state.ok and sub.ok
    return state.ok


def drop_unwanted(dropper: Dropper, policy: ContentPolicy, repos: RepoMap, key: Key,
                  paths: Sequence[str], locs: set[str], remotes: Sequence[Remote],
                  available: Mapping[str, bool], emit: EventSink) -> tuple[bool, bool]:
    """Drop ``key`` from the remotes, then from here, that want the content of none of
    ``paths`` (all the key's files: numcopies is the largest any of them asks for)
    where numcopies allows (``drop --auto`` semantics, each drop proven by
    :class:`annexsync.annex.drop.Dropper`). ``locs`` (where the content is, here
    included) is updated. Returns (anything dropped, no drop failed).

    Shared by ``sync --content`` and the assistant: the one place that decides drops.
    """
    here = repos.here
    file = paths[0] if paths else None
    changed, ok = False, True
    needs: CopyNeeds | None = None  # (gitattributes: asked only for candidates)
    for r in [*remotes, None]:
        u = here if r is None else r.info.uuid
        if u not in locs or (r is not None and not available.get(u, False)):
            continue
        # Only content none of whose files is wanted there any more (git-annex).
        if not all(policy.wants_drop(u, f, key, frozenset(locs)) for f in paths or [None]):
            continue
        have = count_copies(locs, repos.trust)
        needs = needs or dropper.needs(paths)
        if not auto_drop_allowed(have, needs,
                                 dropping_untrusted=repos.trust_of(u) == "untrusted"):
            continue
        if r is None:
            d = dropper.drop_here(key, paths, locs - {here})
        else:
            d = dropper.drop_from(r, key, paths, locs)
        errors = ([d.error] if d.error else []) + (list(d.unsafe.lines) if d.unsafe else [])
        emit("drop", {"file": file, "remote": "here" if r is None else r.info.name,
                      "ok": d.success, "error": "; ".join(errors) or None, "errors": errors})
        if d.success:
            locs.discard(u)
            changed = True
        else:
            ok = False
    return changed, ok


def _wanted(policy: ContentPolicy, uuid: str, paths: Sequence[str], key: Key,
            locs: set[str]) -> bool:
    """Does ``uuid`` want the content of any of these files?"""
    frozen = frozenset(locs)
    return any(policy.wants(uuid, f, key, frozen) for f in paths)


class _Round:
    """What one content round has done: reports transfers once final, and keeps
    the locations it believes in up to date with late failures."""

    def __init__(self, emit: EventSink, uuids: dict[str, str], here: str) -> None:
        self.emit = emit
        self.uuids = uuids
        self.here = here
        self.locs: dict[Key, set[str]] = {}
        self.ok = True
        self.changed = False

    def report(self, kind: str, res: TransferResult) -> None:
        """A transfer's result: reported now, or (staged) by :meth:`final`."""
        if not res.extra.get("staged"):
            self._emit(kind, res)

    def final(self, res: TransferResult) -> None:
        """``on_done`` of the transfers: a staged result that is final now."""
        if not (res.extra.get("committed") or res.extra.get("late")):
            return
        kind = "get" if res.direction is Direction.DOWNLOAD else "put"
        if res.extra.get("late"):  # not there after all
            locs = self.locs.get(res.key)
            if locs is not None:
                locs.discard(self.here if kind == "get" else self.uuids.get(res.remote, ""))
        self._emit(kind, res)

    def failed(self, kind: str, file: str | None, remote: str, errors: list[str]) -> None:
        """A move that failed from (or to) every remote it tried."""
        self.ok = False
        self.emit(kind, {"file": file, "remote": remote, "ok": False,
                         "error": "; ".join(errors) or None, "errors": errors})

    def _emit(self, kind: str, res: TransferResult) -> None:
        if res.success:
            self.changed = True  # (a skipped upload was recorded in our log)
        else:
            self.ok = False
        self.emit(kind, {"file": res.file, "remote": res.remote, "ok": res.success,
                         "error": res.error, "errors": [res.error] if res.error else []})
