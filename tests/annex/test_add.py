"""add's safety: a file that changes while hashed, or a failure mid-add, loses nothing."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

import annexsync.annex.add as addmod
from annexsync.annex.add import Adder
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.init import init
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo


@pytest.fixture
def repo(tmp_path: Path) -> AnnexRepo:
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    r = AnnexRepo.find(tmp_path)
    init(r, "t")
    return r


def stored_keys(repo: AnnexRepo) -> list[str]:
    return [str(k) for k in ObjectStore(repo.annex_dir).iter_keys()]


@pytest.mark.parametrize("others", [0, 20])  # serial, and in the worker threads
def test_file_modified_while_hashing_is_not_added(repo: AnnexRepo, others: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    f = repo.top / "growing.log"
    f.write_bytes(b"first part\n")
    for i in range(others):
        (repo.top / f"other{i}.txt").write_bytes(b"other %d\n" % i)
    real = addmod.hash_open_file

    def hash_then_append(fd: int, *a: object, **kw: object):  # type: ignore[no-untyped-def]
        result = real(fd, *a, **kw)  # type: ignore[arg-type]
        if os.readlink(f"/proc/self/fd/{fd}") == str(f):
            with open(f, "ab") as fh:
                fh.write(b"more\n")
        return result

    monkeypatch.setattr(addmod, "hash_open_file", hash_then_append)
    results = {r.file: r for r in Adder(repo, AnnexBranch(repo)).add(["."])}
    assert results["growing.log"].success is False
    assert "changed while it was being added" in (results["growing.log"].error or "")
    assert not f.is_symlink() and f.read_bytes() == b"first part\nmore\n"
    assert all(r.success for name, r in results.items() if name != "growing.log")
    assert len(stored_keys(repo)) == others


def test_failure_after_moving_into_store_puts_file_back(repo: AnnexRepo,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    f = repo.top / "photo.jpg"
    f.write_bytes(b"\xff\xd8 precious")
    os.chmod(f, 0o640)

    def no_space(*a: object, **kw: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(addmod.os, "symlink", no_space)
    results = list(Adder(repo, AnnexBranch(repo)).add(["."]))
    assert results[0].success is False and "No space left" in (results[0].error or "")
    assert not f.is_symlink() and f.read_bytes() == b"\xff\xd8 precious"
    assert (os.stat(f).st_mode & 0o777) == 0o640
    assert stored_keys(repo) == []
    out = subprocess.run(["git", "ls-files"], cwd=repo.top, capture_output=True, text=True)
    assert out.stdout == ""


def test_duplicate_content_is_stored_once(repo: AnnexRepo) -> None:
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        p = repo.top / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"same bytes")
    results = list(Adder(repo, AnnexBranch(repo)).add(["."]))
    assert all(r.success for r in results)
    assert len({str(r.key) for r in results}) == 1
    assert len(stored_keys(repo)) == 1
    for name in ("a.txt", "b.txt", "sub/c.txt"):
        assert (repo.top / name).read_bytes() == b"same bytes"


def test_executable_bit_kept_in_object(repo: AnnexRepo) -> None:
    f = repo.top / "run.sh"
    f.write_bytes(b"#!/bin/sh\n")
    os.chmod(f, 0o755)
    list(Adder(repo, AnnexBranch(repo)).add(["."]))
    assert os.access(f, os.X_OK)
