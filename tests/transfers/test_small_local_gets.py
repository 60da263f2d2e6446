"""Getting many small keys from a local clone: the batched fast path, and its limits."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from transferkit import download_running_elsewhere

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import locations
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.base import RemoteInfo
from annexsync.remotes.gitlocal import GitLocalRemote
from annexsync.testing.annexrepos import clone, make_repo, run_cli
from annexsync.transfers import runner
from annexsync.transfers.info import Direction, Transfer, failed_transfers
from annexsync.transfers.runner import Transfers

FILES = {f"d{i % 7}/f{i}.txt": f"content of file {i}\n".encode() for i in range(150)}


def keys_of(repo: AnnexRepo) -> dict[str, Key]:
    return {name: Key.parse(os.path.basename(os.readlink(repo.top / name))) for name in FILES}


def remote_for(other: AnnexRepo) -> GitLocalRemote:
    return GitLocalRemote(RemoteInfo(name="origin", uuid=other.uuid, kind="git",
                                     supports_locking=True), other.top)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[AnnexRepo, AnnexRepo]:
    src = make_repo(tmp_path / "src", "src", FILES)
    return src, clone(src.top, tmp_path / "dst", "dst")


def leftovers(repo: AnnexRepo) -> list[str]:
    """Files a finished get must not leave behind: temp files, locks, transfer info."""
    out = []
    for sub in ("tmp", "transfer"):
        for root, _dirs, files in os.walk(repo.annex_dir / sub):
            out += [os.path.join(root, f) for f in files]
    return out


def test_many_small_files_arrive_verified_read_only_and_logged(
        pair: tuple[AnnexRepo, AnnexRepo], monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = pair
    monkeypatch.setattr(runner, "_BATCH_FILES", 64)  # several batches, threaded moves
    code, out, err = run_cli(dst.top, "get")
    assert code == 0, err
    assert out.count(" ok\n") == len(FILES)
    store = ObjectStore(dst.annex_dir)
    branch = AnnexBranch(AnnexRepo.find(dst.top))
    for name, key in keys_of(dst).items():
        obj = store.find(key)
        assert obj is not None and obj.read_bytes() == FILES[name]
        assert stat.S_IMODE(obj.stat().st_mode) == 0o444
        assert stat.S_IMODE(obj.parent.stat().st_mode) == 0o555
        assert (dst.top / name).read_bytes() == FILES[name]
        assert dst.uuid in locations(branch, key)
    assert leftovers(dst) == [] and leftovers(src) == []


def test_a_transfer_running_elsewhere_is_respected(pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    src, dst = pair
    name = "d1/f1.txt"
    key = keys_of(dst)[name]
    t = Transfer(Direction.DOWNLOAD, src.uuid, key)
    with download_running_elsewhere(dst.annex_dir, src.uuid, key):
        with Transfers(dst) as tr:
            res = tr.download(remote_for(src), key, name)
        assert not res.success
        assert res.error is not None and "transfer already in progress" in res.error
        assert not ObjectStore(dst.annex_dir).has(key)
        assert t.lock_path(dst.annex_dir).exists()  # theirs, untouched
    with Transfers(dst) as tr:
        assert tr.download(remote_for(src), key, name).success
    assert ObjectStore(dst.annex_dir).has(key)


def test_corrupt_small_content_is_refused_and_recorded_as_failed(
        pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    src, dst = pair
    name = "d2/f2.txt"
    key = keys_of(dst)[name]
    obj = ObjectStore(src.annex_dir).find(key)
    assert obj is not None
    os.chmod(obj.parent, 0o755)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"X" * len(FILES[name]))  # same size, wrong bytes
    with Transfers(dst) as tr:
        res = tr.download(remote_for(src), key, name)
        other = tr.download(remote_for(src), keys_of(dst)["d3/f3.txt"], "d3/f3.txt")
    assert not res.success and res.error == "verification of content failed"
    assert other.success
    assert not ObjectStore(dst.annex_dir).has(key)
    assert [t.key for t, _ in failed_transfers(dst.annex_dir)] == [key]
    assert os.listdir(dst.annex_dir / "tmp") == []


def test_temp_files_of_a_crashed_get_are_swept_and_the_get_completes(
        pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    src, dst = pair
    tmp = dst.annex_dir / "tmp"
    tmp.mkdir(exist_ok=True)
    # A dead process's staged file (never moved in), and one of a live process.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp / f"annexsync.{dead}.0"
    stale.write_bytes(b"partial")
    os.utime(stale, (1, 1))
    alive = tmp / f"annexsync.{os.getppid()}.0"
    alive.write_bytes(b"someone else's")
    os.utime(alive, (1, 1))
    code, _out, err = run_cli(dst.top, "get")
    assert code == 0, err
    assert sorted(os.listdir(tmp)) == [alive.name]
    store = ObjectStore(dst.annex_dir)
    assert all(store.has(k) for k in keys_of(dst).values())


def test_git_annex_fsck_accepts_a_small_file_get(pair: tuple[AnnexRepo, AnnexRepo],
                                                  git_annex: str) -> None:
    _src, dst = pair
    code, _out, err = run_cli(dst.top, "get")
    assert code == 0, err
    p = subprocess.run([git_annex, "fsck", "--quiet"], cwd=dst.top, capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([git_annex, "find", "--in", "here"], cwd=dst.top, capture_output=True,
                       text=True, check=True)
    assert sorted(p.stdout.split()) == sorted(FILES)


def test_a_clone_without_an_object_directory_yet(pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    _src, dst = pair
    objects = dst.annex_dir / "objects"
    if objects.exists():
        objects.rmdir()  # as git-annex init leaves a clone: no objects/ until content comes
    code, _out, err = run_cli(dst.top, "get")
    assert code == 0, err
    store = ObjectStore(dst.annex_dir)
    assert all(store.has(k) for k in keys_of(dst).values())
