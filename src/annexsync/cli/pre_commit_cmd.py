"""annexsync pre-commit: run by the pre-commit hook that 'annexsync init' installs."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.smudge import update_smudged
from annexsync.cli.common import open_repo

NAME = "pre-commit"
HELP = "run by git's pre-commit hook"
DESCRIPTION = """\
After a cherry-pick, stash or reset, pointer files of unlocked files whose content
is present may not have been filled in (git runs no post-checkout hook then).
This fills them, like 'git annex pre-commit'. The index is locked by the commit,
so the refresh of git's index is left for the next 'annexsync restage' or update.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="ignored (git-annex compatibility)")


def run(args: argparse.Namespace) -> int:
    # A hook must not stop the user's commit over our own trouble: warn instead.
    try:
        with open_repo() as repo:
            if repo.bare:
                return 0
            res = update_smudged(repo, restage=False, reconcile=False)
    except Exception as e:
        print(f"annexsync pre-commit: warning: {e}", file=sys.stderr)
        return 0
    for f in res.failed:
        print(f"annexsync: unable to populate worktree file {f}", file=sys.stderr)
    return 0
