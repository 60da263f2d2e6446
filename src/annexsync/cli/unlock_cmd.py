"""annexsync unlock: make annexed files regular, modifiable files."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.unlocked import FileResult, unlock_files
from annexsync.cli.common import display_path, open_repo, relpaths
from annexsync.cli.output import emit_json, json_record

NAME = "unlock"
HELP = "unlock annexed files so they can be modified"
DESCRIPTION = """\
Replace the symlinks of locked annexed files under PATH (default: all) with the
files themselves: a copy of the content (a hard link with annex.thin), or a
pointer file when the content is not present. git then stores them as pointer
files ("unlocked"); 'git add' / 'git commit -a' of a modified unlocked file puts
the new content into the annex. Exit status is 1 if any file could not be unlocked.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per file")


def report(command: str, repo_results: list[FileResult], repo: object, as_json: bool) -> int:
    failed = 0
    for r in repo_results:
        if not r.file:
            print(f"annexsync: {r.error}", file=sys.stderr)
            continue
        shown = display_path(repo, r.file)  # type: ignore[arg-type]
        if not r.success:
            failed += 1
        if as_json:
            emit_json(json_record(command, success=r.success, file=shown, input=[shown],
                                  key=str(r.key) if r.key else None,
                                  errors=[r.error] if r.error else []))
        elif r.success:
            print(f"{command} {shown} ok")
        else:
            print(f"{command} {shown} failed: {r.error}", file=sys.stderr)
    if failed:
        print(f"{command}: {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        paths = relpaths(repo, args.paths) if args.paths else []
        return report("unlock", list(unlock_files(repo, paths)), repo, args.json)
