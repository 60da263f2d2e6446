"""annexsync group: show or add the groups of a repository."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.logs import GROUP_LOG, current_uuid_values, parse_uuid_log
from annexsync.cli.common import open_repo
from annexsync.cli.repoconfig import group_set, groups_of, ok, resolve
from annexsync.errors import AnnexError

NAME = "group"
HELP = "add a repository to a group"
DESCRIPTION = """\
With only REPO, print the groups that repository is in, space separated. With
GROUP, add the repository to it (it stays in its other groups); the change is
recorded in group.log on the git-annex branch, where git-annex reads it too.
With --list, print every group that some repository is in.

Groups are used by preferred content expressions (copies=GROUP:N, inallgroup=,
groupwanted). The standard groups give the term 'standard' its meaning:
client, transfer, backup, incrementalbackup, smallarchive, archive, source,
manual, public and unwanted; a repository uses its standard group only when it is
in exactly one. Typical: annexsync group here client; annexsync wanted here standard.

REPO is 'here' (or '.'), a remote name, a repository description or a UUID.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", metavar="REPO", nargs="?",
                   help="here, a remote name, a description or a UUID")
    p.add_argument("group", metavar="GROUP", nargs="?", help="group to add REPO to")
    p.add_argument("--list", action="store_true", help="list all groups in use")


def _sorted(groups: frozenset[str]) -> str:
    return " ".join(sorted(groups, key=lambda g: g.encode("utf-8", "surrogateescape")))


def run(args: argparse.Namespace) -> int:
    if args.list and args.repository:
        raise AnnexError("Cannot combine --list with other options")
    if not args.list and not args.repository:
        raise AnnexError("Specify a repository and a group.")
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        if args.list:
            lines = current_uuid_values(parse_uuid_log(branch.read(GROUP_LOG))).values()
            print(_sorted(frozenset(g for line in lines for g in line.value.split())))
            return 0
        u = resolve(repo, branch, args.repository)
        if args.group is None:
            print(_sorted(groups_of(branch, u)))
            return 0
        group_set(branch, u, groups_of(branch, u) | {args.group})
        branch.commit()
        ok(NAME, args.repository)
    return 0
