"""annexsync sync: one full round of syncing with remotes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from annexsync.cli.common import open_repo
from annexsync.cli.output import emit_json, json_record
from annexsync.sync.status import PendingStatus, merge_in_progress

NAME = "sync"
HELP = "commit, pull, merge and push: sync with remotes (like 'git annex sync')"
DESCRIPTION = """\
One round of syncing with every remote (or the REMOTEs named), compatible with
'git annex sync', so annexsync and git-annex clones converge with each other:

  1. commit: new and changed files are added (annex.largefiles decides annex or
     git), deletions and renames included, and committed;
  2. pull: every remote is fetched in parallel; its BRANCH and synced/BRANCH are
     merged; every */git-annex branch is union-merged;
  3. push: BRANCH:synced/BRANCH and git-annex:synced/git-annex to each remote, in
     parallel. A push rejected because the remote moved on is answered by fetch,
     merge and push again; an unreachable remote is reported and skipped.

Conflicts never stop a sync: every side is kept, named like git-annex names them
(name.variant-XXXX.ext), so clones that resolve the same conflict agree.

With --content, content then moves per preferred content (see 'wanted'): every
file's content this repository wants and lacks is got, content a remote wants and
lacks is sent, and then content a repository (a remote, or this one) wants for none
of its files is dropped there where numcopies allows, each drop proven as 'drop'
proves it. Lines like git-annex's say what moved: "get FILE (from REMOTE...) ok",
"copy FILE (to REMOTE...) ok", "drop FILE ok"; a failure is printed with its reasons.
Small files to and from clones on this machine go in batches and are reported once
their batch is durable there.

Remotes with remote.NAME.annex-sync=false are skipped unless named; remotes are
tried in annex-cost order. Exit status is 1 if any remote failed or content this
repository or a remote wants could not be moved (as in git-annex, a drop that could
not be proven is reported but does not fail the sync).
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("remotes", nargs="*", metavar="REMOTE")
    p.add_argument("--content", action="store_true",
                   help="also transfer content per preferred content")
    p.add_argument("--no-content", dest="content", action="store_false")
    p.add_argument("--no-commit", dest="commit", action="store_false",
                   help="do not commit local changes")
    p.add_argument("--no-pull", dest="pull", action="store_false", help="do not fetch/merge")
    p.add_argument("--no-push", dest="push", action="store_false", help="do not push")
    p.add_argument("-m", "--message", help="commit message")
    p.add_argument("-J", "--jobs", type=int, default=4, help="remotes handled at once")
    p.add_argument("--json", action="store_true", help="JSON records of each step")
    p.add_argument("--quiet", "-q", action="store_true")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        # The work-tree scan (git status) starts first and runs while the rest of
        # annexsync is imported (see annexsync.sync.status).
        pending = None
        if args.commit and not repo.bare and not merge_in_progress(repo):
            pending = PendingStatus(repo)
        from annexsync.sync.gitsync import GitSync, SyncOptions

        def event(kind: str, data: dict[str, Any]) -> None:
            if args.json:
                ok = kind != "remote-failed" and data.get("ok", True) is not False
                extra = {k: v for k, v in data.items() if k != "errors"}
                emit_json(json_record("sync", success=ok, note=kind,
                                      errors=data.get("errors"), **extra))
            elif kind in _CONTENT:
                _content_line(kind, data, args.quiet)
            elif kind == "remote-failed":
                print(f"sync {data['remote']}: {data['error']}", file=sys.stderr)
            elif not args.quiet:
                if kind == "committed":
                    print("commit ok")
                elif kind == "merged":
                    extra = ""
                    if data.get("conflicts"):
                        extra = f" (conflicts resolved: {', '.join(data['conflicts'])})"
                    print(f"merge {data['ref']}{extra} ok")
                elif kind == "pushed":
                    print(f"push {data['remote']} ok")
                elif kind == "add-failed":
                    print(f"add {data['file']} failed: {data['error']}", file=sys.stderr)

        syncer = GitSync(repo, on_event=event, pending_status=pending)
        opts = SyncOptions(commit=args.commit, pull=args.pull, push=args.push,
                           jobs=args.jobs, remotes=args.remotes, message=args.message)
        result = syncer.sync(opts)
        ok = result.ok
        if args.content:
            from annexsync.sync.content import sync_content

            ok = sync_content(repo, syncer, result, jobs=args.jobs, on_event=event) and ok
        return 0 if ok else 1


_CONTENT = {"get": ("get", "from"), "put": ("copy", "to"), "drop": ("drop", "from")}


def _content_line(kind: str, data: dict[str, Any], quiet: bool) -> None:
    """A content move of ``sync --content``, as git-annex prints it:
    ``get FILE (from REMOTE...) ok``, or the head, the reasons on stderr, ``failed``."""
    verb, prep = _CONTENT[kind]
    remote = data.get("remote")
    head = f"{verb} {data.get('file')}" + (f" ({prep} {remote}...)" if remote != "here" else "")
    if data.get("ok"):
        if not quiet:
            print(f"{head} ok", flush=True)
        return
    print(f"{head} ", flush=True)
    for line in data.get("errors") or [data.get("error") or "failed"]:
        for sub in str(line).splitlines():
            print(f"  {sub}", file=sys.stderr)
    sys.stderr.flush()
    print("failed", flush=True)
