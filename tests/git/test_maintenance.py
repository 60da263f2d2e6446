"""git's automatic maintenance after annexsync wrote objects with plumbing.

git packs loose objects after its own commit/merge/fetch/receive-pack; annexsync's
plumbing does not, so sync starts it where git's thresholds say it is due: in this
repository and in a clone it pushed into without receive-pack (whose hooks do not
run).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from annexsync.git.config import GitConfig
from annexsync.git.maintenance import AutoGc, gc_due, maintenance_args
from annexsync.git.runner import Git
from annexsync.testing.annexrepos import run_cli


def sh(cwd: Path, *args: str) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    assert p.returncode == 0, f"{args}: {p.stdout}{p.stderr}"
    return p.stdout


def config(**values: str) -> GitConfig:
    return GitConfig({k.replace("_", ".").lower(): [v] for k, v in values.items()})


def fake_objects(git_dir: Path, loose17: int = 0, packs: int = 0, kept: int = 0) -> None:
    d = git_dir / "objects" / "17"
    d.mkdir(parents=True, exist_ok=True)
    for i in range(loose17):
        (d / f"{i:038x}").touch()
    (d / "tmp_obj_xyz").touch()  # not an object name: not counted
    p = git_dir / "objects" / "pack"
    p.mkdir(parents=True, exist_ok=True)
    for i in range(packs + kept):
        (p / f"pack-{i:040x}.idx").touch()
        if i >= packs:
            (p / f"pack-{i:040x}.keep").touch()


@pytest.mark.parametrize(("loose", "gc_auto", "due"), [
    (27, None, False),   # 6700 objects: 27 expected in objects/17 -> not more than 27
    (28, None, True),
    (2, "256", True),    # (256 + 255) // 256 = 1
    (1, "256", False),
    (500, "0", False),   # gc.auto=0: never
])
def test_loose_object_threshold_is_gits(tmp_path: Path, loose: int, gc_auto: str | None,
                                        due: bool) -> None:
    fake_objects(tmp_path, loose17=loose)
    cfg = config(**({"gc_auto": gc_auto} if gc_auto is not None else {}))
    assert gc_due(tmp_path, cfg) is due


def test_pack_limit_counts_packs_without_keep(tmp_path: Path) -> None:
    fake_objects(tmp_path / "kept", packs=50, kept=10)
    assert not gc_due(tmp_path / "kept", config())
    fake_objects(tmp_path / "many", packs=51)
    assert gc_due(tmp_path / "many", config())
    assert not gc_due(tmp_path / "many", config(gc_autopacklimit="0"))
    assert not gc_due(tmp_path / "many", config(maintenance_auto="false"))


def test_checks_are_rate_limited_and_a_started_repository_is_left_for_an_hour(
        tmp_path: Path) -> None:
    sh(tmp_path, "git", "init", "-q")
    git = Git(tmp_path / ".git", tmp_path)
    now = [100.0]
    auto = AutoGc(monotonic=lambda: now[0], interval=30, after_start=3600)
    assert not auto.check(git, config())  # nothing to do
    fake_objects(git.git_dir, loose17=40)  # (fakes: gc cannot remove them)
    now[0] += 10
    assert not auto.check(git, config())  # looked 10 s ago
    now[0] += 21
    assert auto.check(git, config())
    now[0] += 31
    assert not auto.check(git, config())  # started a minute ago: still too many
    now[0] += 3600
    assert auto.check(git, config())


def test_foreign_clones_run_nothing_of_their_own(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from annexsync.git import maintenance

    git = Git(tmp_path / ".git", tmp_path)
    monkeypatch.setitem(maintenance._git_versions, git.base_args()[0], (2, 39, 5))
    assert maintenance_args(git, config(), foreign=False) == [
        "maintenance", "run", "--auto", "--quiet"]
    assert maintenance_args(git, config(), foreign=True) == [
        "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
        "maintenance", "run", "--auto", "--quiet"]
    hook = config(gc_recentobjectshook="echo")
    assert maintenance_args(git, hook, foreign=True) is None
    assert maintenance_args(git, hook, foreign=False) is not None  # ours: git runs it


@pytest.mark.parametrize(("values", "flag"), [
    ({}, "--detach"),
    ({"gc_autodetach": "false"}, "--no-detach"),
    ({"gc_autodetach": "false", "maintenance_autodetach": "true"}, "--detach"),
    ({"maintenance_autodetach": "false"}, "--no-detach"),
])
def test_newer_git_is_told_whether_to_detach_as_its_commands_tell_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, values: dict[str, str],
        flag: str) -> None:
    from annexsync.git import maintenance

    git = Git(tmp_path / ".git", tmp_path)
    monkeypatch.setitem(maintenance._git_versions, git.base_args()[0], (2, 47, 0))
    args = maintenance_args(git, config(**values), foreign=False)
    assert args is not None and args[-1] == flag


def test_git_version_is_read_from_git(tmp_path: Path) -> None:
    from annexsync.git.maintenance import git_version

    v = git_version(Git(tmp_path / ".git", tmp_path))
    out = sh(tmp_path, "git", "version")
    assert len(v) >= 2 and out.startswith(f"git version {v[0]}.{v[1]}")


def test_gc_auto_is_read_with_gits_suffixes(tmp_path: Path) -> None:
    fake_objects(tmp_path, loose17=5)
    # 1k = 1024: (1024 + 255) // 256 = 4, so 5 in 17/ are too many (with the suffix
    # misread as no number, the default 6700 would allow 27)
    assert gc_due(tmp_path, config(gc_auto="1k"))
    assert gc_due(tmp_path, config(gc_auto="1K"))
    assert not gc_due(tmp_path, config(gc_auto="2m"))
    assert config(gc_auto="2m").get_int("gc.auto", 0) == 2 << 20
    assert config(gc_auto="x").get_int("gc.auto", 7) == 7


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def contents_in_17(n: int) -> list[bytes]:
    """``n`` small file contents whose git blob ids start with 17."""
    found, i = [], 0
    while len(found) < n:
        data = f"maintenance test {i}\n".encode()
        if blob_id(data).startswith("17"):
            found.append(data)
        i += 1
    return found


def loose(repo: Path, oid: str) -> bool:
    return (repo / ".git" / "objects" / oid[:2] / oid[2:]).exists()


def test_sync_packs_the_loose_objects_it_left_here_and_in_the_clone(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    assert run_cli(a, "init", "A")[0] == 0
    sh(a, "git", "config", "annex.largefiles", "nothing")  # small files go to git
    (a / "start.txt").write_text("start\n")
    assert run_cli(a, "sync", "--quiet")[0] == 0
    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    assert run_cli(b, "init", "B")[0] == 0
    sh(a, "git", "remote", "add", "b", str(b))
    assert run_cli(a, "sync", "--quiet")[0] == 0
    for repo in (a, b):
        sh(repo, "git", "config", "gc.auto", "256")  # due at 2 loose objects in 17/
    marker = tmp_path / "hook-ran"
    hook = b / ".git" / "hooks" / "pre-auto-gc"
    hook.write_text(f"#!/bin/sh\ntouch '{marker}'\n")
    hook.chmod(0o755)

    datas = contents_in_17(3)
    for i, data in enumerate(datas):
        (a / f"f{i}.txt").write_bytes(data)
    code, out, err = run_cli(a, "sync", "--quiet")
    assert code == 0, out + err

    for repo in (a, b):
        for data in datas:
            oid = blob_id(data)
            # present (the clone got it by the direct push) and no longer loose
            assert sh(repo, "git", "cat-file", "-t", oid).strip() == "blob"
            assert not loose(repo, oid), f"{oid} still loose in {repo.name}"
    assert not marker.exists()  # the clone's hook is not ours to run
    sh(b, "git", "fsck", "--connectivity-only", "--no-dangling")


def test_no_maintenance_when_git_is_told_not_to(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    assert run_cli(a, "init", "A")[0] == 0
    sh(a, "git", "config", "annex.largefiles", "nothing")
    sh(a, "git", "config", "gc.auto", "256")
    sh(a, "git", "config", "maintenance.auto", "false")
    datas = contents_in_17(3)
    for i, data in enumerate(datas):
        (a / f"f{i}.txt").write_bytes(data)
    assert run_cli(a, "sync", "--quiet")[0] == 0
    assert all(loose(a, blob_id(d)) for d in datas)
    assert not os.listdir(a / ".git" / "objects" / "pack")
