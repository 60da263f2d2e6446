"""annexsync watch: only the watch-and-commit part of the assistant."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "watch"
HELP = "commit every change in this folder automatically (no syncing)"
DESCRIPTION = """\
Run only the watcher and committer of the assistant on DIR (default: here), in the
foreground: every change is added (annex.largefiles decides annex or git) and
committed within a fraction of a second. Nothing is pushed, merged or transferred;
use 'annexsync assistant' for that. Stop it with Ctrl-C or SIGTERM.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.assistant.daemon import Assistant
    from annexsync.cli.assistant_cmd import ensure_repository

    repo = ensure_repository(Path(args.dir).absolute())
    assert isinstance(repo, AnnexRepo)
    Assistant(repo, watch_only=True).run_forever()
    return 0
