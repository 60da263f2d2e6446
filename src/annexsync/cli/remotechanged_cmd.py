"""annexsync remotechanged: tell the running assistant that a remote changed."""

from __future__ import annotations

import argparse
import sys

from annexsync.cli.common import open_repo

NAME = "remotechanged"
HELP = "make the running assistant sync now (with REMOTE, or with every remote)"
DESCRIPTION = """\
Tell the assistant running on this repository that REMOTE changed (or, without
REMOTE, that something may have changed anywhere), so that it syncs now instead of
waiting: it fetches REMOTE, merges what came, pushes to it, and checks which content
should move. Any program can run this, for instance a hook in another repository
('annexsync -C /path/to/this/clone remotechanged laptop'), a script run when a VPN
comes up, or cron.

The assistant is reached through the control socket .git/annex/annexsync.sock
(see docs/triggers.md). By default the command returns as soon as the assistant has
queued the request; with --wait it returns when the sync is done, and exits 1 if a
remote failed.

Without a running assistant, remotechanged does one 'annexsync sync' round with
REMOTE (or with every remote) itself, and says so.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("remotes", nargs="*", metavar="REMOTE")
    p.add_argument("--wait", action="store_true", help="return when the sync is done")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="with --wait: give up after this many seconds (default 300)")
    p.add_argument("--quiet", "-q", action="store_true")


def run(args: argparse.Namespace) -> int:
    from annexsync.assistant.control import NoDaemon, request_sync

    with open_repo() as repo:
        what = ", ".join(args.remotes) if args.remotes else "every remote"
        try:
            reply = request_sync(repo.annex_dir, list(args.remotes), wait=args.wait,
                                 timeout=args.timeout)
        except NoDaemon:
            return _one_shot(repo, args, what)
        if args.wait:
            errors = reply.get("errors") or {}
            if not reply.get("done"):
                print(f"remotechanged: the assistant did not finish within {args.timeout:g} s",
                      file=sys.stderr)
                return 1
            for name, err in sorted(errors.items()):
                print(f"remotechanged {name}: {err}", file=sys.stderr)
            if not args.quiet:
                print(f"the assistant synced with {what}"
                      + (" (with failures)" if errors else ""))
            return 1 if errors else 0
        if not args.quiet:
            print(f"the assistant will sync with {what} now")
        return 0


def _one_shot(repo: object, args: argparse.Namespace, what: str) -> int:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.sync.gitsync import GitSync, SyncOptions

    assert isinstance(repo, AnnexRepo)
    print(f"no assistant is running on {repo.top}: syncing with {what} once instead",
          file=sys.stderr)

    def event(kind: str, data: dict[str, object]) -> None:
        if kind == "remote-failed":
            print(f"sync {data['remote']}: {data['error']}", file=sys.stderr)
        elif not args.quiet and kind == "merged":
            print(f"merge {data['ref']} ok")
        elif not args.quiet and kind == "pushed":
            print(f"push {data['remote']} ok")

    result = GitSync(repo, on_event=event).sync(SyncOptions(remotes=list(args.remotes)))
    return 0 if result.ok else 1
