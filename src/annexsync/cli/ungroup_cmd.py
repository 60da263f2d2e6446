"""annexsync ungroup: remove a repository from a group."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.cli.common import open_repo
from annexsync.cli.repoconfig import group_set, groups_of, ok, resolve

NAME = "ungroup"
HELP = "remove a repository from a group"
DESCRIPTION = """\
Remove REPO from GROUP in group.log on the git-annex branch; its other groups
stay. Removing it from a group it is not in is harmless (the line is rewritten
with a new timestamp, as git-annex does).

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", metavar="REPO",
                   help="here, a remote name, a description or a UUID")
    p.add_argument("group", metavar="GROUP", help="group to remove REPO from")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        u = resolve(repo, branch, args.repository)
        group_set(branch, u, groups_of(branch, u) - {args.group})
        branch.commit()
        ok(NAME, args.repository)
    return 0
