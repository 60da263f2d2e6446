"""annexsync get: make the content of annexed files present here."""

from __future__ import annotations

import argparse

from annexsync.cli.contentops import Plan, run_content_command
from annexsync.cli.transferui import add_common_args

NAME = "get"
HELP = "get the content of annexed files from remotes"
DESCRIPTION = """\
Download the content of annexed files under PATH (default: all) that is not
present here, from the cheapest available remote that the location log says has
it (or only from REMOTE with --from). Downloads resume from a partial file, are
verified against the key before they enter the store (unless annex.verify or
remote.NAME.annex-verify is false: then only the size is checked, and fsck is
what finds a bad copy), and honour annex.bwlimit, annex.stalldetection and
annex.retry. Unlocked files whose content arrives, and any other unlocked file
with the same content, are filled in and restaged, so git status stays clean.
With --auto, only files with fewer copies than numcopies are fetched. Exit
status is 1 if some file could not be got.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    add_common_args(p)
    p.add_argument("--from", dest="source", metavar="REMOTE", help="get only from REMOTE")


def run(args: argparse.Namespace) -> int:
    return run_content_command(Plan("get", args.source, None), args)
