"""annexsync copy: copy content to or from a remote."""

from __future__ import annotations

import argparse

from annexsync.cli.contentops import Plan, run_content_command
from annexsync.cli.transferui import add_common_args

NAME = "copy"
HELP = "copy the content of files to or from a remote"
DESCRIPTION = """\
With --to REMOTE, send the content of annexed files under PATH that is present
here and not (according to the location log) in REMOTE. With --from REMOTE, get
content that is missing here from REMOTE. --auto copies only files that have
fewer copies than numcopies. The location log is updated on both sides.
Small files sent to a repository on this machine go in batches: each is
reported once it is durably stored there.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    add_common_args(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--to", dest="dest", metavar="REMOTE")
    g.add_argument("--from", dest="source", metavar="REMOTE")


def run(args: argparse.Namespace) -> int:
    return run_content_command(Plan("copy", args.source, args.dest), args)
