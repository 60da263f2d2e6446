"""annexsync describe: change the description of a repository."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.logs import UUID_LOG
from annexsync.cli.common import open_repo
from annexsync.cli.repoconfig import ok, resolve, set_uuid_log

NAME = "describe"
HELP = "change description of a repository"
DESCRIPTION = """\
Record DESCRIPTION for REPO in uuid.log on the git-annex branch. Descriptions are
what whereis, info and the other clones show for a repository, and a description
can itself name the repository in commands like this one. Several words are joined
with single spaces.

REPO is 'here' (or '.'), a remote name, the current description or a UUID.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", metavar="REPO",
                   help="here, a remote name, a description or a UUID")
    p.add_argument("description", metavar="DESCRIPTION", nargs="+", help="the new description")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        u = resolve(repo, branch, args.repository)
        set_uuid_log(branch, UUID_LOG, u, " ".join(args.description))
        branch.commit()
        ok(NAME, args.repository)
    return 0
