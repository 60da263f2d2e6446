"""The control socket: how ``annexsync remotechanged`` reaches a running daemon.

Theory of operation
-------------------
The daemon listens on a unix stream socket, ``.git/annex/annexsync.sock`` (mode
0600: only the repository's owner may ask). A client connects, sends one JSON line
and reads JSON lines back:

    -> {"cmd": "sync", "remotes": ["laptop"], "wait": false}
    <- {"queued": true}
    <- {"done": true, "synced": ["laptop"], "errors": {}}      (only with "wait")

``remotes`` empty means every syncable remote. An unknown remote is refused at once
(``{"error": "..."}``). The sync itself is a
:class:`~annexsync.assistant.resync.Resyncer` round: fetch, merge, push, and a
content check.

Why a socket and not a FIFO or a file the daemon watches: the client learns at once
whether a daemon is listening (``ECONNREFUSED``/``ENOENT``: none; then
``remotechanged`` syncs by itself), it gets an answer (an unknown remote, or with
``--wait`` the outcome), and many clients may ask at the same time. A socket left
by a daemon that crashed is harmless: the next daemon (which holds the pid lock,
so it is the only one) replaces it, and clients get ``ECONNREFUSED`` meanwhile.

A socket path is limited to 107 bytes (``sun_path``). For a longer repository
path both sides go through ``/proc/self/fd/N/annexsync.sock``, with N a descriptor
of ``.git/annex`` opened with ``O_PATH``, which is short whatever the real path.
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from annexsync.assistant.hub import Hub
from annexsync.assistant.resync import Resyncer
from annexsync.errors import AnnexError

SOCKET_NAME = "annexsync.sock"
_MAX_SUN_PATH = 100
_MAX_REQUEST = 65536


def socket_path(annex_dir: Path) -> Path:
    """Where the daemon of the repository with this ``.git/annex`` listens."""
    return annex_dir / SOCKET_NAME


@contextmanager
def _short_address(path: Path) -> Iterator[str]:
    """``path``, or an equivalent short one through ``/proc/self/fd`` when too long."""
    if len(os.fsencode(str(path))) <= _MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """Service: accepts requests on the control socket (module docstring)."""

    name = "control"

    def __init__(self, hub: Hub, resyncer: Resyncer) -> None:
        self.hub = hub
        self.resyncer = resyncer
        self.path = socket_path(hub.repo.annex_dir)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _listen(self) -> socket.socket:
        try:
            st = os.lstat(self.path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(self.path)  # left by a daemon that died (we hold the pid lock)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            with _short_address(self.path) as addr:
                sock.bind(addr)
            os.chmod(self.path, 0o600)
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        return sock

    def run(self, stop: threading.Event) -> None:
        sock = self._listen()
        ino = os.stat(self.path).st_ino
        self.hub.emit(self.name, "listening", path=str(self.path))
        try:
            while not stop.is_set():
                r, _, _ = select.select([sock, self._wake_r], [], [], 60)
                if self._wake_r in r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if sock in r and not stop.is_set():
                    conn, _ = sock.accept()
                    threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                     name="control-client").start()
        finally:
            sock.close()
            try:
                if os.stat(self.path).st_ino == ino:
                    os.unlink(self.path)
            except OSError:
                pass

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                f = conn.makefile("rwb")
                line = f.readline(_MAX_REQUEST)
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("not an object")
                except ValueError as e:
                    _send(f, {"error": f"bad request: {e}"})
                    return
                reply = self.handle(req)
                _send(f, reply)
                waiter = reply.pop("_request", None)
                if waiter is not None:
                    conn.settimeout(None)
                    waiter.done.wait(float(req.get("timeout", 300)))
                    _send(f, {"done": waiter.done.is_set(), "synced": waiter.synced,
                              "errors": waiter.errors})
            except OSError:
                return  # the client went away

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Act on one request; the reply to send (plus ``_request`` to wait on)."""
        if req.get("cmd") != "sync":
            return {"error": f"unknown command {req.get('cmd')!r}"}
        names = [str(n) for n in req.get("remotes") or []]
        try:
            known = {s.name for s in self.resyncer.sync.sync_remotes(names)} if names else None
        except AnnexError as e:
            return {"error": str(e)}
        wait = bool(req.get("wait"))
        self.hub.emit(self.name, "remotechanged", remotes=names or "all")
        sr = self.resyncer.request(known, "remotechanged", wait=wait)
        reply: dict[str, Any] = {"queued": True}
        if wait:
            reply["_request"] = sr
        return reply


def _send(f: Any, obj: dict[str, Any]) -> None:
    f.write(json.dumps({k: v for k, v in obj.items() if not k.startswith("_")}).encode()
            + b"\n")
    f.flush()


class NoDaemon(Exception):
    """Nothing listens on the control socket."""


def request_sync(annex_dir: Path, remotes: list[str], *, wait: bool = False,
                 timeout: float = 300.0) -> dict[str, Any]:
    """Ask the daemon of this repository to sync; its (last) reply.

    Raises :class:`NoDaemon` when no daemon listens, :class:`AnnexError` when the
    daemon refuses (an unknown remote).
    """
    path = socket_path(annex_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    with sock:
        try:
            with _short_address(path) as addr:
                sock.connect(addr)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NoDaemon(str(path)) from None
        except OSError as e:
            raise NoDaemon(f"{path}: {e.strerror}") from None
        sock.settimeout(timeout + 10 if wait else 10)
        f = sock.makefile("rwb")
        _send(f, {"cmd": "sync", "remotes": remotes, "wait": wait, "timeout": timeout})
        reply: dict[str, Any] = {}
        for _ in range(2 if wait else 1):
            line = f.readline(_MAX_REQUEST)
            if not line:
                break
            reply = json.loads(line)
            if "error" in reply:
                raise AnnexError(str(reply["error"]))
        return reply
