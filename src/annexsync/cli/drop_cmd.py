"""annexsync drop: remove content here or from a remote, keeping numcopies."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.drop import Dropper
from annexsync.annex.location import locations_many
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repos import RepoMap
from annexsync.cli.common import open_repo
from annexsync.cli.transferui import Item, Reporter, add_common_args, run_jobs, select_items
from annexsync.policy.numcopies import auto_drop_allowed, count_copies
from annexsync.remotes.registry import find_remote, load_remotes
from annexsync.transfers.locationlog import LocationRecorder

NAME = "drop"
HELP = "remove the content of files here (or from a remote) when enough copies exist"
DESCRIPTION = """\
Drop the content of annexed files under PATH from this repository, or from REMOTE
with --from. Before dropping, annexsync proves that enough other copies exist
(numcopies, and mincopies of them locked down or trusted): git remotes on a local
path are locked for the duration of the drop, special remotes are asked whether
they have the content, trusted repositories are believed. --force skips the check
(the last copy can then be lost). --auto drops only files that have more copies
than numcopies. Unlocked files holding dropped content become pointer files again
(one that was modified since is left alone), as with git-annex.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    add_common_args(p, jobs=False)
    p.add_argument("--from", dest="source", metavar="REMOTE", help="drop from REMOTE")
    p.add_argument("--force", action="store_true", help="drop without checking copies")
    p.add_argument("--numcopies", type=int, metavar="N", help="override numcopies")
    p.add_argument("--mincopies", type=int, metavar="N", help="override mincopies")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        items = select_items(repo, args.paths)
        remotes = load_remotes(repo, branch)
        repos = RepoMap.load(repo, branch)
        remote = find_remote(remotes, args.source) if args.source else None
        store = ObjectStore(repo.annex_dir, bare=repo.bare)
        where = locations_many(branch, [i.key for i in items])
        recorder = LocationRecorder(repo)
        rep = Reporter("drop", args, items)
        dropper = Dropper(repo, branch, remotes, repos, recorder, force=args.force,
                          numcopies=args.numcopies, mincopies=args.mincopies)
        note = f"from {remote.info.name}..." if remote is not None else None

        def work(it: Item) -> None:
            locs = set(where[it.key])
            if remote is None:
                if not store.has(it.key):
                    return
                locs.add(repos.here)
                target = repos.here
            else:
                if remote.info.uuid not in locs and not args.force:
                    return
                target = remote.info.uuid
            if args.auto:
                have = count_copies(locs, repos.trust)
                if not auto_drop_allowed(have, dropper.needs(it.files),
                                         dropping_untrusted=repos.trust_of(target)
                                         == "untrusted"):
                    return
            if remote is None:
                res = dropper.drop_here(it.key, it.files, locs - {repos.here})
            else:
                if not dropper.available(remote):
                    rep.result(it, note, False, [f"{remote.info.name} is not available"])
                    return
                res = dropper.drop_from(remote, it.key, it.files, locs)
            if res.unsafe is not None:
                rep.result(it, (note + ") (unsafe") if note else "unsafe", False,
                           detail=list(res.unsafe.lines))
            else:
                rep.result(it, note, res.success, [res.error] if res.error else [])

        try:
            run_jobs(items, 1, work)
        finally:
            recorder.flush()
            dropper.close()
        return rep.finish()
