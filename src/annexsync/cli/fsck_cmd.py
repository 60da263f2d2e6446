"""annexsync fsck: verify annexed content and repair what can be repaired."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.fsck import Fsck, FsckResult
from annexsync.cli.common import display_path, open_repo, relpaths
from annexsync.cli.output import emit_json, json_record
from annexsync.errors import AnnexError

NAME = "fsck"
HELP = "check annexed content and fix the location log"
DESCRIPTION = """\
For each annexed file under PATH (default: all), check its content in this
repository (or, with --from, in REMOTE) against its key, like 'git annex fsck':

  * bad content is moved to .git/annex/bad/ (never deleted) and, when an unlocked
    copy in the work tree is intact, the annex gets a copy of it back;
  * the location log is fixed to say what is really here (or in REMOTE);
  * unlocked files left as pointer files while their content is here are filled;
  * a file fails when its content is bad or missing against the location log, or
    when fewer trustworthy copies than numcopies exist.

--fast checks sizes instead of checksums. --json prints one record per file
(messages in "error-messages"). Exit status is 1 if any file failed.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--fast", action="store_true", help="check sizes only, no checksums")
    p.add_argument("--from", dest="from_remote", metavar="REMOTE",
                   help="check the content in REMOTE instead of here")
    p.add_argument("--json", action="store_true", help="one JSON object per file")


def _remote(repo: object, name: str) -> object:
    try:
        from annexsync.remotes.registry import find_remote, load_remotes
    except ImportError:
        raise AnnexError("fsck --from is not supported yet (no remote support in this build)")
    return find_remote(load_remotes(repo), name)  # type: ignore[arg-type]


def _show(r: FsckResult, shown: str) -> None:
    notes = "".join(f" ({n})" for n in r.notes)
    if not r.messages:
        print(f"fsck {shown}{notes} {'ok' if r.success else 'failed'}")
        return
    print(f"fsck {shown}{notes} ")
    for m in r.messages:
        for line in m.replace(r.file, shown).split("\n"):
            print(f"  {line}")
    print("ok" if r.success else "failed")


def run(args: argparse.Namespace) -> int:
    failed = 0
    with open_repo() as repo:
        paths = relpaths(repo, args.paths) if args.paths else []
        remote = _remote(repo, args.from_remote) if args.from_remote else None
        try:
            for r in Fsck(repo, fast=args.fast, remote=remote).run(paths):
                shown = display_path(repo, r.file)
                if not r.success:
                    failed += 1
                if args.json:
                    rec = json_record("fsck", success=r.success, file=shown, input=[shown],
                                      key=str(r.key), note=r.notes[-1] if r.notes else None,
                                      errors=[m.replace(r.file, shown) for m in r.messages])
                    if not r.success:
                        rec.update(dead=r.dead, untrusted=r.untrusted)
                    emit_json(rec)
                else:
                    _show(r, shown)
                sys.stdout.flush()
        finally:
            if remote is not None:
                remote.close()  # type: ignore[attr-defined]
    if failed:
        print(f"fsck: {failed} failed", file=sys.stderr)
        return 1
    return 0
