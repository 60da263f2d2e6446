"""annexsync restage: refresh git's index after unlocked files' content changed."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.restage import restage
from annexsync.cli.common import open_repo
from annexsync.cli.output import emit_json, json_record

NAME = "restage"
HELP = "refresh git's index for unlocked files whose content was filled or emptied"
DESCRIPTION = """\
When content of unlocked files arrives or is dropped, the files change and git's
index has to look at them again, or 'git status' shows them as modified. That is
normally done right away; when the index was locked at that moment, the files
are kept in .git/annex/restage.log (shared with git-annex) and this command
finishes the job. Files changed by you since are left alone.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        res = restage(repo)
    if args.json:
        emit_json(json_record("restage", success=res.warning is None,
                              errors=[res.warning] if res.warning else [],
                              restaged=res.restaged))
    elif res.warning:
        print(f"annexsync: {res.warning}", file=sys.stderr)
    else:
        print("restage ok")
    return 1 if res.warning else 0
