"""annexsync find: list annexed files matching conditions."""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Callable

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import locations_many
from annexsync.annex.repos import RepoMap
from annexsync.annex.worktree import AnnexedFile, annexed_files
from annexsync.cli.common import display_path, open_repo, relpaths
from annexsync.cli.output import emit_json, human_size, json_record
from annexsync.errors import AnnexError

NAME = "find"
HELP = "list annexed files (by default those whose content is here)"
DESCRIPTION = """\
List annexed files under PATH. Without conditions, lists the files whose content
is present in this repository (like 'git annex find').

Conditions are combined with "and" in the order given; --not negates the next one:
  --in REMOTE            content is in REMOTE (a remote name, 'here', a UUID or a
                         description) according to the location log
  --include GLOB         file path matches GLOB
  --exclude GLOB         file path does not match GLOB
Example: annexsync find --in here --not --in origin
"""


class _Cond(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        conds = getattr(ns, "conds", None) or []
        conds.append((self.dest, values))
        ns.conds = conds


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--in", "-i", dest="in", action=_Cond, metavar="REMOTE")
    p.add_argument("--include", dest="include", action=_Cond, metavar="GLOB")
    p.add_argument("--exclude", dest="exclude", action=_Cond, metavar="GLOB")
    p.add_argument("--not", dest="not", action=_Cond, nargs=0)
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(conds=[])


Pred = Callable[[AnnexedFile, set[str]], bool]


def _build(conds: list[tuple[str, object]], repos: RepoMap) -> list[Pred]:
    preds: list[Pred] = []
    negate = False
    for kind, value in conds:
        if kind == "not":
            negate = not negate
            continue
        pred: Pred
        if kind == "in":
            u = repos.resolve(str(value))
            if u is None:
                raise AnnexError(f"there is no available git remote named \"{value}\"")
            pred = (lambda uu: lambda af, locs: uu in locs)(u)
        elif kind == "include":
            pred = (lambda g: lambda af, locs: fnmatch.fnmatchcase(af.file, g))(str(value))
        else:
            pred = (lambda g: lambda af, locs: not fnmatch.fnmatchcase(af.file, g))(str(value))
        if negate:
            pred = (lambda p: lambda af, locs: not p(af, locs))(pred)
            negate = False
        preds.append(pred)
    if negate:
        raise AnnexError("--not must be followed by a condition")
    return preds


def key_fields(key: Key) -> dict[str, str]:
    """The fields git-annex's find/examinekey --json print for a key."""
    return {
        "backend": key.backend,
        "bytesize": str(key.size) if key.size is not None else "unknown",
        "humansize": human_size(key.size) if key.size is not None else "unknown",
        "keyname": key.name,
        "hashdirlower": key.hashdir_lower,
        "hashdirmixed": key.hashdir_mixed,
        "mtime": str(key.mtime) if key.mtime is not None else "unknown",
    }


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        paths = relpaths(repo, args.paths) if args.paths else []
        repos = RepoMap.load(repo, branch)
        conds = args.conds or [("in", "here")]
        preds = _build(conds, repos)
        files = annexed_files(repo, paths)
        where = locations_many(branch, [f.key for f in files])
        for af in files:
            locs = where[af.key]
            if all(p(af, locs) for p in preds):
                shown = display_path(repo, af.file)
                if args.json:
                    rec = json_record("find", success=True, file=shown, key=str(af.key))
                    for k in ("command", "input", "success"):
                        rec.pop(k, None)
                    rec.update(key_fields(af.key))
                    emit_json(rec)
                else:
                    print(shown)
    return 0
