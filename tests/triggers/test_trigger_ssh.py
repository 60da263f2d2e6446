"""ssh remotes: their changes reach the daemon through ``notifychanges``, over a real sshd.

The remote clone has no daemon: someone commits in it by hand (or pushes into it). Its
``annexsync-shell``/``git-annex-shell notifychanges`` stream tells our daemon, which
fetches and merges at once. sshd is then killed with every session (the cached
connection dies with it) and started again on the same port: the stream is reopened
and the daemon does a full resync, so what happened meanwhile arrives too.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest
from triggerkit import Daemon, annexsync, git, log_lines, make_clones, wait_for

from annexsync.testing.sshd import SshdUnavailable, SshServer, start_sshd


@pytest.fixture
def sshd(tmp_path: Path) -> SshServer:
    try:
        server = start_sshd(tmp_path / "sshd")
    except SshdUnavailable as e:
        pytest.skip(str(e))
    yield server  # type: ignore[misc]
    server.stop()


def commit_by_hand(repo: Path, name: str) -> None:
    (repo / name).write_text(f"{name}, committed by hand on the server\n")
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", name)


def ssh_pair(tmp_path: Path, sshd: SshServer, shell: str | None) -> tuple[Path, Path]:
    """Clone ``a`` whose only remote ``srv`` is clone ``b`` over ssh."""
    a, b = make_clones(tmp_path, 2)
    git(a, "remote", "remove", "c1")
    git(b, "remote", "remove", "c0")
    git(a, "remote", "add", "srv", sshd.url(b))
    git(a, "config", "remote.srv.annex-ssh-options", shlex.join(sshd.ssh_options()))
    if shell:
        git(a, "config", "remote.srv.annex-shell", shell)
    # Fully in sync before the daemon starts: no start-up upload makes the server
    # record content (a change of its own, which the daemon would rightly fetch).
    annexsync(a, "sync", "--content", "-q")
    return a, b


@pytest.mark.parametrize("shell", [None, "git-annex-shell"])
def test_a_commit_on_an_ssh_remote_is_merged_at_once(tmp_path: Path, sshd: SshServer,
                                                     shell: str | None) -> None:
    a, b = ssh_pair(tmp_path, sshd, shell)
    # Files made here stay in git, so the server records no content of its own in its
    # git-annex branch (which would rightly be fetched): what comes back is our push.
    git(a, "config", "annex.largefiles", "nothing")
    d = Daemon(a).start()
    try:
        wait_for(lambda: log_lines(d, "sshnotifier: notify-connected remote=srv"), 20,
                 what="the notifychanges stream")
        commit_by_hand(b, "first.txt")
        t0 = time.monotonic()
        wait_for(lambda: (a / "first.txt").exists(), 20, what="the commit to be merged")
        assert time.monotonic() - t0 < 5
        assert log_lines(d, "sshnotifier: remote-changed remote=srv")
        # Our own pushes come back as CHANGED too: they must not make us fetch.
        changed = len(log_lines(d, "sshnotifier: remote-changed"))
        (a / "ours.txt").write_text("from the daemon's side\n")
        wait_for(lambda: "ours.txt" in git(b, "ls-tree", "-r", "--name-only", "synced/main"),
                 20, what="our push")
        commit_by_hand(b, "second.txt")  # a later change still arrives
        wait_for(lambda: (a / "second.txt").exists(), 20, what="the second commit")
        assert len(log_lines(d, "sshnotifier: remote-changed")) == changed + 1
    finally:
        d.stop()


def test_killed_sshd_that_comes_back_is_reconnected_and_resynced(
        tmp_path: Path, sshd: SshServer) -> None:
    a, b = ssh_pair(tmp_path, sshd, None)
    d = Daemon(a).start()
    try:
        wait_for(lambda: log_lines(d, "sshnotifier: notify-connected remote=srv"), 20,
                 what="the notifychanges stream")
        sshd.stop()
        wait_for(lambda: log_lines(d, "sshnotifier: notify-lost remote=srv"), 20,
                 what="the daemon to notice the lost stream")
        commit_by_hand(b, "while-down.txt")  # nobody can tell us about this one
        sshd.restart()
        wait_for(lambda: len(log_lines(d, "sshnotifier: notify-connected remote=srv")) == 2,
                 30, what="the stream to be reopened")
        # the reconnection's full resync brings what changed while it was down
        wait_for(lambda: (a / "while-down.txt").exists(), 20, what="the missed commit")
        wait_for(lambda: [ln for ln in log_lines(d, "resync: resync-done")
                          if "reason=reconnected" in ln and "synced=['srv']" in ln],
                 20, what="the resync of the reconnection")
        commit_by_hand(b, "after.txt")
        wait_for(lambda: (a / "after.txt").exists(), 20, what="a commit after reconnecting")
        # one log line per back-off step, not one per attempt
        assert len(log_lines(d, "sshnotifier: notify-lost")) <= 4
    finally:
        d.stop()
