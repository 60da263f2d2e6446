"""annexsync lock: turn unlocked files back into symlinks to their content."""

from __future__ import annotations

import argparse

from annexsync.annex.unlocked import lock_files
from annexsync.cli.common import open_repo, relpaths
from annexsync.cli.unlock_cmd import report

NAME = "lock"
HELP = "lock unlocked annexed files (undo unlock)"
DESCRIPTION = """\
Replace unlocked annexed files under PATH (default: all) with symlinks into the
annex, as 'git annex lock' does. The content must be unchanged since it was
staged: a modified file is refused (stage it with 'git add' or 'annexsync add'
first), never discarded. When the annex lacks the content but the file has it,
the file is moved into the annex. Exit status is 1 if any file was not locked.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--json", action="store_true", help="one JSON object per file")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        paths = relpaths(repo, args.paths) if args.paths else []
        return report("lock", list(lock_files(repo, paths)), repo, args.json)
