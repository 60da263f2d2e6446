"""annexsync status: what the assistant is doing now."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from annexsync.cli.common import open_repo

NAME = "status"
HELP = "show what the assistant is doing: transfers, last commit and sync, alerts"
DESCRIPTION = """\
Show the state of the assistant running on this repository: queued, running and
failed transfers, the last commit, the last sync with each remote, alerts, and
recent events. --follow keeps printing events as they happen (Ctrl-C to stop).
Exit status 1 when no assistant is running.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="the status as one JSON object")
    p.add_argument("--follow", "-f", action="store_true", help="print events as they happen")


def _ago(t: float | None) -> str:
    if not t:
        return "never"
    d = time.time() - t
    return f"{d:.1f}s ago" if d < 120 else time.strftime("%Y-%m-%d %H:%M:%S",
                                                          time.localtime(t))


def _event_line(e: dict[str, Any]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(e.get("time", 0)))
    rest = " ".join(f"{k}={v}" for k, v in e.items()
                    if k not in ("id", "time", "service", "kind"))
    return f"[{stamp}] {e.get('service')}: {e.get('kind')} {rest}".rstrip()


def run(args: argparse.Namespace) -> int:
    from annexsync.assistant.daemon import STATUS_JSON, running_pid

    with open_repo() as repo:
        pid = running_pid(repo)
        path = repo.annex_dir / STATUS_JSON
        status: dict[str, Any] = {}
        if path.exists():
            try:
                status = json.loads(path.read_text())
            except (OSError, ValueError):
                status = {}
        status["running"] = pid is not None
        if args.json and not args.follow:
            print(json.dumps(status, sort_keys=True))
            return 0 if pid is not None else 1
        if pid is None:
            print(f"no assistant is running on {repo.top} "
                  "(start one with 'annexsync assistant')")
            if not args.follow:
                return 1
        else:
            tr = status.get("transfers", {})
            lc = status.get("last_commit") or {}
            print(f"assistant running on {repo.top} (pid {pid})")
            print(f"last commit: {_ago(lc.get('time'))}")
            for remote, s in sorted((status.get("last_sync") or {}).items()):
                state = "ok" if s.get("ok") else f"failed: {s.get('error')}"
                print(f"last sync with {remote}: {_ago(s.get('time'))} ({state})")
            print(f"transfers: {tr.get('running', 0)} running, {tr.get('queued', 0)} "
                  f"queued, {tr.get('retrying', 0)} waiting to retry")
            for j in tr.get("jobs", []):
                print(f"  {j['direction']} {j.get('file') or j['key']}")
            for a in status.get("alerts", []):
                print(f"alert: {a.get('message')}")
        if not args.follow:
            return 0
        last = 0
        for e in status.get("events", [])[-10:]:
            print(_event_line(e) if not args.json else json.dumps(e))
            last = max(last, e.get("id", 0))
        try:
            while True:
                time.sleep(0.25)
                try:
                    cur = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                for e in cur.get("events", []):
                    if e.get("id", 0) > last:
                        print(_event_line(e) if not args.json else json.dumps(e), flush=True)
                        last = e["id"]
        except KeyboardInterrupt:
            return 0
