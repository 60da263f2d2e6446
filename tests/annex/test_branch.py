"""The git-annex branch: journal, commit, union merge — and git-annex reading it."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from annexsync.annex.branch import REF, AnnexBranch
from annexsync.annex.init import init
from annexsync.annex.keys import Key
from annexsync.annex.location import locations, log_presence
from annexsync.annex.repo import AnnexRepo
from annexsync.git.refs import ls_tree


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> AnnexRepo:
    sh(tmp_path, "git", "init", "-q", "-b", "main")
    r = AnnexRepo.find(tmp_path)
    init(r, "test repo")
    return r


KEY = Key.parse("SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt")


def test_init_creates_branch_and_uuid_log(repo: AnnexRepo) -> None:
    b = AnnexBranch(repo)
    assert b.exists()
    assert f"{repo.uuid} test repo timestamp=".encode() in b.read("uuid.log")
    # init again keeps the uuid and does not add commits
    tip = b.tip()
    again = init(AnnexRepo.find(repo.top))
    assert again.uuid == repo.uuid and not again.created
    assert b.tip() == tip


def test_change_is_journalled_until_commit(repo: AnnexRepo) -> None:
    b = AnnexBranch(repo)
    tip = b.tip()
    assert log_presence(b, KEY, repo.uuid, True)
    assert b.tip() == tip  # only in the journal
    assert locations(b, KEY) == {repo.uuid}
    assert not log_presence(b, KEY, repo.uuid, True)  # no churn
    new = b.commit()
    assert new is not None and b.tip() == new
    assert b.journal.is_empty()
    assert locations(AnnexBranch(repo), KEY) == {repo.uuid}
    msg = sh(repo.top, "git", "cat-file", "commit", new).split("\n\n", 1)[1]
    assert msg == "update"


def test_concurrent_commits_lose_nothing(repo: AnnexRepo) -> None:
    keys = [Key.parse(f"SHA256E-s{i}--{i:064x}") for i in range(1, 41)]

    def worker(chunk: list[Key]) -> None:
        r = AnnexRepo.find(repo.top)
        b = AnnexBranch(r)
        for k in chunk:
            log_presence(b, k, r.uuid, True)
            b.commit()
        r.close()

    threads = [threading.Thread(target=worker, args=(keys[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b = AnnexBranch(repo)
    assert all(locations(b, k) == {repo.uuid} for k in keys)


def test_union_merge_of_diverged_branches(tmp_path: Path) -> None:
    sh(tmp_path, "git", "init", "-q", "-b", "main", "a")
    a = AnnexRepo.find(tmp_path / "a")
    init(a, "A")
    sh(tmp_path, "git", "clone", "-q", str(tmp_path / "a"), "b")
    b = AnnexRepo.find(tmp_path / "b")
    init(b, "B")
    ba, bb = AnnexBranch(a), AnnexBranch(b)
    log_presence(ba, KEY, a.uuid, True)
    ba.commit()
    log_presence(bb, KEY, b.uuid, True)
    bb.commit()
    sh(b.top, "git", "fetch", "-q", "origin")
    merged = bb.merge_siblings()
    assert merged is not None
    assert locations(bb, KEY) == {a.uuid, b.uuid}
    uuids = bb.read("uuid.log").decode()
    assert "A timestamp" in uuids and "B timestamp" in uuids
    parents = sh(b.top, "git", "rev-list", "--parents", "-n1", REF).split()
    assert len(parents) == 3
    # merging again is a no-op; deletions never propagate
    assert bb.merge_siblings() is None
    assert {e.path for e in ls_tree(b.git, REF)} >= {"uuid.log"}


@pytest.mark.interop
def test_git_annex_reads_our_branch_and_we_read_its(repo: AnnexRepo, git_annex: str) -> None:
    b = AnnexBranch(repo)
    log_presence(b, KEY, repo.uuid, True)
    b.commit()
    out = sh(repo.top, git_annex, "info", "--json")
    info = json.loads(out)
    descs = [r["description"] for r in info["semitrusted repositories"]]
    assert "test repo" in descs
    # git-annex writes into the journal/branch; we see it
    sh(repo.top, git_annex, "describe", "here", "renamed by git-annex")
    assert b"renamed by git-annex" in AnnexBranch(repo).read("uuid.log")
    sh(repo.top, git_annex, "numcopies", "3")
    assert b" 3\n" in AnnexBranch(repo).read("numcopies.log")
