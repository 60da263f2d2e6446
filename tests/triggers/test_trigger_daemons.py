"""Change hook, remotechanged, local-remote watching and quiet failures, with real daemons."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from triggerkit import Daemon, annexsync, git, log_lines, make_clones, wait_for


def test_change_hook_after_commit_and_after_merge(tmp_path: Path) -> None:
    a, b = make_clones(tmp_path, 2)
    out = tmp_path / "hook.out"
    git(a, "config", "annexsync.changehook",
        f'echo "$ANNEXSYNC_EVENT|$ANNEXSYNC_REPO|$ANNEXSYNC_REFS|$ANNEXSYNC_MERGED" >> {out}'
        '; echo said-by-the-hook; echo to-stderr >&2')
    da, db = Daemon(a).start(), Daemon(b).start()
    try:
        def runs(event: str) -> list[list[str]]:
            try:
                lines = out.read_text().splitlines()
            except FileNotFoundError:
                return []
            return [ln.split("|") for ln in lines if ln.startswith(event + "|")]

        (a / "local.txt").write_text("made here\n")
        wait_for(lambda: "local.txt" in git(a, "ls-files"), 20, what="the commit")
        head = git(a, "log", "-1", "--format=%H", "--", "local.txt")
        wait_for(lambda: any(f"refs/heads/main={head}" in r[2] for r in runs("commit")), 10,
                 what="the hook to run after the commit")
        assert runs("commit")[0][1] == str(a)
        (b / "remote.txt").write_text("made there\n")
        # git writes the work tree before it moves HEAD: wait for the commit itself
        wait_for(lambda: git(a, "log", "-1", "--format=%H", "--", "remote.txt"), 30,
                 what="the change to arrive")
        head = git(a, "rev-parse", "HEAD")
        wait_for(lambda: any(f"refs/heads/main={head}" in r[2] for r in runs("merge")), 10,
                 what="the hook to run after the merge")
        merge = next(r for r in runs("merge") if f"refs/heads/main={head}" in r[2])
        assert merge[1] == str(a)
        assert "c1" in merge[3] or "synced/main" in merge[3], merge
        wait_for(lambda: log_lines(da, "changehook: output line=said-by-the-hook"), 5,
                 what="the hook's output in the daemon log")
        assert log_lines(da, "changehook: output line=to-stderr")
        assert log_lines(da, "changehook: hook-done event=commit exit=0")
        assert not log_lines(db, "changehook")  # only where it is configured
    finally:
        da.stop()
        db.stop()


def test_change_hook_is_killed_after_its_timeout(tmp_path: Path) -> None:
    (a,) = make_clones(tmp_path, 1)
    marker = tmp_path / "still-running"
    git(a, "config", "annexsync.changehook", f"sleep 30; touch {marker}")
    git(a, "config", "annexsync.changehooktimeout", "0.5")
    d = Daemon(a).start()
    try:
        (a / "f.txt").write_text("x\n")
        wait_for(lambda: log_lines(d, "changehook: hook-timeout"), 15, what="the timeout")
        # the daemon goes on committing while hooks time out
        (a / "g.txt").write_text("y\n")
        wait_for(lambda: "g.txt" in git(a, "ls-files"), 15, what="the next commit")
    finally:
        d.stop()
    assert not marker.exists()  # the whole process group was killed


def test_commit_in_a_local_remote_without_daemon_is_merged_at_once(tmp_path: Path) -> None:
    a, b = make_clones(tmp_path, 2)
    d = Daemon(a).start()
    try:
        wait_for(lambda: log_lines(d, "remotewatcher: watching remote=c1"), 10, what="watch")
        (b / "by-hand.txt").write_text("plain git, no daemon there\n")
        git(b, "add", "by-hand.txt")
        git(b, "commit", "-q", "-m", "by hand")
        t0 = time.monotonic()
        wait_for(lambda: (a / "by-hand.txt").exists(), 15, what="the commit to be merged")
        assert time.monotonic() - t0 < 5
        assert log_lines(d, "remotewatcher: remote-changed remotes=['c1']")
        # a packed ref moves too (git pack-refs, git gc)
        (b / "packed.txt").write_text("then packed\n")
        git(b, "add", "packed.txt")
        git(b, "commit", "-q", "-m", "packed")
        git(b, "pack-refs", "--all")
        wait_for(lambda: (a / "packed.txt").exists(), 15, what="the packed commit")
        # b's git-annex branch alone moving twice in a row: one fetch, after a calm
        before = len(log_lines(d, "remotewatcher: remote-changed"))
        for i in range(2):
            tip = git(b, "commit-tree", "git-annex^{tree}", "-p", "git-annex", "-m", f"log {i}")
            git(b, "update-ref", "refs/heads/git-annex", tip)
        wait_for(lambda: git(a, "rev-parse", "refs/remotes/c1/git-annex") == tip, 15,
                 what="b's git-annex branch to be fetched")
        annex_only = log_lines(d, "remotewatcher: remote-changed")[before:]
        assert len(annex_only) == 1 and "refs/heads/git-annex" in annex_only[0], annex_only
    finally:
        d.stop()


def served(d: Daemon) -> list[str]:
    """Resync rounds that served a remotechanged request and synced c1."""
    return [ln for ln in log_lines(d, "resync: resync-done")
            if "remotechanged" in ln and "synced=['c1']" in ln]


def test_remotechanged_with_and_without_a_daemon(tmp_path: Path) -> None:
    a, b = make_clones(tmp_path, 2)
    d = Daemon(a).start()
    try:
        p = annexsync(a, "remotechanged", "c1", "--wait")
        assert "the assistant synced with c1" in p.stdout
        assert served(d)
        p = annexsync(a, "remotechanged", "nosuch", check=False)
        assert p.returncode == 1 and "nosuch" in p.stderr
        p = annexsync(a, "remotechanged")  # every remote, without waiting
        assert "will sync with every remote" in p.stdout
        wait_for(lambda: served(d)[1:], 10, what="the second round")
    finally:
        d.stop()
    assert not (a / ".git" / "annex" / "annexsync.sock").exists()
    # No daemon: a one-shot sync with that remote instead, said so.
    (b / "later.txt").write_text("while a's daemon was stopped\n")
    annexsync(b, "sync", "-q", "--no-push")
    p = annexsync(a, "remotechanged", "c1")
    assert "no assistant is running" in p.stderr and "syncing with c1 once" in p.stderr
    assert "later.txt" in git(a, "ls-files")  # merged (content was not asked for)


def test_unplugged_local_remote_and_unreachable_network_remote_stay_quiet(
        tmp_path: Path) -> None:
    a, b = make_clones(tmp_path, 2)
    git(a, "config", "remote.c1.url", str(tmp_path / "unplugged-drive" / "c1"))
    # a network remote whose host refuses connections at once
    git(a, "remote", "add", "net", "git://127.0.0.1:1/nowhere")
    d = Daemon(a).start()
    try:
        t0 = time.monotonic()
        for i in range(8):
            (a / f"f{i}.txt").write_text(f"{i}\n")
            wait_for(lambda i=i: f"f{i}.txt" in git(a, "ls-files"), 15, what=f"commit {i}")
        p = annexsync(a, "remotechanged", "c1", "--wait", check=False)
        assert p.returncode == 1 and "not available" in p.stderr
        elapsed = time.monotonic() - t0
        assert not log_lines(d, "remote=c1 error"), d.log()[-2000:]  # the drive: silence
        failed = log_lines(d, "push-failed remote=net")
        # one attempt and one line per back-off step (1, 2, 4 ... s), not one per commit
        steps = 2 + int(elapsed).bit_length()
        assert 1 <= len(failed) <= steps, (len(failed), elapsed)
        retries = [float(ln.rsplit("retry_in=", 1)[1]) for ln in failed]
        assert retries == sorted(retries) and retries[0] == 1.0
    finally:
        d.stop()


def test_remotechanged_cli_help() -> None:
    p = subprocess.run([sys.executable, "-m", "annexsync", "remotechanged", "--help"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "control socket" in p.stdout
