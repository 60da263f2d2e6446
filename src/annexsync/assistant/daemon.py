"""Assembling the assistant: pid file, log, status file, services under a supervisor.

Files (under ``.git/annex/``, where git-annex keeps its own):

* ``daemon.pid`` — our pid (no newline), written via ``daemon.pid.new`` + rename while
  an exclusive fcntl lock on it is held for the daemon's whole life. git-annex's
  assistant takes the same lock, so the two refuse to run twice on one repository.
* ``daemon.log`` — timestamped lines, one per event; rotated past 1 MB into
  ``daemon.log.1`` … ``daemon.log.9``, as git-annex does (:mod:`.logfile`).
* ``daemon.status`` — git-annex's format (``lastRunning:…``), so a git-annex assistant
  started later reads it; ``annexsync.status.json`` — our richer status for
  ``annexsync status`` (services, queue, last commit, last sync per remote, alerts,
  recent events), rewritten at most every 0.2 s.

Start-up: changes made while the daemon was stopped are found from git's index stat
data (the committer's first batch is a rescan: ``ls-files --others --modified`` and
``--deleted``), without rehashing unchanged files.

Triggers (:mod:`annexsync.assistant.triggers`, docs/triggers.md): the daemon also
syncs when a drive holding a remote is mounted (``/proc/self/mountinfo`` + epoll),
when the network comes up (rtnetlink), when a local-path remote's refs move (inotify),
and when ``annexsync remotechanged [REMOTE]`` asks through the control socket
``.git/annex/annexsync.sock``. Git config ``annexsync.changehook`` names a command
(run with ``/bin/sh -c``, asynchronously, output to the daemon log, killed after
``annexsync.changehooktimeout`` seconds, default 60) run after each commit and each
merge of received changes, with ``ANNEXSYNC_REPO``, ``ANNEXSYNC_EVENT=commit|merge``,
``ANNEXSYNC_REFS`` ("name=sha ...") and ``ANNEXSYNC_MERGED`` in its environment.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from annexsync.annex.locks import LockBusy, lock_file, lock_holder
from annexsync.annex.repo import AnnexRepo
from annexsync.assistant.committer import Committer
from annexsync.assistant.events import Event, EventLog
from annexsync.assistant.hub import Hub, Settings
from annexsync.assistant.logfile import RotatingLog
from annexsync.assistant.merger import Merger
from annexsync.assistant.pusher import Pusher
from annexsync.assistant.scanner import TransferScanner
from annexsync.assistant.supervisor import Supervisor
from annexsync.assistant.transferrer import Transferrer
from annexsync.assistant.triggers import trigger_services
from annexsync.assistant.watcher import Watcher
from annexsync.errors import AnnexError

STATUS_JSON = "annexsync.status.json"

_PER_FILE_EVENTS = frozenset({"download", "upload", "drop"})


class AlreadyRunning(AnnexError):
    """Another assistant (annexsync's or git-annex's) runs on this repository."""


def pid_path(repo: AnnexRepo) -> Path:
    return repo.annex_dir / "daemon.pid"


def running_pid(repo: AnnexRepo) -> int | None:
    """The pid of the assistant running on ``repo``, or None."""
    p = pid_path(repo)
    holder = lock_holder(p)
    if holder is None:
        return None
    try:
        text = p.read_text().strip()
        return int(text) if text else holder
    except (OSError, ValueError):
        return holder if holder > 0 else -1


class WatcherService:
    name = "watcher"

    def __init__(self, hub: Hub, committer: Committer) -> None:
        self.hub = hub
        self.committer = committer
        self.watcher: Watcher | None = None

    def run(self, stop: threading.Event) -> None:
        w = Watcher(str(self.hub.repo.top), self.committer.note,
                    on_alert=lambda msg: self.hub.emit(self.name, "alert", message=msg))
        self.watcher = w
        t = threading.Thread(target=w.run, daemon=True, name="inotify")
        t.start()
        try:
            w.ready.wait(60)
            self.hub.emit(self.name, "watching", directories=len(w.dir_to_wd))
            while not stop.wait(1.0):
                if not t.is_alive():
                    raise RuntimeError("the inotify thread stopped")
        finally:
            w.stop()
            t.join(5)
            w.close()

    def wake(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()


class Assistant:
    """The daemon for one repository (``watch_only``: commit locally, never sync)."""

    def __init__(self, repo: AnnexRepo, *, watch_only: bool = False,
                 settings: Settings | None = None, events: EventLog | None = None) -> None:
        self.repo = repo
        self.events = events or EventLog()
        s = settings or Settings.from_config(repo)
        if watch_only:
            s.content = False
            s.git_sync = False
        self.hub = Hub(repo, self.events, s)
        self._lock = None
        self._log: RotatingLog | None = None
        self._log_stamp: tuple[int, str] = (-1, "")  # a second and its formatted stamp
        self._log_flushed = 0.0
        self._status_dirty = threading.Event()
        self._stopped = threading.Event()
        self.supervisor: Supervisor | None = None
        self.last: dict[str, Any] = {"commit": None, "sync": {}, "alerts": []}

    # -- pid file ------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the pid lock (like git-annex: lock daemon.pid.new, write, rename)."""
        p = pid_path(self.repo)
        p.parent.mkdir(parents=True, exist_ok=True)
        if lock_holder(p) is not None:
            raise AlreadyRunning(f"an assistant is already running on {self.repo.top} "
                                 f"(pid {running_pid(self.repo)}); stop it with "
                                 "'annexsync assistant --stop'")
        tmp = p.with_name("daemon.pid.new")
        try:
            lock = lock_file(tmp, exclusive=True, blocking=False)
        except LockBusy:
            raise AlreadyRunning(f"an assistant is starting on {self.repo.top}") from None
        os.ftruncate(lock.fd, 0)
        os.write(lock.fd, str(os.getpid()).encode())
        os.replace(tmp, p)  # the lock moves with the inode
        self._lock = lock

    # -- events -> log and status ----------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        log = self._log  # (stop() may clear it meanwhile)
        if log is not None:
            # milliseconds: the daemon's reactions are measured in them
            second = int(ev.time)
            cached_second, text = self._log_stamp  # one tuple: threads see a whole pair
            if second != cached_second:
                text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
                self._log_stamp = (second, text)
            stamp = f"{text}.{int(ev.time * 1000) % 1000:03d}"
            data = " ".join(f"{k}={v}" for k, v in ev.data.items() if k != "trace")
            # A burst logs a line per file: those reach the disk at most every 50 ms
            # (any other event, such as the queue-drained that ends them, writes
            # everything at once).
            flush = ev.kind not in _PER_FILE_EVENTS or ev.time - self._log_flushed > 0.05
            try:
                log.write(f"[{stamp}] {ev.service}: {ev.kind} {data}\n", flush=flush)
                if flush:
                    self._log_flushed = ev.time
            except (OSError, ValueError):
                pass
        if ev.kind == "committed":
            self.last["commit"] = {"commit": ev.data.get("commit"), "time": ev.time}
        elif ev.kind in ("push-done", "pushed"):
            self.last["sync"][ev.data.get("remote")] = {"time": ev.time, "ok": True}
        elif ev.kind in ("push-failed", "remote-failed"):
            self.last["sync"][ev.data.get("remote")] = {"time": ev.time, "ok": False,
                                                        "error": ev.data.get("error")}
        elif ev.kind in ("alert", "service-failed"):
            self.last["alerts"] = (self.last["alerts"] + [
                {"time": ev.time, "message": ev.data.get("message") or ev.data.get("error")}
            ])[-20:]
        self._status_dirty.set()

    def write_status(self) -> None:
        tr = self.hub.transfers
        status = {
            "pid": os.getpid(),
            "repository": str(self.repo.top),
            "uuid": self.repo.uuid,
            "last_event_id": self.events.last_id,
            "time": time.time(),
            "last_commit": self.last["commit"],
            "last_sync": self.last["sync"],
            "alerts": self.last["alerts"],
            "transfers": tr.snapshot() if tr is not None else {},
            "events": [e.as_dict() for e in self.events.since(self.events.last_id - 50)
                       if "trace" not in e.data],
        }
        annex = self.repo.annex_dir
        tmp = annex / (STATUS_JSON + ".new")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, annex / STATUS_JSON)
        (annex / "daemon.status.new").write_text(
            f"lastRunning:{int(time.time())}s\nscanComplete:True\n"
            "sanityCheckRunning:False\nlastSanityCheck:\n")
        os.replace(annex / "daemon.status.new", annex / "daemon.status")

    # -- running ---------------------------------------------------------------------
    def start(self) -> None:
        """Take the pid lock and start every service (returns at once)."""
        self.acquire()
        self._log = RotatingLog(self.repo.annex_dir / "daemon.log")
        self.events.listen(self._on_event)
        hub = self.hub
        # Literal pathspecs: file names with * or ? are names, not patterns.
        hub.repo.git.env["GIT_LITERAL_PATHSPECS"] = "1"
        committer = Committer(hub)
        hub.committer = committer
        services: list[Any] = [committer, WatcherService(hub, committer)]
        if hub.settings.git_sync:
            hub.pusher = Pusher(hub)
            hub.merger = Merger(hub)
            services += [hub.pusher, hub.merger]
        if hub.settings.content:
            hub.transfers = Transferrer(hub)
            hub.scanner = TransferScanner(hub)
            services += [hub.transfers, hub.scanner]
        services += trigger_services(hub)  # mounts, network, remotes, control, change hook
        committer.request_full_scan()  # what changed while we were not running
        self.supervisor = Supervisor(services, self.events)
        self.supervisor.start()
        threading.Thread(target=self._status_loop, daemon=True, name="status").start()
        self.events.emit("assistant", "started", pid=os.getpid(),
                         services=[s.name for s in services])

    def _status_loop(self) -> None:
        while not self._stopped.is_set():
            self._status_dirty.wait(5)
            self._status_dirty.clear()
            try:
                self.write_status()
            except OSError:
                pass
            self._stopped.wait(0.2)

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        self._stopped.set()
        self.events.emit("assistant", "stopped")
        try:
            self.write_status()
        except OSError:
            pass
        if self._log is not None:
            self._log.close()
            self._log = None
        self.repo.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def run_forever(self) -> None:
        """Start, then run until SIGTERM/SIGINT."""
        done = threading.Event()

        def handler(signum: int, frame: object) -> None:
            done.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        self.start()
        try:
            while not done.wait(1.0):
                pass
        finally:
            self.stop()
