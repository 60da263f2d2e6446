"""The key/value half of a sync round: move content where preferred content wants it.

Theory of operation
-------------------
For every annexed file in the work tree (after the git round, so the location logs
are merged):

1. if this repository wants the content and lacks it, get it from the cheapest
   available remote that has it;
2. send it to every content remote that wants it and lacks it (cheapest first);
3. drop it from remotes, then from here, where it is no longer wanted and numcopies
   allows (``drop --auto`` semantics, with git-annex's drop-safety proofs).

Then the location log changes are committed and pushed with a git-only round, so
the other clones learn where content now is. The decisions come from
:class:`annexsync.policy.preferred.ContentPolicy`; the moves from
:mod:`annexsync.transfers`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from annexsync.annex.drop import Dropper
from annexsync.annex.location import locations_many
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.repos import RepoMap
from annexsync.annex.worktree import annexed_files
from annexsync.policy.numcopies import auto_drop_allowed, count_copies
from annexsync.policy.preferred import ContentPolicy
from annexsync.remotes.base import Remote
from annexsync.remotes.registry import load_remotes
from annexsync.sync.gitsync import GitSync, SyncOptions, SyncResult
from annexsync.transfers.runner import Transfers

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
    """Transfer and drop per preferred content; returns False if anything failed."""
    emit = on_event or (lambda kind, data: None)
    branch = syncer.branch
    policy = ContentPolicy.from_logs(branch.read_many(ContentPolicy.LOGS))
    repos = RepoMap.load(repo, branch)
    here = repo.uuid
    remotes = content_remotes(repo, syncer, remote_names)
    store = ObjectStore(repo.annex_dir, bare=repo.bare)
    files = annexed_files(repo) if not repo.bare else []
    by_key: dict[Any, list[str]] = {}
    for f in files:
        by_key.setdefault(f.key, []).append(f.file)
    where = locations_many(branch, by_key)
    ok = True
    changed = False
    available = {r.info.uuid: r.available() for r in remotes}
    with Transfers(repo) as tr:
        dropper = Dropper(repo, branch, remotes, repos, tr.recorder)
        try:
            for key, paths in by_key.items():
                file = paths[0]
                locs = set(where[key])
                present = store.has(key)
                if present:
                    locs.add(here)
                # 1. get
                if not present and policy.wants(here, file, key, frozenset(locs)):
                    for r in remotes:
                        if r.info.uuid in locs and available[r.info.uuid]:
                            res = tr.download(r, key, file)
                            emit("get", {"file": file, "remote": r.info.name,
                                         "ok": res.success, "error": res.error})
                            if res.success:
                                present = True
                                locs.add(here)
                                changed = True
                                break
                    else:
                        if any(r.info.uuid in locs for r in remotes):
                            ok = False
                # 2. send
                if present:
                    for r in remotes:
                        u = r.info.uuid
                        if (u in locs or r.info.readonly or not available[u]
                                or not policy.wants(u, file, key, frozenset(locs))):
                            continue
                        res = tr.upload(r, key, file)
                        emit("put", {"file": file, "remote": r.info.name,
                                     "ok": res.success, "error": res.error})
                        if res.success:
                            locs.add(u)
                            changed = True
                        else:
                            ok = False
                # 3. drop where unwanted (remotes first, here last)
                needs = dropper.needs(paths)
                for r in [*remotes, None]:
                    u = here if r is None else r.info.uuid
                    if u not in locs or (r is not None and not available[u]):
                        continue
                    if not policy.wants_drop(u, file, key, frozenset(locs)):
                        continue
                    have = count_copies(locs, repos.trust)
                    if not auto_drop_allowed(have, needs,
                                             dropping_untrusted=repos.trust_of(u) == "untrusted"):
                        continue
                    if r is None:
                        d = dropper.drop_here(key, paths, locs - {here})
                    else:
                        d = dropper.drop_from(r, key, paths, locs)
                    emit("drop", {"file": file, "remote": "here" if r is None else r.info.name,
                                  "ok": d.success, "error": d.error})
                    if d.success:
                        locs.discard(u)
                        changed = True
        finally:
            dropper.close()
    if changed and push_after:
        # Tell the others where content went: commit the logs and push (no merge).
        sub = syncer.sync(SyncOptions(commit=False, pull=False, push=True,
                                      remotes=[s for s in result.remotes]))
        ok = ok and sub.ok
    return ok
