"""Unlocked files shared between annexsync and real git-annex on one clone."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from unlockedkit import ANNEXSYNC, Sh, commit, make_sh, status

from annexsync.annex.backends import hash_file
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.init import init
from annexsync.annex.keys import pointer_content
from annexsync.annex.location import locations
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.unlocked import depopulate_unlocked, populate_unlocked

pytestmark = pytest.mark.interop


@pytest.fixture
def gx(env: dict[str, str], git_annex: str) -> Sh:
    """Run commands with git-annex on PATH (annexsync stays configured as the filter)."""
    e = dict(env)
    e["PATH"] = os.pathsep.join([os.path.dirname(git_annex), e["PATH"]])
    return make_sh(e)


def schema(db: Path) -> list[str]:
    c = sqlite3.connect(db)
    try:
        rows = c.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
        return sorted(r[0] for r in rows)
    finally:
        c.close()


def test_git_annex_accepts_what_annexsync_unlocked(repo: AnnexRepo, sh: Sh, gx: Sh,
                                                   tmp_path: Path) -> None:
    top = repo.top
    sh(top, "git", "config", "annex.largefiles", "largerthan=20b")
    (top / "a.bin").write_bytes(b"a content " * 300)
    (top / "b.bin").write_bytes(b"b content " * 300)
    (top / "small.txt").write_text("tiny\n")
    sh(top, "git", "add", "a.bin", "small.txt")          # through annexsync's filter
    sh(top, ANNEXSYNC, "add", "--unlocked", "b.bin")     # annexsync add --unlocked
    commit(sh, top)
    ka, kb = hash_file(top / "a.bin")[0], hash_file(top / "b.bin")[0]
    # the keys database is git-annex's, schema and all
    other = tmp_path / "ga"
    other.mkdir()
    gx(other, "git", "init", "-q")
    gx(other, "git", "annex", "init", "-q")
    (other / "f").write_bytes(b"x" * 100)
    gx(other, "git", "-c", "annex.addunlocked=true", "annex", "add", "-q", "f")
    assert schema(repo.annex_path("keysdb", "db")) == schema(other / ".git/annex/keysdb/db")

    fsck = gx(top, "git", "annex", "fsck", "--json")
    recs = [json.loads(line) for line in fsck.splitlines()]
    assert {r["file"] for r in recs} == {"a.bin", "b.bin"} and all(r["success"] for r in recs)
    assert gx(top, "git", "annex", "status") == ""
    assert set(gx(top, "git", "annex", "find", "--unlocked").split()) == {"a.bin", "b.bin"}
    # git-annex finds the unlocked files through the keys database we kept
    gx(top, "git", "annex", "drop", "--force", "a.bin")
    assert (top / "a.bin").read_bytes() == pointer_content(ka)
    assert status(gx, top) == ""
    # content comes back (as a download would put it): annexsync fills the file
    saved = tmp_path / "a.saved"
    saved.write_bytes(b"a content " * 300)
    os.chmod(saved, 0o444)
    ObjectStore(repo.annex_dir).move_in(ka, saved)
    assert populate_unlocked(AnnexRepo.find(top), ka) == ["a.bin"]
    assert (top / "a.bin").read_bytes() == b"a content " * 300
    assert status(sh, top) == ""
    gx(top, "git", "annex", "fsck", "a.bin")  # logs it present again
    gx(top, "git", "annex", "lock", "b.bin")
    assert (top / "b.bin").is_symlink() and (top / "b.bin").read_bytes() == b"b content " * 300
    gx(top, "git", "annex", "unlock", "b.bin")  # git-annex restages through our filter
    assert status(sh, top) == ""
    assert locations(AnnexBranch(AnnexRepo.find(top)), kb) == {repo.uuid}


def test_annexsync_handles_files_git_annex_unlocked(tmp_path: Path, sh: Sh, gx: Sh) -> None:
    top = tmp_path / "r"
    top.mkdir()
    gx(top, "git", "init", "-q", "-b", "main")
    gx(top, "git", "annex", "init", "-q", "by git-annex")
    (top / "p.jpg").write_bytes(b"\xff\xd8 picture " * 500)
    (top / "q.jpg").write_bytes(b"\xff\xd8 other " * 500)
    gx(top, "git", "annex", "add", "-q", "p.jpg", "q.jpg")
    commit(gx, top, "added")
    gx(top, "git", "annex", "unlock", "p.jpg", "q.jpg")
    commit(gx, top, "unlocked")
    repo = AnnexRepo.find(top)
    res = init(repo)  # annexsync takes over the filter and git-annex's stock hooks
    assert res.warnings == []
    assert "annexsync" in sh(top, "git", "config", "filter.annex.process")
    assert status(sh, top) == ""
    out = sh(top, ANNEXSYNC, "fsck")
    assert out == "fsck p.jpg (checksum...) ok\nfsck q.jpg (checksum...) ok\n"
    # edit and commit -a through annexsync's filter (no git-annex on PATH)
    (top / "p.jpg").write_bytes(b"\xff\xd8 edited " * 700)
    sh(top, "git", "commit", "-q", "-a", "-m", "edited")
    kp = hash_file(top / "p.jpg")[0]
    assert sh(top, "git", "cat-file", "-p", ":p.jpg").encode() == pointer_content(kp)
    assert status(sh, top) == ""
    sh(top, ANNEXSYNC, "lock", "q.jpg")
    assert (top / "q.jpg").is_symlink()
    sh(top, ANNEXSYNC, "unlock", "q.jpg")
    assert not (top / "q.jpg").is_symlink()
    assert status(sh, top) == ""  # back to what is committed
    # drop (the transfer engineer's Dropper, forced) then empty the work-tree file
    from annexsync.annex.drop import Dropper
    from annexsync.annex.repos import RepoMap
    from annexsync.transfers.locationlog import LocationRecorder

    kq = hash_file(top / "q.jpg")[0]
    repo = AnnexRepo.find(top)
    branch = AnnexBranch(repo)
    rec = LocationRecorder(repo)
    d = Dropper(repo, branch, [], RepoMap.load(repo, branch), rec, force=True)
    assert d.drop_here(kq, ["q.jpg"], {repo.uuid}).dropped
    d.close()
    rec.flush()
    # the drop made the unlocked file a pointer again, as git-annex's does
    assert (top / "q.jpg").read_bytes() == pointer_content(kq)
    assert depopulate_unlocked(repo, kq).emptied == []  # nothing left to do
    assert status(sh, top) == ""
    # git-annex agrees with the state we left
    recs = {r["file"]: r for r in map(json.loads, gx(
        top, "git", "annex", "fsck", "--json", check=False).splitlines())}
    assert recs["p.jpg"]["success"] and not recs["q.jpg"]["success"]
    assert gx(top, "git", "annex", "find", "--in", "here") == "p.jpg\n"


def test_depopulate_leaves_modified_files_alone(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    (top / "m.bin").write_bytes(b"m" * 400)
    sh(top, ANNEXSYNC, "add", "--unlocked", "m.bin")
    commit(sh, top)
    k = hash_file(top / "m.bin")[0]
    (top / "m.bin").write_bytes(b"n" * 400)  # same size, new content, not staged
    res = depopulate_unlocked(AnnexRepo.find(top), k)
    assert res.modified == ["m.bin"] and res.emptied == []
    assert (top / "m.bin").read_bytes() == b"n" * 400


def test_fsck_moves_corrupt_object_like_git_annex(repo: AnnexRepo, sh: Sh, gx: Sh) -> None:
    top = repo.top
    (top / "c.bin").write_bytes(b"c" * 1000)
    sh(top, ANNEXSYNC, "add", "c.bin")
    commit(sh, top)
    k = hash_file(top / "c.bin")[0]
    obj = ObjectStore(repo.annex_dir).find(k)
    assert obj is not None
    os.chmod(obj, 0o644)
    obj.write_bytes(b"d" * 1000)  # same size: only a checksum finds it
    assert sh(top, ANNEXSYNC, "fsck", "--fast") == "fsck c.bin ok\n"
    out = sh(top, ANNEXSYNC, "fsck", check=False)
    assert out.startswith("fsck c.bin (checksum...) \n  c.bin: Bad file content; moved to "
                          f".git/annex/bad/{k.key_file}\n")
    assert "** No known copies exist of c.bin" in out and out.endswith("failed\n")
    assert (repo.annex_path("bad") / k.key_file).read_bytes() == b"d" * 1000
    assert ObjectStore(repo.annex_dir).find(k) is None
    # git-annex sees the same state: content gone, location log fixed
    ga = gx(top, "git", "annex", "fsck", "--json", check=False)
    rec = json.loads(ga.splitlines()[0])
    assert not rec["success"] and "fixing location log" not in rec.get("note", "")
