"""annexsync groupwanted: get or set the preferred content expression of a group."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.logs import GROUP_PREFERRED_CONTENT_LOG
from annexsync.cli.common import open_repo
from annexsync.cli.repoconfig import check_expression, group_preferred, ok, set_map_log
from annexsync.errors import AnnexError

NAME = "groupwanted"
HELP = "get or set groupwanted expression"
DESCRIPTION = """\
With only GROUP, print the expression defined for that group (an empty line when
none is). With EXPR, check it and record it in group-preferred-content.log on the
git-annex branch.

A repository whose 'wanted' expression contains the term 'groupwanted' uses the
expression of its group, when exactly one of its groups has one. Defining one for
a standard group (client, backup, ...) does not change what 'standard' means.
A malformed expression is refused with the column (0-based) of the first error
and nothing is written.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("group", metavar="GROUP", nargs="?", help="group name")
    p.add_argument("expression", metavar="EXPR", nargs="?",
                   help="the new expression (quote it: it is one argument)")


def run(args: argparse.Namespace) -> int:
    if not args.group:
        raise AnnexError("Specify a group.")
    if " " in args.group or "\n" in args.group:
        raise AnnexError(f"a group name cannot contain whitespace: {args.group!r}")
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        if args.expression is None:
            print(group_preferred(branch).get(args.group, ""))
            return 0
        set_map_log(branch, GROUP_PREFERRED_CONTENT_LOG, args.group,
                    check_expression(args.expression))
        branch.commit()
        ok(NAME, args.group)
    return 0
