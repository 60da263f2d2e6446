"""The ssh notifier: one ``notifychanges`` stream per ssh remote, so its changes arrive at once.

Theory of operation
-------------------
For every syncable git remote reached over ssh, a thread keeps one long-running
``ssh HOST annexsync-shell notifychanges DIR`` open on the host's cached connection
(``git-annex-shell notifychanges`` when the other host only has git-annex, or
whatever ``remote.NAME.annex-shell`` names). The far side writes ``READY``, then a
``CHANGED SHA…`` line each time its branches move (:mod:`annexsync.shell.notify`).

* ``CHANGED``: the object ids are checked here with one ``cat-file --batch-check``.
  Ids we already have are our own pushes coming back (or something we fetched
  already): nothing to do, and neither when a fetch asked for the same ids is still
  under way (a sync on the far side moves ``main`` and ``synced/main`` a moment
  apart). Otherwise the :class:`~.resync.Resyncer` is asked to fetch and merge that
  remote (no push, no full transfer scan: the merger tells the scanner what a merge
  changed).
* ``READY`` after a connection was lost (or could not be made): a full resync of
  that remote, since changes may have been missed meanwhile.
* The stream dies (sshd restarted, network gone, remote moved): it is reopened after
  a back-off of 1 s, 2 s, 4 s … at most :data:`MAX_BACKOFF`, logged once per step.
  :meth:`SshNotifier.kick` (the network watcher calls it when the network comes up)
  cuts the back-off short. A remote whose far side has no ``notifychanges`` (an old
  git-annex, a forced command that refuses it) is asked again only every
  :data:`MAX_BACKOFF`; the pusher and the hourly resync still reach it.

The set of remotes is recomputed every :data:`REFRESH_EVERY` seconds and when
:meth:`SshNotifier.refresh` is called (the remote watcher does when ``.git/config``
is rewritten); streams of remotes that went away or changed URL are closed.
Every line read is untrusted input: only hex object ids are accepted, lines are
bounded, anything else ends the stream.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import threading
import time
from dataclasses import dataclass, field

from annexsync.assistant.hub import Hub
from annexsync.assistant.resync import Resyncer, SyncRequest
from annexsync.git.catfile import check_many
from annexsync.remotes.base import RemoteUnavailable
from annexsync.remotes.p2p import SHELLS
from annexsync.remotes.ssh import SshConnections, last_line, parse_ssh_url
from annexsync.sync.gitsync import GitSync

MAX_BACKOFF = 300.0
REFRESH_EVERY = 60.0
READY_TIMEOUT = 60.0
_MAX_LINE = 65536
_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_NOT_FOUND = 127


@dataclass
class _Stream:
    """The thread and state of one remote's stream."""

    name: str
    url: str
    shell: str | None
    stop: threading.Event = field(default_factory=threading.Event)
    kick: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    proc: subprocess.Popen[bytes] | None = None
    connected: bool = False
    unsupported: bool = False


class SshNotifier:
    """Service: follows each ssh remote's ``notifychanges`` stream (module docstring)."""

    name = "sshnotifier"

    def __init__(self, hub: Hub, resyncer: Resyncer, *, first_backoff: float = 1.0,
                 max_backoff: float = MAX_BACKOFF) -> None:
        self.hub = hub
        self.resyncer = resyncer
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.sync = GitSync(hub.repo, skip_unavailable=True)
        self.streams: dict[str, _Stream] = {}
        self._asked: dict[str, tuple[set[str], SyncRequest]] = {}  # the last fetch asked
        self._refresh = threading.Event()

    # -- control ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Recompute which remotes to follow (the configuration changed)."""
        self._refresh.set()

    def kick(self) -> None:
        """Reconnect lost streams now (the network came up)."""
        for s in list(self.streams.values()):
            s.kick.set()

    # -- the loop -----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self._sync_streams()
                self._refresh.clear()
                deadline = time.monotonic() + REFRESH_EVERY
                while not stop.is_set() and not self._refresh.is_set():
                    if time.monotonic() >= deadline:
                        break
                    stop.wait(0.5)
        finally:
            for s in list(self.streams.values()):
                self._close(s)
            self.streams.clear()

    def _wanted(self) -> dict[str, tuple[str, str | None]]:
        try:
            specs = self.sync.sync_remotes()
        except Exception as e:  # noqa: BLE001 - a bad config must not kill the service
            self.hub.emit(self.name, "config-error", error=str(e))
            return {n: (s.url, s.shell) for n, s in self.streams.items()}
        return {s.name: (s.url, s.git_config.get("annex-shell") or None)
                for s in specs if s.kind == "ssh" and s.url}

    def _sync_streams(self) -> None:
        want = self._wanted()
        for name, s in list(self.streams.items()):
            if want.get(name) != (s.url, s.shell):
                self._close(s)
                del self.streams[name]
        for name, (url, shell) in want.items():
            if name not in self.streams:
                s = _Stream(name, url, shell)
                s.thread = threading.Thread(target=self._follow, args=(s,), daemon=True,
                                            name=f"notify-{name}")
                self.streams[name] = s
                s.thread.start()

    def _close(self, s: _Stream) -> None:
        s.stop.set()
        s.kick.set()
        proc = s.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if s.thread is not None and s.thread is not threading.current_thread():
            s.thread.join(10)

    # -- one remote -----------------------------------------------------------------------
    def _follow(self, s: _Stream) -> None:
        backoff = self.first_backoff
        failures = 0
        ever_connected = False
        while not s.stop.is_set():
            error = self._session(s, resync=ever_connected or failures > 0)
            if s.stop.is_set():
                return
            if s.connected:
                ever_connected = True
                backoff, failures = self.first_backoff, 0
            s.connected = False
            if s.unsupported:
                # Asking again soon would only repeat the refusal: once per max back-off.
                self.hub.emit(self.name, "notify-unsupported", remote=s.name, error=error,
                              retry_in=self.max_backoff)
                s.unsupported = False
                s.stop.wait(self.max_backoff)
                continue
            failures += 1
            if failures & (failures - 1) == 0:  # 1st, 2nd, 4th, 8th ... failure
                self.hub.emit(self.name, "notify-lost", remote=s.name, error=error,
                              failures=failures, retry_in=backoff)
            s.kick.clear()
            if s.kick.wait(backoff):
                backoff = self.first_backoff
            else:
                backoff = min(backoff * 2, self.max_backoff)

    def _session(self, s: _Stream, *, resync: bool) -> str:
        """One connection, until it ends; returns why it ended."""
        try:
            loc = parse_ssh_url(s.url)
        except ValueError as e:
            s.unsupported = True
            return str(e)
        conns = SshConnections.for_repo(self.hub.repo.git_dir, self.hub.repo.config,
                                        remote=s.name)
        try:
            conns.ensure_master(loc)
            shells = [s.shell] if s.shell else list(SHELLS)
            for i, shell in enumerate(shells):
                argv = conns.ssh_argv(loc, [shell, "notifychanges", loc.annex_shell_dir])
                proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, bufsize=0)
                s.proc = proc
                try:
                    error = self._read(s, proc, resync=resync)
                finally:
                    if proc.poll() is None:
                        proc.terminate()
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    s.proc = None
                    raw = proc.stderr.read(65536) if proc.stderr else b""
                    err = last_line(raw) if raw.strip() else "the connection was closed"
                    if proc.stdin:
                        proc.stdin.close()
                    for f in (proc.stdout, proc.stderr):
                        if f:
                            f.close()
                if s.connected or s.stop.is_set():
                    return error or err or f"exit status {proc.returncode}"
                if proc.returncode == _NOT_FOUND and i + 1 < len(shells):
                    continue  # not installed there: try the next program
                if proc.returncode not in (255, None, -15) and not error:
                    # the far side ran and refused (unknown command, a forced command…)
                    s.unsupported = True
                return error or err or f"exit status {proc.returncode}"
            return "no shell"
        except RemoteUnavailable as e:
            return str(e)
        except OSError as e:
            return f"cannot run ssh: {e}"
        finally:
            conns.release()

    def _read(self, s: _Stream, proc: subprocess.Popen[bytes], *, resync: bool) -> str:
        """Serve the stream's lines until it ends; returns an error ("" at a clean end)."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        ready_by = time.monotonic() + READY_TIMEOUT
        while not s.stop.is_set():
            timeout = 1.0 if s.connected else max(0.0, ready_by - time.monotonic())
            if not s.connected and timeout <= 0:
                return f"no READY within {READY_TIMEOUT:.0f}s"
            r, _, _ = select.select([fd], [], [], min(timeout, 1.0))
            if not r:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            buf += chunk
            if len(buf) > _MAX_LINE and b"\n" not in buf:
                return "protocol error: line too long"
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode("ascii", "replace").split()
                if words == ["READY"] and not s.connected:
                    s.connected = True
                    self.hub.emit(self.name, "notify-connected", remote=s.name)
                    if resync:
                        self.resyncer.request([s.name], "reconnected")
                elif words[:1] == ["CHANGED"] and s.connected:
                    shas = words[1:]
                    if not all(_SHA_RE.fullmatch(w) for w in shas):
                        return "protocol error: bad object id"
                    self._changed(s.name, shas)
                else:
                    return f"protocol error: {line[:60]!r}"
        return ""

    def _changed(self, name: str, shas: list[str]) -> None:
        """Fetch ``name`` if any of ``shas`` is an object we do not have."""
        if not shas:
            return
        try:
            known = check_many(self.hub.repo.git, shas)
            new = [x for x in shas if known.get(x) is None]
        except Exception:  # noqa: BLE001 - when in doubt, fetch
            new = shas
        if not new:
            return
        asked = self._asked.get(name)
        if asked is not None and not asked[1].done.is_set() and set(new) <= asked[0]:
            return  # a fetch asked for these ids is under way (a sync moves 2 refs apart)
        self.hub.emit(self.name, "remote-changed", remote=name, new=new[:10])
        req = self.resyncer.request([name], "remote-changed", push=False, full_scan=False)
        self._asked[name] = (set(new), req)
