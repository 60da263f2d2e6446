"""annexsync smudge: the one-shot clean/smudge filters and populating after checkout.

The hooks run ``smudge --update`` after every checkout and merge, and git waits for
them; ``annexsync.cli.main`` dispatches the forms git and the hooks use without
argparse, and this module imports the annex code only inside :func:`run`, what
the request needs (see "Start-up" in :mod:`annexsync.annex.smudge`).
"""

from __future__ import annotations

import os
import sys

from annexsync.errors import AnnexError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from annexsync.annex.repo import AnnexRepo

NAME = "smudge"
HELP = "git smudge/clean filter for unlocked files; --update fills them after checkout"
DESCRIPTION = """\
'annexsync smudge -- FILE' and 'annexsync smudge --clean -- FILE' are the one-shot
forms of the filter git runs for unlocked files (filter.annex.smudge / .clean);
git normally uses the faster 'annexsync filter-process'. Content comes on stdin
and the result goes to stdout.

Clean: a pointer file stays a pointer. Otherwise the file goes into the annex
(git gets a pointer) when annex.largefiles matches it, or, with annex.largefiles
not configured, when the staged version was annexed; dotfiles only follow the
latter unless annex.dotfiles is set; everything else is passed to git unchanged.
Smudge: git gets the pointer back and the file is noted in .git/annex/smudge.log.

'annexsync smudge --update' (run by the post-checkout and post-merge hooks) fills
every noted pointer file whose content is present and refreshes git's index so
'git status' stays clean.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clean", action="store_true", help="clean filter (git add)")
    p.add_argument("--update", action="store_true",
                   help="fill unlocked files whose content is present")
    p.add_argument("file", nargs="?", metavar="FILE", help="the file being filtered")


def _stdin_chunks() -> Iterator[bytes]:
    stream = sys.stdin.buffer
    while data := stream.read(1 << 16):
        yield data


def _relative(repo: AnnexRepo, file: str) -> str:
    absolute = os.path.abspath(file)
    top = os.path.abspath(repo.top)
    if absolute == top or not absolute.startswith(top + os.sep):
        return file if os.path.isabs(file) else absolute
    return os.path.relpath(absolute, top).replace(os.sep, "/")


def run(args: argparse.Namespace) -> int:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.annex.smudge import AnnexFilter, update_smudged

    if args.update:
        from annexsync.cli.common import open_repo

        with open_repo() as repo:
            res = update_smudged(repo)
        for f in res.failed:
            print(f"annexsync: unable to populate worktree file {f}", file=sys.stderr)
        if res.warning:
            print(f"annexsync: {res.warning}", file=sys.stderr)
        return 0
    if not args.file:
        raise AnnexError("smudge needs FILE (or --update)")
    repo = AnnexRepo.find(".")
    out = sys.stdout.buffer
    if not repo.initialized or repo.bare:
        for chunk in _stdin_chunks():
            out.write(chunk)
        return 0
    handler = AnnexFilter(repo, long_running=False)
    try:
        rel = _relative(repo, args.file)
        fn = handler.clean if args.clean else handler.smudge
        for piece in fn(rel, _stdin_chunks()):
            out.write(piece)
        out.flush()
    finally:
        handler.close()
    return 0
