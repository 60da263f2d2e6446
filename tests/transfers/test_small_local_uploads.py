"""``copy --to`` a clone on this machine: small keys go in batches, safely.

Each small key is verified, written to the clone's tmp directory, and a batch is
made durable (one syncfs) before it is moved into the clone's store, synced again
and recorded. These tests check what the clone and both location logs end up with,
what a crash between the two steps leaves, and that a planted symlink in the clone
sends nothing outside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import locations
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.testing.annexrepos import clone, git, make_repo, run_cli
from annexsync.testing.gitenv import git_annex_binary

FILES = {f"d{i % 5}/f{i}.txt": f"small file {i}\n".encode() for i in range(120)}


@pytest.fixture
def pair(tmp_path: Path) -> tuple[AnnexRepo, AnnexRepo]:
    src = make_repo(tmp_path / "src", "src", FILES)
    dst = clone(src.top, tmp_path / "dst", "dst")
    git(src.top, "remote", "add", "dst", str(dst.top))
    return src, dst


def key_of(repo: AnnexRepo, name: str) -> Key:
    return Key.parse(os.path.basename(os.readlink(repo.top / name)))


def tmp_files(repo: AnnexRepo) -> list[str]:
    d = repo.annex_dir / "tmp"
    return sorted(os.listdir(d)) if d.exists() else []


def test_copy_to_a_local_clone_stores_verifies_and_logs_every_key(
        pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    src, dst = pair
    code, out, err = run_cli(src.top, "copy", "--to", "dst", "--json")
    assert code == 0, err
    assert out.count('"success": true') == len(FILES)
    store = ObjectStore(dst.annex_dir)
    ours = AnnexBranch(AnnexRepo.find(src.top))
    theirs = AnnexBranch(AnnexRepo.find(dst.top))
    for name, data in FILES.items():
        key = key_of(src, name)
        obj = store.find(key)
        assert obj is not None and obj.read_bytes() == data
        assert not os.stat(obj).st_mode & 0o222  # read-only, as git-annex leaves it
        assert dst.uuid in locations(ours, key)
        assert dst.uuid in locations(theirs, key)  # the clone's own log says so too
    assert tmp_files(dst) == []


def test_git_annex_fsck_accepts_the_clone(pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    ga = git_annex_binary()
    if ga is None:
        pytest.skip("git-annex not installed")
    src, dst = pair
    assert run_cli(src.top, "copy", "--to", "dst", "--quiet")[0] == 0
    p = subprocess.run([ga, "fsck", "--quiet"], cwd=dst.top, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_crash_before_the_commit_leaves_only_temporary_files(
        pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    src, dst = pair
    names = sorted(FILES)[:10]
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from annexsync.annex.repo import AnnexRepo
        from annexsync.remotes.base import RemoteInfo
        from annexsync.remotes.gitlocal import GitLocalRemote
        from annexsync.annex.keys import Key
        from annexsync.transfers.runner import Transfers
        src = AnnexRepo.find(Path({str(src.top)!r}))
        r = GitLocalRemote(RemoteInfo(name="dst", uuid={dst.uuid!r}, kind="git",
                                      supports_locking=True), Path({str(dst.top)!r}))
        tr = Transfers(src)
        for name in {names!r}:
            key = Key.parse(os.path.basename(os.readlink(src.top / name)))
            assert tr.upload(r, key, name, staged_ok=True).extra.get("staged")
        os._exit(0)  # killed before the batch's commit
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=src.top)
    assert len(tmp_files(dst)) == len(names)  # garbage a later sweep may take
    store = ObjectStore(dst.annex_dir)
    ours = AnnexBranch(AnnexRepo.find(src.top))
    for name in names:
        key = key_of(src, name)
        assert not store.has(key)  # nothing half-durable in the store
        assert dst.uuid not in locations(ours, key)  # and no claim that it is there
    # the next copy does it all
    assert run_cli(src.top, "copy", "--to", "dst", "--quiet", *names)[0] == 0
    assert all(store.has(key_of(src, n)) for n in names)
    # the clone removes the crashed sender's temp files once they are an hour old
    # (its pid is gone), the next time it fetches small keys itself
    left = tmp_files(dst)
    assert len(left) == len(names)
    old = time.time() - 2 * 3600
    for name in left:
        os.utime(dst.annex_dir / "tmp" / name, (old, old))
    assert sorted(FILES)[-1] not in names
    assert run_cli(dst.top, "get", "--quiet", sorted(FILES)[-1])[0] == 0
    assert tmp_files(dst) == []


@pytest.mark.parametrize("planted", ["objects", "tmp"])
def test_a_planted_symlink_in_the_clone_sends_nothing_outside_it(
        pair: tuple[AnnexRepo, AnnexRepo], tmp_path: Path, planted: str) -> None:
    src, dst = pair
    outside = tmp_path / "outside"
    outside.mkdir()
    target = dst.annex_dir / planted
    if target.exists():
        os.rename(target, tmp_path / f"{planted}.old")
    os.symlink(outside, target)
    code, out, err = run_cli(src.top, "copy", "--to", "dst", "--json", "d1")
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    d1 = sorted(n for n in FILES if n.startswith("d1/"))
    assert sorted(r["file"] for r in records) == d1  # one record per file ...
    assert not any(r["success"] for r in records)  # ... never "ok" and then "failed"
    assert list(outside.rglob("*")) == []
    ours = AnnexBranch(AnnexRepo.find(src.top))
    for name in d1:
        assert dst.uuid not in locations(ours, key_of(src, name))
    if planted == "objects":
        assert tmp_files(dst) == []  # what was staged is taken back


def test_content_is_durable_before_it_is_moved_in_and_moved_in_before_it_is_logged(
        pair: tuple[AnnexRepo, AnnexRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    from annexsync.remotes.gitlocal import GitLocalRemote
    from annexsync.transfers import runner

    src, dst = pair
    calls: list[str] = []
    real_syncfs, real_commit = runner._syncfs, GitLocalRemote.commit_object
    real_record = runner.Transfers.record_remote

    def syncfs(path: object) -> None:
        if str(path).startswith(str(dst.top)):
            calls.append("syncfs")
        real_syncfs(path)  # type: ignore[arg-type]

    def commit(self: GitLocalRemote, key: Key, name: str) -> None:
        assert calls and calls[-1] in ("syncfs", "move")  # the staged data is durable
        calls.append("move")
        real_commit(self, key, name)

    def record(self: runner.Transfers, remote: object, key: Key, present: bool) -> None:
        calls.append("record")
        real_record(self, remote, key, present)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "_syncfs", syncfs)
    monkeypatch.setattr(GitLocalRemote, "commit_object", commit)
    monkeypatch.setattr(runner.Transfers, "record_remote", record)
    assert run_cli(src.top, "copy", "--to", "dst", "--quiet", "d3")[0] == 0
    n = sum(1 for name in FILES if name.startswith("d3/"))
    assert calls == ["syncfs"] + ["move"] * n + ["syncfs"] + ["record"] * n


def test_move_to_a_local_clone_drops_here_only_what_the_clone_has_durably(
        pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    src, dst = pair
    names = sorted(n for n in FILES if n.startswith("d4/"))
    code, out, err = run_cli(src.top, "move", "--to", "dst", "--json", "d4")
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert sorted(r["file"] for r in records) == names  # one record per file
    assert all(r["success"] for r in records)
    here, there = ObjectStore(src.annex_dir), ObjectStore(dst.annex_dir)
    ours = AnnexBranch(AnnexRepo.find(src.top))
    for name in names:
        key = key_of(src, name)
        assert not here.has(key)
        found = there.find(key)
        assert found is not None and found.read_bytes() == FILES[name]
        assert locations(ours, key) >= {dst.uuid} and src.uuid not in locations(ours, key)
    assert tmp_files(dst) == []


def test_move_keeps_what_the_clone_failed_to_store(
        pair: tuple[AnnexRepo, AnnexRepo], tmp_path: Path) -> None:
    src, dst = pair
    objects = dst.annex_dir / "objects"
    if objects.exists():
        os.rename(objects, tmp_path / "objects.old")
    os.symlink(tmp_path, objects)  # the commit into the clone's store is refused
    code, out, _ = run_cli(src.top, "move", "--to", "dst", "--json", "d4")
    assert code == 1
    records = [json.loads(line) for line in out.splitlines()]
    assert not any(r["success"] for r in records)
    here = ObjectStore(src.annex_dir)
    for name in FILES:
        if name.startswith("d4/"):
            assert here.find(key_of(src, name)).read_bytes() == FILES[name]  # type: ignore[union-attr]
