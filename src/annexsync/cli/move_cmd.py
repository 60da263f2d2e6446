"""annexsync move: move content to or from a remote."""

from __future__ import annotations

import argparse

from annexsync.cli.contentops import Plan, run_content_command
from annexsync.cli.transferui import add_common_args

NAME = "move"
HELP = "move the content of files to or from a remote"
DESCRIPTION = """\
Like copy, then drop the content from where it came from. The source copy is only
removed once the destination's copy is verified (and locked where the remote
supports it); a move never lowers the number of copies. Small files sent to a
repository on this machine go in batches, and are dropped here only once their
batch is durably stored there.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    add_common_args(p, auto=False)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--to", dest="dest", metavar="REMOTE")
    g.add_argument("--from", dest="source", metavar="REMOTE")


def run(args: argparse.Namespace) -> int:
    return run_content_command(Plan("move", args.source, args.dest), args)
