"""The change hook: a command run after each commit and each received change.

Theory of operation
-------------------
The design lets "a program be run and do its own signalling". When git config
``annexsync.changehook`` is set (read when the daemon starts), this service listens
to the event log for

* ``committer: committed`` — the assistant committed local changes (event
  ``commit``), and
* ``merger: merge-done`` or a ``pusher: merged`` (a push was rejected, so the remote
  was fetched and merged first) — changes from elsewhere were merged (``merge``),

and runs the command with ``/bin/sh -c`` in the repository's top directory, with
this environment (plus the daemon's own):

* ``ANNEXSYNC_REPO`` — the repository's top directory;
* ``ANNEXSYNC_EVENT`` — ``commit`` or ``merge``;
* ``ANNEXSYNC_REFS`` — the local refs that changed, ``name=sha`` separated by
  spaces (``refs/heads/BRANCH`` and/or ``refs/heads/git-annex``);
* ``ANNEXSYNC_MERGED`` — for ``merge``: the refs that were merged in (for instance
  ``refs/remotes/laptop/main``), separated by spaces.

The listener only queues (it runs in the emitting service's thread); one worker
runs the hooks one at a time, asynchronously to the other services. Events that
pile up while a hook runs are coalesced: consecutive events of the same kind make
one run, with the refs as they are then. Its standard output and error go to the
daemon log (``changehook: output line=...``, at most :attr:`ChangeHook.max_lines`
lines a run), then ``changehook: hook-done exit=N seconds=S``. A hook still running
after ``annexsync.changehooktimeout`` seconds (default 60) is killed with its whole
process group (``hook-timeout``). A hook that itself changes the work tree causes a
commit and so runs again: that loop is the hook's to avoid.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections import deque
from typing import Any

from annexsync.assistant.events import Event
from annexsync.assistant.hub import Hub
from annexsync.git.refs import rev_parse
from annexsync.sync.gitsync import current_branch


class ChangeHook:
    """Service: runs ``annexsync.changehook`` after commits and merges."""

    name = "changehook"
    max_lines = 100

    def __init__(self, hub: Hub, command: str, timeout: float = 60.0) -> None:
        self.hub = hub
        self.command = command
        self.timeout = timeout
        self.cond = threading.Condition()
        self._pending: deque[tuple[str, list[str]]] = deque()
        self._last: dict[str, str] = {}
        self._started = False
        self.runs = 0
        hub.events.listen(self._on_event)

    # -- input (any thread) --------------------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if ev.service == "committer" and ev.kind == "committed":
            self._queue("commit", [])
        elif ev.service == "merger" and ev.kind == "merge-done":
            self._queue("merge", [str(r) for r in ev.data.get("refs") or []])
        elif ev.service == "pusher" and ev.kind == "merged":
            self._queue("merge", [str(ev.data.get("ref"))])

    def _queue(self, event: str, merged: list[str]) -> None:
        with self.cond:
            self._pending.append((event, merged))
            self.cond.notify()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # -- the worker ----------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        if not self._started:
            self._started = True
            self._last = self._refs()
        while not stop.is_set():
            with self.cond:
                if not self._pending:
                    self.cond.wait(5)
                    continue
                event, merged = self._pending.popleft()
                while self._pending and self._pending[0][0] == event:
                    merged += self._pending.popleft()[1]
            self.run_hook(event, list(dict.fromkeys(merged)), stop)

    def _refs(self) -> dict[str, str]:
        repo = self.hub.repo
        refs: dict[str, str] = {}
        branch = current_branch(repo)
        if branch is not None and (head := rev_parse(repo.git, "HEAD")) is not None:
            refs[f"refs/heads/{branch}"] = head
        if (tip := self.hub.branch.tip()) is not None:
            refs["refs/heads/git-annex"] = tip
        return refs

    def environment(self, event: str, merged: list[str]) -> dict[str, str]:
        """The hook's environment for ``event`` (refs read now)."""
        now = self._refs()
        changed = {n: v for n, v in now.items() if self._last.get(n) != v}
        if not changed:  # nothing moved since the last run: still say where we are
            changed = {n: v for n, v in now.items() if n != "refs/heads/git-annex"} or now
        self._last = now
        env = dict(os.environ)
        env.update(ANNEXSYNC_REPO=str(self.hub.repo.top), ANNEXSYNC_EVENT=event,
                   ANNEXSYNC_REFS=" ".join(f"{n}={v}" for n, v in sorted(changed.items())),
                   ANNEXSYNC_MERGED=" ".join(merged))
        return env

    def run_hook(self, event: str, merged: list[str], stop: threading.Event) -> int | None:
        """Run the command once; its exit status (None if it was killed)."""
        hub = self.hub
        env = self.environment(event, merged)
        t0 = time.monotonic()
        self.runs += 1
        hub.emit(self.name, "hook-start", event=event, refs=env["ANNEXSYNC_REFS"])
        try:
            proc = subprocess.Popen(["/bin/sh", "-c", self.command], cwd=hub.repo.top,
                                    env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            hub.emit(self.name, "hook-failed", error=str(e))
            return None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = t0 + self.timeout
        buf = b""
        lines = 0
        killed: str | None = None
        exited_at: float | None = None

        def out(line: bytes) -> None:
            nonlocal lines
            lines += 1
            if lines <= self.max_lines:
                hub.emit(self.name, "output", line=line.decode("utf-8", "replace")[:1000])
            elif lines == self.max_lines + 1:
                hub.emit(self.name, "output-truncated", after=self.max_lines)

        while True:
            now = time.monotonic()
            if proc.poll() is not None and exited_at is None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break  # a background child keeps the pipe open: stop listening
            if killed is None and (now > deadline or stop.is_set()):
                killed = "timeout" if now > deadline else "stopping"
                _kill_group(proc)
            r, _, _ = select.select([fd], [], [], 0.1)
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for line in done:
                out(line)
        if buf:
            out(buf)
        proc.stdout.close()
        try:
            code: int | None = proc.wait(5)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
            code = proc.wait()
        data: dict[str, Any] = {"event": event, "exit": code,
                                "seconds": round(time.monotonic() - t0, 3)}
        if killed == "timeout":
            hub.emit(self.name, "hook-timeout", timeout=self.timeout, **data)
            return None
        hub.emit(self.name, "hook-done", **data)
        return code


def _kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    if sig == signal.SIGTERM:
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            _kill_group(proc, signal.SIGKILL)
