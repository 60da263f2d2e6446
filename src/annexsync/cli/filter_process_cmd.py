"""annexsync filter-process: git's long-running clean/smudge filter for unlocked files."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.filter import serve
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.smudge import AnnexFilter

NAME = "filter-process"
HELP = "git filter process for unlocked files (run by git, not by you)"
DESCRIPTION = """\
git runs this as filter.annex.process (configured by 'annexsync init') and talks
git's long-running filter protocol with it on stdin/stdout, for every file it
cleans (git add, git status, git diff) or smudges (git checkout) during one git
command. Large files are stored in the annex and git gets a pointer file; see
'annexsync smudge' for the rules. Messages go to stderr.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    pass


class _Passthrough:
    """Used in a repository that is not initialised: hand content back unchanged."""

    def clean(self, pathname: str, content: object) -> object:
        return list(content)  # type: ignore[call-overload]

    smudge = clean

    def request_done(self) -> None:
        pass


def run(args: argparse.Namespace) -> int:
    repo = AnnexRepo.find(".")
    if not repo.initialized or repo.bare:
        return serve(_Passthrough(), sys.stdin.buffer, sys.stdout.buffer)  # type: ignore[arg-type]
    handler = AnnexFilter(repo, long_running=True)
    try:
        return serve(handler, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        handler.close()
