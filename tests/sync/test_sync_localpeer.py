"""sync with a clone on this machine: what arrives there, with and without receive-pack.

A local clone is pushed to directly (objects unpacked into it, its refs moved by
compare-and-swap) unless it has receive hooks or receive settings; these tests check
what the clone ends up with either way.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import run_cli


def sh(cwd: Path, *args: str, check: bool = True) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if check and p.returncode:
        raise AssertionError(f"{args}: {p.stdout}{p.stderr}")
    return p.stdout


def rev(repo: Path, ref: str) -> str:
    return sh(repo, "git", "rev-parse", "--verify", "-q", ref, check=False).strip()


@pytest.fixture
def ab(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    run_cli(a, "init", "A")
    (a / "start.txt").write_text("start\n")
    run_cli(a, "add", ".")
    sh(a, "git", "commit", "-q", "-m", "start")
    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    assert run_cli(b, "init", "B")[0] == 0
    sh(a, "git", "remote", "add", "b", str(b))
    assert run_cli(a, "sync", "--quiet")[0] == 0
    return a, b


def change_and_sync(a: Path, name: str) -> None:
    (a / name).write_text(f"{name} content\n")
    code, out, err = run_cli(a, "sync", "--quiet")
    assert code == 0, out + err


def assert_clone_has_our_branches(a: Path, b: Path) -> None:
    assert rev(b, "refs/heads/synced/main") == rev(a, "refs/heads/main")
    assert rev(b, "refs/heads/synced/git-annex") == rev(a, "refs/heads/git-annex")
    assert rev(b, "refs/heads/git-annex") == rev(a, "refs/heads/git-annex")
    # Every object the new refs need is there.
    sh(b, "git", "fsck", "--connectivity-only", "--no-dangling")
    # Our view of the clone follows, as after git push.
    assert rev(a, "refs/remotes/b/synced/main") == rev(a, "refs/heads/main")


def test_push_to_local_clone_delivers_everything(ab: tuple[Path, Path]) -> None:
    a, b = ab
    b_main = rev(b, "refs/heads/main")
    for i in range(3):
        change_and_sync(a, f"new{i}.txt")
        assert_clone_has_our_branches(a, b)
    # The clone's checked-out branch is never moved behind its work tree's back.
    assert rev(b, "refs/heads/main") == b_main
    assert sh(b, "git", "status", "--porcelain") == ""
    # ... and the clone can merge what arrived.
    assert run_cli(b, "sync", "--quiet")[0] == 0
    assert "new2.txt" in sh(b, "git", "ls-files").split()


def test_many_objects_go_into_a_pack(ab: tuple[Path, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = ab
    d = a / "many"
    d.mkdir()
    for i in range(150):
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    trace = tmp_path / "git-trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    change_and_sync(a, "x.txt")
    monkeypatch.delenv("GIT_TRACE")
    assert_clone_has_our_branches(a, b)
    text = trace.read_text()
    # The pack went into the clone directly (no git push fallback).
    assert "index-pack" in text and "receive-pack" not in text
    assert run_cli(b, "sync", "--quiet")[0] == 0
    assert "many/f149.txt" in sh(b, "git", "ls-files").split()


def test_receive_hook_in_clone_still_runs(ab: tuple[Path, Path]) -> None:
    a, b = ab
    hook = b / ".git" / "hooks" / "post-receive"
    hook.write_text("#!/bin/sh\ncat >> \"$GIT_DIR/received.log\"\n")
    os.chmod(hook, 0o755)
    change_and_sync(a, "hooked.txt")
    assert_clone_has_our_branches(a, b)
    log = (b / ".git" / "received.log").read_text()
    assert "refs/heads/synced/main" in log and "refs/heads/synced/git-annex" in log


def test_changes_made_in_the_clone_are_fetched(ab: tuple[Path, Path]) -> None:
    a, b = ab
    change_and_sync(a, "from-a.txt")
    (b / "from-b.txt").write_text("b was here\n")
    assert run_cli(b, "sync", "--quiet", "--no-push")[0] == 0
    assert run_cli(a, "sync", "--quiet")[0] == 0
    assert os.path.lexists(a / "from-b.txt")
    # b had everything a has now (a fast-forwarded to b's branches): nothing to push.
    assert rev(b, "refs/heads/synced/main") == rev(a, "refs/heads/main")
    assert rev(b, "refs/heads/git-annex") == rev(a, "refs/heads/git-annex")
    change_and_sync(a, "after.txt")
    assert_clone_has_our_branches(a, b)


def test_diverged_clone_is_merged_then_pushed(ab: tuple[Path, Path]) -> None:
    a, b = ab
    # b commits on its synced/main (as its own sync would push elsewhere): a's
    # synced/main push is then not a fast-forward until a has merged it.
    (b / "b-side.txt").write_text("b side\n")
    assert run_cli(b, "sync", "--quiet", "--no-push")[0] == 0
    sh(b, "git", "update-ref", "refs/heads/synced/main", "HEAD")
    change_and_sync(a, "a-side.txt")
    assert os.path.lexists(a / "b-side.txt")
    assert_clone_has_our_branches(a, b)
