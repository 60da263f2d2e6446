"""What the content-moving commands (get, copy, move, drop) share.

File selection, git-annex style output (``get foo (from origin...) ok``), ``--json``
records and ``--json-progress`` lines with git-annex's field names, the terminal
progress line (per file and total, rate, ETA), and running per-file jobs with
``-J N`` worker threads.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from annexsync.annex.keys import Key
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.worktree import annexed_files
from annexsync.cli.common import display_path, relpaths
from annexsync.cli.output import ProgressLine, emit_json, human_size, json_record
from annexsync.transfers.runner import Progress


def add_common_args(p: argparse.ArgumentParser, *, auto: bool = True,
                    jobs: bool = True) -> None:
    """--json, --json-progress, --quiet, and optionally --auto and -J."""
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--json-progress", action="store_true",
                   help="JSON output with progress lines too (implies --json)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    if auto:
        p.add_argument("--auto", action="store_true",
                       help="only act where numcopies calls for it")
    if jobs:
        p.add_argument("-J", "--jobs", type=int, default=1, metavar="N",
                       help="transfer N files at a time")


@dataclass
class Item:
    """One annexed file to act on (the first file of each key)."""

    file: str
    shown: str
    input: str
    key: Key
    files: list[str]
    unlocked: bool = False  # one of the files is unlocked (filled when content arrives)


def select_items(repo: AnnexRepo, paths: Sequence[str]) -> list[Item]:
    """Annexed files under ``paths``, one item per key, in index order."""
    rel = relpaths(repo, paths) if paths else []
    by_key: dict[Key, Item] = {}
    for af in annexed_files(repo, rel):
        it = by_key.get(af.key)
        if it is None:
            shown = display_path(repo, af.file)
            by_key[af.key] = Item(af.file, shown, shown, af.key, [af.file], not af.locked)
        else:
            it.files.append(af.file)
            it.unlocked = it.unlocked or not af.locked
    return list(by_key.values())


def _eta(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60}m"
    if s >= 60:
        return f"{s // 60}m{s % 60}s"
    return f"{s}s"


class Reporter:
    """Prints results and progress for one command."""

    def __init__(self, command: str, args: argparse.Namespace, items: Sequence[Item]) -> None:
        self.command = command
        self.json_progress = bool(getattr(args, "json_progress", False))
        # as in git-annex, --json-progress alone means JSON output too
        self.json = bool(getattr(args, "json", False)) or self.json_progress
        self.quiet = bool(getattr(args, "quiet", False))
        self.failed = 0
        self.lock = threading.Lock()
        self.bar = ProgressLine()
        self.total = sum(i.key.size or 0 for i in items)
        self.done_bytes = 0
        self.inflight: dict[Key, int] = {}
        self.started = time.monotonic()
        self.notes: dict[Key, tuple[Item, str]] = {}
        self._last_json: dict[Key, float] = {}

    def note(self, item: Item, note: str) -> None:
        """Remember what an item's transfer is called (for progress records)."""
        with self.lock:
            self.notes[item.key] = (item, note)

    def _record(self, item: Item, note: str | None, ok: bool, errors: Sequence[str],
                **extra: Any) -> dict[str, Any]:
        return json_record(self.command, success=ok, file=item.shown, input=[item.input],
                           key=str(item.key), note=note, errors=list(errors), **extra)

    def result(self, item: Item, note: str | None, ok: bool, errors: Sequence[str] = (),
               *, detail: Sequence[str] = ()) -> None:
        """Report one item: ``cmd file (note) ok`` or the failure with its reasons."""
        with self.lock:
            self.inflight.pop(item.key, None)
            self.done_bytes += item.key.size or 0
            self.bar.done()
            if not ok:
                self.failed += 1
            if self.json:
                emit_json(self._record(item, note, ok, [*errors, *detail]))
                sys.stdout.flush()
                return
            head = f"{self.command} {item.shown}" + (f" ({note})" if note else "")
            if ok:
                if not self.quiet:
                    print(f"{head} ok", flush=True)
                return
            print(f"{head} ", flush=True)
            for line in [*errors, *detail]:
                for sub in line.splitlines():
                    print(f"  {sub}", file=sys.stderr)
            sys.stderr.flush()
            print("failed", flush=True)

    def progress(self, p: Progress) -> None:
        """Progress callback for :class:`annexsync.transfers.runner.Transfers`."""
        if self.json_progress and self.json:
            self._json_progress(p)
            return
        if not self.bar.enabled or self.json:
            return
        with self.lock:
            self.inflight[p.key] = p.bytes_done
            done = self.done_bytes + sum(self.inflight.values())
            elapsed = max(time.monotonic() - self.started, 1e-6)
            rate = done / elapsed
            parts = [f"{p.file or p.key}: {human_size(p.bytes_done)}"]
            if p.total:
                parts[0] += f" / {human_size(p.total)} ({100 * p.bytes_done // p.total}%)"
            total = f"total {human_size(done)}"
            if self.total:
                total += f" of {human_size(self.total)}"
            parts.append(total)
            parts.append(f"{human_size(int(rate))}/s")
            if self.total and rate > 0 and done < self.total:
                parts.append(f"ETA {_eta((self.total - done) / rate)}")
            self.bar.update(" | ".join(parts))

    def _json_progress(self, p: Progress) -> None:
        now = time.monotonic()
        with self.lock:
            if now - self._last_json.get(p.key, 0.0) < 0.1 and p.bytes_done != p.total:
                return
            self._last_json[p.key] = now
            item, note = self.notes.get(p.key, (None, ""))
            action: dict[str, Any] = {"command": self.command, "key": str(p.key),
                                      "note": note}
            if item is not None:
                action.update(file=item.shown, input=[item.input])
            rec: dict[str, Any] = {"action": action, "byte-progress": p.bytes_done}
            if p.total:
                rec["total-size"] = p.total
                rec["percent-progress"] = percent(p.bytes_done, p.total)
            emit_json(rec)
            sys.stdout.flush()

    def finish(self) -> int:
        """Print the summary line; return the exit status."""
        self.bar.done()
        if self.failed:
            print(f"{self.command}: {self.failed} failed", file=sys.stderr)
            return 1
        return 0


def percent(done: int, total: int) -> str:
    """``done/total`` as git-annex writes it (its ``showImprecise 2``): rounded to two
    decimals, no trailing zeros ("0.01%", "7.27%", "50%", "100%")."""
    n = done * 100 / total
    whole = int(n)
    hundredths = round((n - whole) * 100)
    if hundredths == 100:  # carry the 1
        whole, hundredths = whole + 1, 0
    if hundredths == 0:
        return f"{round(n)}%"
    return f"{whole}." + f"{hundredths:02d}".rstrip("0") + "%"


def run_jobs(items: Sequence[Item], jobs: int, work: Callable[[Item], None]) -> None:
    """Run ``work`` for each item, ``jobs`` at a time (in order when 1)."""
    if jobs <= 1 or len(items) <= 1:
        for it in items:
            work(it)
        return
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for fut in [pool.submit(work, it) for it in items]:
            fut.result()
