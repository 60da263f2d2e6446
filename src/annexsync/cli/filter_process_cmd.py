"""annexsync filter-process: git's long-running clean/smudge filter for unlocked files.

git waits for this process's handshake (and, at the end of its command, for it to
exit), once per checkout, merge or add. So :func:`run` imports only the protocol
code and answers the handshake before looking at the repository at all:
:class:`annexsync.annex.smudge.LazyFilter` opens it on the first request that needs
it (see "Start-up" in :mod:`annexsync.annex.smudge`).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

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


def run(args: argparse.Namespace) -> int:
    from annexsync.annex.filter import serve
    from annexsync.annex.smudge import LazyFilter

    handler = LazyFilter(".", long_running=True)
    try:
        return serve(handler, sys.stdin.buffer, sys.stdout.buffer)
    finally:
        handler.close()
