"""annexsync init: make this git repository a git-annex repository."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.init import init
from annexsync.annex.repo import AnnexRepo
from annexsync.cli.output import emit_json, json_record

NAME = "init"
HELP = "initialise git-annex (v10) in the current git repository"
DESCRIPTION = """\
Make the git repository you are in a git-annex repository (version 10): give it a
UUID, create the git-annex branch (from origin's, if a clone), and record
DESCRIPTION, which other clones show for it (default user@host:path).

Running it on a repository that git-annex or annexsync already initialised keeps
its UUID; running it twice is harmless. A new DESCRIPTION replaces the old one.

For unlocked files it configures git's annex filter (filter.annex.smudge, .clean
and .process), '* filter=annex' in .git/info/attributes, and post-checkout,
post-merge and pre-commit hooks, as 'git annex init' does, but running annexsync.
They name annexsync by the absolute path of this installation (so a virtualenv
need not be activated for git to find it); run 'annexsync init' again after
moving the installation. Filter settings or hooks that are neither git-annex's
nor annexsync's are left alone and reported.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("description", nargs="*", help="description of this repository")
    p.add_argument("--json", action="store_true", help="print a JSON record")


def run(args: argparse.Namespace) -> int:
    with AnnexRepo.find(".") as repo:
        desc = " ".join(args.description) if args.description else None
        res = init(repo, desc)
        for w in res.warnings:
            print(f"annexsync init: warning: {w}", file=sys.stderr)
        if args.json:
            emit_json(json_record("init", success=True, note=res.description,
                                  uuid=res.uuid))
        else:
            print(f"init {res.description} ok")
    return 0
