"""annexsync info: an overview of the repository."""

from __future__ import annotations

import argparse
from collections import Counter
from typing import Any

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.logs import parse_presence_log, present_infos
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repos import RepoMap
from annexsync.annex.worktree import annexed_files
from annexsync.cli.common import open_repo
from annexsync.cli.output import emit_json, human_size, json_record
from annexsync.transfers.info import transfers_in_progress

NAME = "info"
HELP = "show information about the repository"
DESCRIPTION = """\
Show the repositories known to this one (grouped by trust), how many keys and how
much content are present here, the annexed files in the work tree and the size
of their content, backend usage and the content size in each repository
according to the location logs.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        repos = RepoMap.load(repo, branch)
        store = ObjectStore(repo.annex_dir, bare=repo.bare)
        local = store.iter_keys()
        files = annexed_files(repo) if not repo.bare else []
        wt_keys = {f.key for f in files}
        backends = Counter(f.key.backend for f in files)
        per_repo: Counter[str] = Counter()
        logpaths = [p for p in branch.paths() if p.endswith(".log") and p.count("/") == 2]
        data = branch.read_many(logpaths)
        for p, content in data.items():
            try:
                key = Key.from_key_file(p.rsplit("/", 1)[1][: -len(".log")])
            except ValueError:
                continue
            for u in present_infos(parse_presence_log(content)):
                per_repo[u] += key.size or 0
        known = sorted(set(repos.descriptions) | set(per_repo))
        by_trust: dict[str, list[str]] = {"trusted": [], "semitrusted": [], "untrusted": []}
        for u in known:
            t = repos.trust_of(u)
            if t in by_trust:
                by_trust[t].append(u)

        def entry(u: str) -> dict[str, Any]:
            return {"description": repos.descriptions.get(u, ""), "here": u == repos.here,
                    "uuid": u}

        info: dict[str, Any] = {
            "trusted repositories": [entry(u) for u in by_trust["trusted"]],
            "semitrusted repositories": [entry(u) for u in by_trust["semitrusted"]],
            "untrusted repositories": [entry(u) for u in by_trust["untrusted"]],
            "transfers in progress": [
                {"file": info.associated_file, "key": str(t.key), "remote": t.uuid,
                 "transfer": t.direction.value}
                for t, info in transfers_in_progress(repo.annex_dir)
            ],
            "local annex keys": len(local),
            "local annex size": human_size(sum(k.size or 0 for k in local)),
            "annexed files in working tree": len(files),
            "size of annexed files in working tree":
                human_size(sum(k.size or 0 for k in wt_keys)),
            "combined annex size of all repositories": human_size(sum(per_repo.values())),
            "backend usage": dict(sorted(backends.items())),
            "annex sizes of repositories": [
                {**entry(u), "size": human_size(s)}
                for u, s in sorted(per_repo.items(), key=lambda kv: -kv[1])
            ],
        }
        if args.json:
            emit_json(json_record("info", success=True, **info))
            return 0
        for trust in ("trusted", "semitrusted", "untrusted"):
            us = by_trust[trust]
            print(f"{trust} repositories: {len(us)}")
            for u in us:
                print(f"\t{u} -- {repos.describe(u)}")
        running = transfers_in_progress(repo.annex_dir)
        if not running:
            print("transfers in progress: none")
        else:
            print("transfers in progress: ")
            for t, tinfo in running:
                verb = "downloading" if t.direction.value == "download" else "uploading"
                prep = "from" if t.direction.value == "download" else "to"
                what = tinfo.associated_file or str(t.key)
                who = repos.name_of(t.uuid) or repos.describe(t.uuid) or t.uuid
                print(f"\t{verb} {what} {prep} {who}")
        for name in ("local annex keys", "local annex size", "annexed files in working tree",
                     "size of annexed files in working tree",
                     "combined annex size of all repositories"):
            print(f"{name}: {info[name]}")
        print("backend usage: ")
        for b, n in info["backend usage"].items():
            print(f"\t{b}: {n}")
        print("annex sizes of repositories: ")
        for e in info["annex sizes of repositories"]:
            print(f"\t{e['size']}: {e['uuid']} -- {repos.describe(e['uuid'])}")
    return 0
