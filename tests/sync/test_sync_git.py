"""sync at the git level: clones converge, conflicts keep every side."""

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


annexsync = run_cli


def clone(src: Path, dst: Path, desc: str) -> Path:
    sh(src.parent, "git", "clone", "-q", str(src), str(dst))
    assert annexsync(dst, "init", desc)[0] == 0
    return dst


@pytest.fixture
def ab(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    annexsync(a, "init", "A")
    (a / "start.txt").write_text("start\n")
    annexsync(a, "add", ".")
    sh(a, "git", "commit", "-q", "-m", "start")
    b = clone(a, tmp_path / "b", "B")
    sh(a, "git", "remote", "add", "b", str(b))
    return a, b


def tree(repo: Path) -> dict[str, str]:
    """path -> content (following annex links) of the committed HEAD."""
    out = {}
    for line in sh(repo, "git", "ls-files").splitlines():
        p = repo / line
        out[line] = p.read_text() if p.exists() else "<missing content>"
    return out


def test_changes_flow_both_ways(ab: tuple[Path, Path]) -> None:
    a, b = ab
    (a / "new.txt").write_text("from a\n")
    (a / "start.txt").unlink()
    assert annexsync(a, "sync")[0] == 0
    # b pulls (a pushed into b's synced/main)
    assert annexsync(b, "sync")[0] == 0
    assert sh(b, "git", "ls-files").split() == ["new.txt"]
    assert (b / "new.txt").is_symlink()
    (b / "dir").mkdir()
    (b / "dir" / "x.bin").write_bytes(b"xx")
    os.rename(b / "new.txt", b / "dir" / "renamed.txt")
    assert annexsync(b, "sync")[0] == 0
    assert annexsync(a, "sync")[0] == 0
    assert sorted(sh(a, "git", "ls-files").split()) == ["dir/renamed.txt", "dir/x.bin"]
    assert sh(a, "git", "rev-parse", "HEAD^{tree}") == sh(b, "git", "rev-parse", "HEAD^{tree}")
    # git-annex branches agree: a knows b's uuid
    code, out, _ = annexsync(a, "info", "--json")
    assert '"B"' in out


def test_conflicting_edits_keep_both_as_variants(ab: tuple[Path, Path]) -> None:
    a, b = ab
    for repo, text in ((a, "A's version\n"), (b, "B's version, longer\n")):
        (repo / "doc.txt").write_text(text)
        assert annexsync(repo, "add", "doc.txt")[0] == 0
        sh(repo, "git", "commit", "-q", "-m", "edit")
    annexsync(a, "sync")
    code, out, err = annexsync(b, "sync")
    assert code == 0, err
    names = sorted(sh(b, "git", "ls-files").split())
    variants = [n for n in names if n.startswith("doc.variant-")]
    assert len(variants) == 2 and "doc.txt" not in names
    # each variant points at one side's content (B's is here; A's is in a)
    keys = sorted(os.readlink(b / v).rsplit("/", 1)[1] for v in variants)
    assert [k.split("--")[0] for k in keys] == ["SHA256E-s12", "SHA256E-s20"]
    assert [(b / v).read_text() for v in variants if (b / v).exists()] == \
        ["B's version, longer\n"]
    assert all(os.path.exists(a / ".git" / os.readlink(b / v).split(".git/", 1)[1])
               for v in variants if "s12" in os.readlink(b / v))
    annexsync(a, "sync")
    assert sh(a, "git", "rev-parse", "HEAD^{tree}") == sh(b, "git", "rev-parse", "HEAD^{tree}")
    assert sh(b, "git", "status", "--porcelain") == ""


def test_unreachable_remote_is_reported_not_fatal(ab: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = ab
    sh(a, "git", "remote", "add", "gone", str(tmp_path / "nowhere"))
    (a / "more.txt").write_text("more\n")
    code, out, err = annexsync(a, "sync")
    assert code == 1
    assert "sync gone:" in err and err.count("\n") == 1
    assert "push b ok" in out


def test_rejected_push_is_fetched_merged_and_pushed_again(ab: tuple[Path, Path]) -> None:
    a, b = ab
    sh(b, "git", "remote", "add", "a", str(a))
    # b pushes to a's synced/main first, then a makes its own change and pushes
    (b / "fromb.txt").write_text("b\n")
    assert annexsync(b, "sync", "a")[0] == 0
    (a / "froma.txt").write_text("a\n")
    assert annexsync(a, "sync", "--no-pull")[0] == 0  # a's synced/main on b moved? no: push
    (b / "fromb2.txt").write_text("b2\n")
    code, _, err = annexsync(b, "sync", "--no-pull", "a")
    assert code == 0, err
    annexsync(a, "sync")
    assert {"fromb.txt", "fromb2.txt", "froma.txt"} <= set(sh(a, "git", "ls-files").split())


def test_interrupted_merge_is_finished_by_next_sync(ab: tuple[Path, Path]) -> None:
    a, b = ab
    for repo, text in ((a, "A\n"), (b, "BB\n")):
        (repo / "c.txt").write_text(text)
        annexsync(repo, "add", "c.txt")
        sh(repo, "git", "commit", "-q", "-m", "c")
    sh(b, "git", "fetch", "-q", "origin")
    # simulate a crash in the middle of b's merge: conflicted index, MERGE_HEAD
    out = subprocess.run(["git", "merge", "--no-edit", "origin/main"], cwd=b,
                         capture_output=True, text=True)
    assert (b / ".git" / "MERGE_HEAD").exists(), out.stdout + out.stderr
    code, _, err = annexsync(b, "sync")
    assert code == 0, err
    assert not (b / ".git" / "MERGE_HEAD").exists()
    assert len([n for n in sh(b, "git", "ls-files").split() if "variant" in n]) == 2
