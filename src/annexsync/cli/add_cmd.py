"""annexsync add: put files into the annex (large) or git (small)."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.add import Adder, Progress
from annexsync.annex.branch import AnnexBranch
from annexsync.cli.common import display_path, open_repo, relpaths
from annexsync.cli.output import ProgressLine, emit_json, human_size, json_record

NAME = "add"
HELP = "add files to the annex (large files) or to git (small files)"
DESCRIPTION = """\
Add new and modified files under PATH (default: the whole work tree) and stage
them, like 'git annex add'. Large files are moved into .git/annex/objects and
replaced by symlinks; small files are added to git as they are. With --unlocked
(or annex.addunlocked) large files stay regular files: their content is copied
into the annex and git stores a pointer file. A modified file that is unlocked
stays unlocked.

Which files are large is decided by annex.largefiles (git config, then the
annex.largefiles gitattribute, then 'git annex config'). With none set, every
file is large except dotfiles. Files matched by .gitignore are skipped; symlinks
are staged as symlinks. A file that changes while it is being added is skipped
and reported; it stays in the work tree as it is.

Exit status is 1 if any file could not be added.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to add")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--backend", help="key backend (default annex.backend or SHA256E)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--force-large", action="store_true",
                   help="annex every file, ignoring annex.largefiles")
    g.add_argument("--force-small", action="store_true",
                   help="add every file to git, ignoring annex.largefiles")
    p.add_argument("--unlocked", action="store_true", default=None,
                   help="add large files unlocked (regular files, modifiable in place); "
                        "default: annex.addunlocked")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        paths = relpaths(repo, args.paths) if args.paths else ["."]
        bar = ProgressLine()

        def progress(p: Progress) -> None:
            bar.update(f"add: {p.files_done}/{p.files_total} files, "
                       f"{human_size(p.bytes_done)} of {human_size(p.bytes_total)}")

        adder = Adder(repo, AnnexBranch(repo), backend=args.backend,
                      force_large=args.force_large, force_small=args.force_small,
                      unlocked=args.unlocked,
                      progress=progress if bar.enabled and not args.json else None)
        failed = 0
        for r in adder.add(paths):
            bar.done()
            if r.success and args.quiet and not args.json:
                continue
            shown = display_path(repo, r.file)
            if not r.success:
                failed += 1
            if args.json:
                emit_json(json_record(
                    "add", success=r.success, file=shown, input=[r.input],
                    key=str(r.key) if r.key else None,
                    note=r.note if r.note != "symlink" else None,
                    errors=[r.error] if r.error else []))
            elif r.success:
                if not args.quiet:
                    note = f" ({r.note})" if r.note and r.note != "symlink" else ""
                    print(f"add {shown}{note} ok")
            else:
                print(f"add {shown} failed: {r.error}", file=sys.stderr)
        bar.done()
        if failed:
            print(f"add: {failed} failed", file=sys.stderr)
            return 1
    return 0
