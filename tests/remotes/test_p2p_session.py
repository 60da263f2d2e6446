"""P2P client and annexsync's server together (in-process, over socketpairs), and the
client against hostile servers."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from annexsync.annex.backends import hash_file
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.init import init
from annexsync.annex.keys import Key
from annexsync.annex.location import locations
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.base import (
    KeyNotPresent,
    RemoteError,
    RemoteInfo,
    RemoteUnavailable,
    TransferAborted,
)
from annexsync.remotes.p2p import (
    FdTransport,
    P2PRemote,
    P2PSession,
    ProtocolError,
)
from annexsync.shell.server import Mode, P2PServer

CLIENT = "11111111-2222-3333-4444-555555555555"


def make_repo(path: Path, desc: str) -> AnnexRepo:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    repo = AnnexRepo.find(path)
    init(repo, desc)
    return repo


def add_object(repo: AnnexRepo, data: bytes, name: str = "f.bin") -> Key:
    src = repo.top / name
    src.write_bytes(data)
    key, _ = hash_file(src)
    ObjectStore(repo.annex_dir).move_in(key, src)
    return key


def key_for(tmp: Path, data: bytes, name: str = "f.bin") -> tuple[Key, Path]:
    src = tmp / name
    src.write_bytes(data)
    key, _ = hash_file(src)
    return key, src


class Served:
    """Connections to an in-process P2PServer, each on its own thread."""

    def __init__(self, repo: AnnexRepo, mode: Mode = Mode.READ_WRITE) -> None:
        self.repo = repo
        self.mode = mode
        self.threads: list[threading.Thread] = []
        self.connections = 0

    def __call__(self) -> P2PSession:
        a, b = socket.socketpair()
        sfd = b.detach()
        server = P2PServer(self.repo, CLIENT, self.mode, rfd=sfd, wfd=sfd)
        t = threading.Thread(target=server.serve, daemon=True)
        t.start()
        self.threads.append(t)
        self.connections += 1
        fd = a.detach()
        s = P2PSession(FdTransport(fd, fd, "test server"), "test server")
        s.start(self.repo.uuid)
        return s

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=10)
            assert not t.is_alive()


@pytest.fixture
def server_repo(tmp_path: Path) -> Iterator[AnnexRepo]:
    repo = make_repo(tmp_path / "server", "server")
    yield repo
    repo.close()  # its cat-file process, used by every server thread


@pytest.fixture
def served(server_repo: AnnexRepo) -> Iterator[Served]:
    s = Served(server_repo)
    yield s


def remote_for(served: Served) -> P2PRemote:
    return P2PRemote(RemoteInfo("srv", served.repo.uuid, "git", supports_locking=True), served)


DATA = bytes(range(256)) * 1000 + b"tail"


def test_get_check_present_and_resume(served: Served, server_repo: AnnexRepo) -> None:
    key = add_object(server_repo, DATA)
    r = remote_for(served)
    assert r.check_present(key)
    sink = io.BytesIO()
    moved: list[int] = []
    r.retrieve(key, sink, 0, moved.append)
    assert sink.getvalue() == DATA and sum(moved) == len(DATA)
    sink = io.BytesIO()
    r.retrieve(key, sink, 1000, lambda n: None)
    assert sink.getvalue() == DATA[1000:]
    missing = Key.parse("SHA256E-s3--" + "0" * 64 + ".bin")
    assert not r.check_present(missing)
    with pytest.raises(KeyNotPresent):
        r.retrieve(missing, io.BytesIO(), 0, lambda n: None)
    # One long-lived session served every request, including the refused one.
    assert served.connections == 1
    r.close()
    served.join()
    # The server recorded nothing as failed and left no transfer in progress.
    assert not list((server_repo.annex_dir / "transfer").glob("failed/*/*/*"))
    assert not list((server_repo.annex_dir / "transfer").glob("upload/*/SHA*"))


def test_put_commits_the_servers_location_log(served: Served, server_repo: AnnexRepo,
                                              tmp_path: Path) -> None:
    keys = []
    r = remote_for(served)
    for i in range(3):
        key, src = key_for(tmp_path, DATA + bytes([i]), f"f{i}.bin")
        r.store(key, src, lambda n: None)
        keys.append(key)
    r.store(keys[0], tmp_path / "f0.bin", lambda n: None)  # ALREADY-HAVE
    r.close()
    served.join()
    store = ObjectStore(server_repo.annex_dir)
    branch = AnnexBranch(server_repo)
    for key in keys:
        assert store.has(key)
        assert server_repo.uuid in locations(branch, key)
    assert branch.journal.is_empty()  # committed, not left in the journal
    log = subprocess.run(["git", "log", "--format=%s", "git-annex"], cwd=server_repo.top,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert log.count("update") <= 2  # batched: not one commit per key
    assert not list((server_repo.annex_dir / "transfer").glob("download/*/SHA*"))


def test_put_resumes_from_the_servers_partial_file(served: Served, server_repo: AnnexRepo,
                                                   tmp_path: Path) -> None:
    key, src = key_for(tmp_path, DATA)
    tmp = ObjectStore(server_repo.annex_dir).tmp_path(key)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(DATA[:100000])
    moved: list[int] = []
    r = remote_for(served)
    r.store(key, src, moved.append)
    assert sum(moved) == len(DATA) - 100000
    assert ObjectStore(server_repo.annex_dir).has(key)
    r.close()


def test_put_of_wrong_bytes_is_refused_and_not_resumed(served: Served, server_repo: AnnexRepo,
                                                        tmp_path: Path) -> None:
    key, src = key_for(tmp_path, DATA)
    src.chmod(0o644)
    src.write_bytes(b"X" * len(DATA))
    r = remote_for(served)
    with pytest.raises(RemoteError, match="failed to store"):
        r.store(key, src, lambda n: None)
    store = ObjectStore(server_repo.annex_dir)
    assert not store.has(key)
    assert not store.tmp_path(key).exists()
    # The session is still good after a clean refusal.
    src.write_bytes(DATA)
    r.store(key, src, lambda n: None)
    assert store.has(key)
    assert served.connections == 1
    r.close()


def test_remove_waits_for_no_lock(served: Served, server_repo: AnnexRepo) -> None:
    key = add_object(server_repo, DATA)
    r = remote_for(served)
    with r.lock_content(key) as locked:
        assert locked
        with pytest.raises(RemoteError, match="could not remove"):
            r.remove(key)
        assert r.check_present(key)
    r.remove(key)
    assert not r.check_present(key)
    with r.lock_content(key) as locked:
        assert not locked
    r.close()
    served.join()
    assert server_repo.uuid not in locations(AnnexBranch(server_repo), key)


@pytest.mark.parametrize(("mode", "refused"), [(Mode.READ_ONLY, "read-only"),
                                               (Mode.APPEND_ONLY, "append-only")])
def test_readonly_and_appendonly(server_repo: AnnexRepo, tmp_path: Path, mode: Mode,
                                 refused: str) -> None:
    key = add_object(server_repo, DATA)
    r = remote_for(Served(server_repo, mode))
    with pytest.raises(RemoteError, match=refused):
        r.remove(key)
    key2, src = key_for(tmp_path, b"new content")
    if mode is Mode.READ_ONLY:
        with pytest.raises(RemoteError, match="read-only"):
            r.store(key2, src, lambda n: None)
    else:
        r.store(key2, src, lambda n: None)
    assert r.check_present(key)
    r.close()


# -- hostile or broken servers -------------------------------------------------------------


def scripted(script: Callable[[socket.socket], None]) -> Callable[[], P2PSession]:
    def connect() -> P2PSession:
        a, b = socket.socketpair()

        def run() -> None:
            with b:
                try:
                    script(b)
                except OSError:
                    pass

        threading.Thread(target=run, daemon=True).start()
        fd = a.detach()
        return P2PSession(FdTransport(fd, fd, "evil"), "evil")

    return connect


def _lines(sock: socket.socket) -> Iterator[bytes]:
    f = sock.makefile("rb")
    while line := f.readline():
        yield line


KEY = Key.parse("SHA256E-s10--" + "a" * 64)


def test_wrong_server_uuid_is_refused() -> None:
    s = scripted(lambda sock: sock.sendall(b"AUTH-SUCCESS other-uuid\n"))()
    with pytest.raises(RemoteError, match="expected repository UUID"):
        s.start("the-right-uuid")
    s.close()


def test_not_a_p2p_server() -> None:
    s = scripted(lambda sock: sock.sendall(b"Welcome to my shell!\n"))()
    with pytest.raises(ProtocolError, match="not a P2P server"):
        s.start(None)
    s.close()


def test_overlong_line_is_refused() -> None:
    s = scripted(lambda sock: sock.sendall(b"A" * 100000))()
    with pytest.raises(ProtocolError, match="too long"):
        s.start(None)
    s.close()


def _handshake(sock: socket.socket) -> Iterator[bytes]:
    sock.sendall(b"AUTH-SUCCESS srv-uuid\n")
    lines = _lines(sock)
    assert next(lines) == b"VERSION 1\n"
    sock.sendall(b"VERSION 1\n")
    return lines


def test_data_longer_than_the_key_is_refused_before_reading() -> None:
    def script(sock: socket.socket) -> None:
        lines = _handshake(sock)
        next(lines)
        sock.sendall(b"DATA 1000000000000\n")  # and nothing else: a client that read would hang
        for _ in lines:
            pass

    s = scripted(script)()
    s.start(None)
    sink = io.BytesIO()
    with pytest.raises(ProtocolError, match="for a key of 10 bytes"):
        s.get(KEY, sink, 0, lambda n: None)
    assert sink.getvalue() == b"" and s.broken
    s.close()


def test_cut_connection_keeps_partial_data_then_resumes(server_repo: AnnexRepo) -> None:
    key = add_object(server_repo, DATA)
    got = bytearray()

    class Sink:
        def write(self, data: bytes) -> None:
            got.extend(data)

    def cut(sock: socket.socket) -> None:
        lines = _handshake(sock)
        next(lines)
        sock.sendall(b"DATA %d\n" % len(DATA) + DATA[:5000])
        sock.shutdown(socket.SHUT_RDWR)

    s = scripted(cut)()
    s.start(None)
    with pytest.raises(RemoteUnavailable, match="connection to evil lost"):
        s.get(key, Sink(), 0, lambda n: None)
    s.close()
    assert bytes(got) == DATA[:5000]
    r = remote_for(Served(server_repo))
    r.retrieve(key, Sink(), len(got), lambda n: None)
    assert bytes(got) == DATA
    r.close()


def test_abort_from_another_thread_stops_a_blocked_get() -> None:
    started = threading.Event()

    def slow(sock: socket.socket) -> None:
        lines = _handshake(sock)
        next(lines)
        sock.sendall(b"DATA 10\nabc")
        started.set()
        for _ in lines:
            pass

    s = scripted(slow)()
    s.start(None)
    threading.Thread(target=lambda: (started.wait(5), s.abort()), daemon=True).start()
    with pytest.raises(TransferAborted):
        s.get(KEY, io.BytesIO(), 0, lambda n: None)
    s.close()


def test_unexpected_reply_sends_error_and_drops_the_session() -> None:
    seen: list[bytes] = []
    done = threading.Event()

    def script(sock: socket.socket) -> None:
        lines = _handshake(sock)
        next(lines)
        sock.sendall(b"PUT-FROM 0\n")  # not an answer to CHECKPRESENT
        seen.extend(lines)
        done.set()

    r = P2PRemote(RemoteInfo("evil", "", "git"), scripted_started(script))
    with pytest.raises(ProtocolError):
        r.check_present(KEY)
    r.close()
    assert done.wait(10)
    assert seen and seen[0].startswith(b"ERROR expected")


def scripted_started(script: Callable[[socket.socket], None]) -> Callable[[], P2PSession]:
    connect = scripted(script)

    def go() -> P2PSession:
        s = connect()
        s.start(None)
        return s

    return go


def test_server_survives_garbage_and_keeps_serving(server_repo: AnnexRepo) -> None:
    key = add_object(server_repo, DATA)
    a, b = socket.socketpair()
    sfd = b.detach()
    server = P2PServer(server_repo, CLIENT, rfd=sfd, wfd=sfd)
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    a.sendall(b"VERSION 1\nCHECKPRESENT ../../../etc/passwd\nGET -1 x " + str(key).encode()
              + b"\nBOGUS\nCHECKPRESENT " + str(key).encode() + b"\n")
    f = a.makefile("rb")
    replies = [f.readline() for _ in range(6)]
    assert replies[0].startswith(b"AUTH-SUCCESS ")
    assert replies[1] == b"VERSION 1\n"
    assert all(r.startswith(b"ERROR ") for r in replies[2:5])
    assert replies[5] == b"SUCCESS\n"
    f.close()
    a.close()
    t.join(timeout=10)
    assert not t.is_alive()


def test_meter_abort_during_a_big_pipelined_get(served: Served, server_repo: AnnexRepo) -> None:
    big = os.urandom(12 << 20)  # above PIPELINE_MIN: read by a second thread
    key = add_object(server_repo, big)
    r = remote_for(served)
    got = bytearray()

    class Sink:
        def write(self, data: bytes) -> None:
            got.extend(data)

    def meter(n: int) -> None:
        if len(got) > (5 << 20):
            raise TransferAborted("stalled")

    t0 = time.monotonic()
    with pytest.raises(TransferAborted):
        r.retrieve(key, Sink(), 0, meter)
    assert time.monotonic() - t0 < 3
    assert bytes(got) == big[: len(got)]
    r.retrieve(key, Sink(), len(got), lambda n: None)  # a new session resumes
    assert bytes(got) == big and served.connections == 2
    r.close()
