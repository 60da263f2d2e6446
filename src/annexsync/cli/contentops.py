"""The engine behind get, copy and move: choose sources, transfer, drop for moves.

``get`` and ``copy --from``/``move --from`` download; ``copy --to``/``move --to``
upload. Every transfer goes through one :class:`~annexsync.transfers.runner.Transfers`
(batched durability and location-log commits); ``move`` then drops the source
through :class:`~annexsync.annex.drop.Dropper`, which proves enough copies first.
"""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.drop import Dropper
from annexsync.annex.keys import Key
from annexsync.annex.location import locations_many
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repos import RepoMap
from annexsync.cli.common import open_repo
from annexsync.cli.transferui import Item, Reporter, run_jobs, select_items
from annexsync.policy.numcopies import count_copies
from annexsync.remotes.base import RecentlyAvailable, Remote
from annexsync.remotes.registry import find_remote, load_remotes
from annexsync.transfers.runner import TransferResult, Transfers


@dataclass
class Plan:
    command: str  # "get", "copy", "move"
    source: str | None  # --from
    dest: str | None  # --to


def run_content_command(plan: Plan, args: argparse.Namespace) -> int:
    """Run get/copy/move for ``args.paths``; returns the exit status."""
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        items = select_items(repo, args.paths)
        remotes = load_remotes(repo, branch)
        repos = RepoMap.load(repo, branch)
        src = find_remote(remotes, plan.source) if plan.source else None
        dst = find_remote(remotes, plan.dest) if plan.dest else None
        store = ObjectStore(repo.annex_dir, bare=repo.bare)
        where = locations_many(branch, [i.key for i in items])
        rep = Reporter(plan.command, args, items)
        dropper: Dropper | None = None

        by_key: dict[Key, Item] = {}
        for i in items:
            by_key.setdefault(i.key, i)
        # Small transfers are staged and made durable in batches: get and copy report
        # them once final (committed, or failed at the commit), so a file is never
        # reported both ok and failed. key -> the note its report carries.
        deferred: dict[Key, str] = {}
        deferred_lock = threading.Lock()

        def defer(it: Item, note: str) -> None:
            if plan.command != "move":  # move reports after its drop
                with deferred_lock:
                    deferred[it.key] = note

        def undefer(it: Item, res: TransferResult) -> bool:
            """Whether ``res`` is reported later (staged), else forget the deferral."""
            if res.extra.get("staged") and plan.command != "move":
                return True
            with deferred_lock:
                deferred.pop(it.key, None)
            return False

        def final(res: TransferResult) -> None:
            late, committed = res.extra.get("late"), res.extra.get("committed")
            if not (late or committed):
                return
            with deferred_lock:
                note = deferred.pop(res.key, None)
            it = by_key.get(res.key)
            if it is None:
                return
            if note is not None:
                rep.result(it, note, not late, [res.error or "failed"] if late else [])
            elif late:
                rep.result(it, None, False, [res.error or "failed"])

        with Transfers(repo, on_progress=rep.progress, on_done=final) as tr:
            if plan.command == "move":
                dropper = Dropper(repo, branch, remotes, repos, tr.recorder)

            def needs_more(it: Item) -> bool:
                if not getattr(args, "auto", False):
                    return True
                assert dropper_or_needs is not None
                needs = dropper_or_needs.needs(it.files)
                return count_copies(where[it.key], repos.trust) < needs.numcopies

            dropper_or_needs = dropper or (Dropper(repo, branch, remotes, repos, tr.recorder)
                                           if getattr(args, "auto", False) else None)

            available = RecentlyAvailable(remember_down=True)  # asked per file

            def download(it: Item) -> None:
                if store.has(it.key):
                    if plan.command == "move" and src is not None:
                        _finish_move_from(it, src, None)
                    return
                if not needs_more(it):
                    return
                if src is not None:
                    candidates = [src]
                else:
                    candidates = [r for r in remotes if r.info.uuid in where[it.key]
                                  and repos.trust_of(r.info.uuid) != "dead"]
                errors: list[str] = []
                unavailable: list[Remote] = []
                for r in candidates:
                    if not available(r):
                        unavailable.append(r)
                        continue
                    note = f"from {r.info.name}..."
                    rep.note(it, note)
                    defer(it, note)
                    res = tr.download(r, it.key, it.file, unlocked=it.unlocked, absent=True)
                    later = undefer(it, res)
                    if res.success:
                        if plan.command == "move":
                            _finish_move_from(it, r, note)
                        elif not later:
                            rep.result(it, note, True)
                        return
                    errors.append(res.error or "failed")
                    if len(candidates) == 1:
                        rep.result(it, note, False, errors)
                        return
                rep.result(it, "not available", False, errors,
                           detail=_not_available(it, where[it.key], unavailable, repos))

            def _finish_move_from(it: Item, r: Remote, note: str | None) -> None:
                assert dropper is not None
                tr.commit_staged()
                res = dropper.drop_from(r, it.key, it.files, where[it.key] | {repos.here},
                                        moved_here=True)
                ok = res.success
                errs = [res.error] if res.error else []
                detail = list(res.unsafe.lines) if res.unsafe else []
                rep.result(it, note or f"from {r.info.name}...", ok, errs, detail=detail)

            def upload(it: Item) -> None:
                assert dst is not None
                if not store.has(it.key):
                    return
                if not needs_more(it):
                    return
                note = f"to {dst.info.name}..."
                rep.note(it, note)
                if dst.info.uuid not in where[it.key]:
                    if not available(dst):
                        rep.result(it, note, False, [f"{dst.info.name} is not available"])
                        return
                    # Small keys go in batches (durable, stored and logged at the
                    # batch's commit); move drops its copies once they are committed.
                    defer(it, note)
                    res = tr.upload(dst, it.key, it.file, staged_ok=True)
                    later = undefer(it, res)
                    if not res.success:
                        rep.result(it, note, False, [res.error or "failed"])
                        return
                    where[it.key] = where[it.key] | {dst.info.uuid}
                    if later:
                        return
                    if plan.command == "move" and res.extra.get("staged"):
                        with deferred_lock:
                            to_drop.append((it, note, res))
                        return
                elif plan.command == "copy":
                    return  # already there according to the location log
                if plan.command == "move":
                    drop_moved(it, note)
                    return
                rep.result(it, note, True)

            to_drop: list[tuple[Item, str, TransferResult]] = []  # move: staged uploads

            def drop_moved(it: Item, note: str) -> None:
                assert dropper is not None and dst is not None
                d = dropper.drop_here(it.key, it.files, where[it.key], moved_to=dst.info.uuid)
                rep.result(it, note, d.success, [d.error] if d.error else [],
                           detail=list(d.unsafe.lines) if d.unsafe else [])

            work = upload if dst is not None else download
            try:
                run_jobs(items, getattr(args, "jobs", 1) or 1, work)
                if to_drop:
                    tr.commit_staged()  # (a failure there was reported as it happened)
                    for it, note, res in to_drop:
                        if res.extra.get("committed"):
                            drop_moved(it, note)
            finally:
                if dropper_or_needs is not None:
                    dropper_or_needs.close()
        for problem in tr.unfilled:
            print(f"annexsync: unable to populate worktree file of {problem}",
                  file=sys.stderr)
        return rep.finish()


def _not_available(it: Item, locations: set[str], unavailable: list[Remote],
                   repos: RepoMap) -> list[str]:
    others = sorted(u for u in locations if u != repos.here)
    if not others:
        return ["No other repository is known to contain the file."]
    lines = []
    if unavailable:
        lines.append("Unable to access these remotes: "
                     + ", ".join(r.info.name for r in unavailable))
    lines.append("Try making some of these repositories available:")
    lines += [f"\t{u} -- {repos.describe(u)}" for u in others]
    return lines
