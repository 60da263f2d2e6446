"""The ssh notifier's reading of a stream: every line from the other side is input.

The stream here is a real process printing what a (possibly hostile) far side could.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from triggerkit import git, make_clones

from annexsync.annex.repo import AnnexRepo
from annexsync.assistant.events import EventLog
from annexsync.assistant.hub import Hub, Settings
from annexsync.assistant.resync import SyncRequest
from annexsync.assistant.sshnotifier import SshNotifier, _Stream


class Resyncer:
    def __init__(self) -> None:
        self.requests: list[tuple[list[str], str]] = []

    def request(self, remotes: list[str], reason: str, **kw: object) -> SyncRequest:
        self.requests.append((sorted(remotes), reason))
        return SyncRequest(frozenset(remotes), reason)  # never done: a fetch under way


def read_stream(repo: Path, text: bytes, *, resync: bool = False
                ) -> tuple[str, list[tuple[list[str], str]], list[str]]:
    events = EventLog()
    rs = Resyncer()
    notifier = SshNotifier(Hub(AnnexRepo.find(repo), events, Settings()), rs)  # type: ignore[arg-type]
    proc = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.close()
    try:
        error = notifier._read(_Stream("srv", "ssh://h/r", None), proc, resync=resync)
    finally:
        proc.wait()
    return error, rs.requests, [e.kind for e in events.since(0)]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_clones(tmp_path, 1)[0]


def test_unknown_ids_fetch_known_ids_do_not(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    unknown = "1" * 40
    error, requests, kinds = read_stream(
        repo, f"READY\nCHANGED {head}\nCHANGED {head} {unknown}\n".encode())
    assert error == ""  # a clean end of the stream
    assert requests == [(["srv"], "remote-changed")]
    assert kinds == ["notify-connected", "remote-changed"]


def test_ids_a_fetch_under_way_will_bring_ask_nothing_more(repo: Path) -> None:
    one, two = "1" * 40, "2" * 40
    _, requests, _ = read_stream(
        repo, f"READY\nCHANGED {one}\nCHANGED {one}\nCHANGED {two} {one}\n".encode())
    assert requests == [(["srv"], "remote-changed")] * 2  # the third line has a new id


def test_reconnection_asks_for_a_full_resync(repo: Path) -> None:
    _, requests, _ = read_stream(repo, b"READY\n", resync=True)
    assert requests == [(["srv"], "reconnected")]


@pytest.mark.parametrize("text, why", [
    (b"READY\nCHANGED ../../etc/passwd\n", "bad object id"),
    (b"READY\nCHANGED " + b"g" * 40 + b"\n", "bad object id"),
    (b"READY\nDELETE everything\n", "protocol error"),
    (b"CHANGED " + b"1" * 40 + b"\n", "protocol error"),  # before READY
    (b"READY\n" + b"x" * 70000, "line too long"),
])
def test_hostile_lines_end_the_stream_and_ask_nothing(repo: Path, text: bytes,
                                                      why: str) -> None:
    error, requests, _ = read_stream(repo, text)
    assert why in error
    assert requests == []
