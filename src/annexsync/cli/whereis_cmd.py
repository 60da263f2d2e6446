"""annexsync whereis: which repositories have the content of annexed files."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import locations_many
from annexsync.annex.repos import RepoMap
from annexsync.annex.worktree import annexed_files
from annexsync.cli.common import display_path, open_repo, relpaths
from annexsync.cli.output import emit_json, json_record

NAME = "whereis"
HELP = "list the repositories that have the content of files"
DESCRIPTION = """\
For each annexed file under PATH (default: all), list the repositories that the
location log says have its content, with their descriptions and remote names.
Untrusted repositories are listed separately. Exit status is 1 if some file has
no known copy.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per file")


def _copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        paths = relpaths(repo, args.paths) if args.paths else []
        files = annexed_files(repo, paths)
        repos = RepoMap.load(repo, branch)
        where = locations_many(branch, [f.key for f in files])
        status = 0
        for af in files:
            uuids = sorted(where[af.key])
            dead = {u for u in uuids if repos.trust_of(u) == "dead"}
            untrusted = [u for u in uuids if repos.trust_of(u) == "untrusted"]
            trusted = [u for u in uuids if u not in dead and u not in untrusted]
            shown = display_path(repo, af.file)
            lines = [f"\t{u} -- {repos.describe(u)}" for u in trusted]
            note = _copies(len(trusted)) + "\n" + "".join(line + "\n" for line in lines)
            if untrusted:
                note += "The following untrusted locations may also have copies:\n"
                note += "".join(f"\t{u} -- {repos.describe(u)}\n" for u in untrusted)
            ok = bool(trusted)
            if not ok:
                status = 1
            if args.json:
                def entry(u: str) -> dict[str, object]:
                    return {"description": repos.descriptions.get(u, ""),
                            "here": u == repos.here, "urls": [], "uuid": u}
                emit_json(json_record("whereis", success=ok, file=shown, input=[shown],
                                      key=str(af.key), note=note,
                                      whereis=[entry(u) for u in trusted],
                                      untrusted=[entry(u) for u in untrusted]))
            else:
                print(f"whereis {shown} ({_copies(len(trusted))}) ")
                for line in lines:
                    print("  " + line)
                if untrusted:
                    print("  The following untrusted locations may also have copies:")
                    for u in untrusted:
                        print(f"  \t{u} -- {repos.describe(u)}")
                print("ok" if ok else "failed")
        return status
