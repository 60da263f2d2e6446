"""End to end over ssh: two assistants whose only remotes are each other, over a real sshd.

Everything travels through ssh on loopback: git pushes and fetches through the cached
connection, content through ``annexsync-shell p2pstdio``, and each side hears of the
other's changes through its ``notifychanges`` stream as well as through pushes.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from annexsync.testing.daemons import Daemon, make_clones, wait_for
from annexsync.testing.sshd import SshdUnavailable, SshServer, start_sshd
from conftest import conflicting_edits_keep_both, sh


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd"))
    except SshdUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.stop()


def over_ssh(tmp_path: Path, sshd: SshServer) -> tuple[Path, Path]:
    """Clones a and b, each the other's remote over ssh (no local-path remotes)."""
    a, b = make_clones(tmp_path, 2)
    options = shlex.join(sshd.ssh_options())
    for here, name, there in ((a, "c1", b), (b, "c0", a)):
        sh(here, "git", "remote", "set-url", name, sshd.url(there))
        sh(here, "git", "config", f"remote.{name}.annex-ssh-options", options)
        sh(here, "git", "config", "core.sshCommand", sshd.git_ssh_command())
    return a, b


def content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def arrives(path: Path, data: bytes, timeout: float = 40.0) -> None:
    wait_for(lambda: content(path) == data, timeout, what=f"{path} with the right content")


def gone(path: Path, timeout: float = 40.0) -> None:
    wait_for(lambda: not os.path.lexists(path), timeout, what=f"{path} to disappear")


def test_changes_and_content_travel_both_ways_over_ssh(tmp_path: Path,
                                                       sshd: SshServer) -> None:
    a, b = over_ssh(tmp_path, sshd)
    logins = sshd.accepted_logins()
    da, db = Daemon(a).start(), Daemon(b).start()
    try:
        big = os.urandom(300_000)
        (a / "photo.jpg").write_bytes(big)
        arrives(b / "photo.jpg", big)
        tmp = a / ".photo.jpg.tmp"  # modify, as editors do: a new file renamed over
        tmp.write_bytes(big[::-1])
        os.replace(tmp, a / "photo.jpg")
        arrives(b / "photo.jpg", big[::-1])
        (b / "docs" / "sub").mkdir(parents=True)
        os.rename(b / "photo.jpg", b / "docs" / "sub" / "moved.jpg")
        arrives(a / "docs" / "sub" / "moved.jpg", big[::-1])
        gone(a / "photo.jpg")
        (b / "docs" / "note.txt").write_bytes(b"written on b\n")
        arrives(a / "docs" / "note.txt", b"written on b\n")
        sh(a, "rm", "-rf", "docs")
        gone(b / "docs" / "note.txt")
        gone(b / "docs" / "sub" / "moved.jpg")
        # a burst into a new directory
        (b / "burst").mkdir()
        datas = {f"f{i}.bin": os.urandom(1000) for i in range(100)}
        for n, d in datas.items():
            (b / "burst" / n).write_bytes(d)
        wait_for(lambda: all(content(a / "burst" / n) == d for n, d in datas.items()), 60,
                 what="the burst in a")
        # every byte went over ssh (no local path to either clone is configured), on few
        # connections: the cached masters, not one login per file
        assert 2 <= sshd.accepted_logins() - logins <= 20
    finally:
        da.stop()
        db.stop()


def test_conflicting_edits_over_ssh_keep_both(tmp_path: Path, sshd: SshServer) -> None:
    conflicting_edits_keep_both(*over_ssh(tmp_path, sshd))
