"""Reading git-annex branch files by path (no listing of the branch) and committing
changes computed from them: what is read is what git has, other writers' commits are
seen, and a branch moved between our read and our commit keeps both sides."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.init import init
from annexsync.annex.keys import Key
from annexsync.annex.location import (
    locations,
    locations_many,
    log_path,
    log_presence_many,
    now,
)
from annexsync.annex.logs import set_presence
from annexsync.annex.repo import AnnexRepo
from annexsync.testing.annexrepos import clone, git, make_repo

KEYS = [Key.parse(f"SHA256E-s{i}--{hashlib.sha256(b'%d' % i).hexdigest()}.txt")
        for i in range(300)]
OTHER = "11111111-2222-3333-4444-555555555555"


def new_repo(path: Path) -> AnnexRepo:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    repo = AnnexRepo.find(path)
    init(repo, "lookup test")
    return repo


def fresh(repo: AnnexRepo) -> AnnexBranch:
    """A branch object on a new repository object: nothing cached from earlier reads."""
    return AnnexBranch(AnnexRepo.find(repo.top))


def committed(top: Path, paths: Sequence[str]) -> dict[str, bytes]:
    """What git says each path holds on the git-annex branch (b"" if no such blob)."""
    out: dict[str, bytes] = {}
    for p in paths:
        proc = subprocess.run(["git", "cat-file", "-t", f"git-annex:{p}"], cwd=top,
                              capture_output=True, text=True)
        if proc.returncode != 0 or proc.stdout.strip() != "blob":
            out[p] = b""
        else:
            out[p] = subprocess.run(["git", "cat-file", "blob", f"git-annex:{p}"], cwd=top,
                                    capture_output=True, check=True).stdout
    return out


def present(uuid: str) -> Callable[[bytes], bytes | None]:
    return lambda old: set_presence(old, uuid, "1", now())


def test_reads_of_few_and_of_many_paths_are_what_git_has(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    b = AnnexBranch(repo)
    changes = {log_path(k): present(repo.uuid) for k in KEYS}
    changes["deep/er/than/usual.log"] = lambda old: b"deep\n"
    changes["top.log"] = lambda old: b"top\n"
    b.change_and_commit(changes)
    odd = ["uuid.log", "top.log", "deep/er/than/usual.log", "deep/er", "deep//er/than/usual.log",
           "top.log/below", "fff/fff/absent.log", log_path(KEYS[0]).rsplit("/", 1)[0] + "/x.log"]
    few = [log_path(k) for k in KEYS[:3]] + odd
    everything = [log_path(k) for k in KEYS] + odd
    truth = committed(repo.top, everything)
    assert truth["uuid.log"] and truth[log_path(KEYS[7])] and not truth["fff/fff/absent.log"]
    assert fresh(repo).read_many(few) == {p: truth[p] for p in few}
    assert fresh(repo).read_many(everything) == truth
    one = fresh(repo)
    assert [one.read(p) for p in odd] == [truth[p] for p in odd]


def test_reads_see_what_another_writer_committed(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "r")
    b = AnnexBranch(repo)
    assert locations_many(b, KEYS[:10]) == {k: set() for k in KEYS[:10]}
    log_presence_many(b, KEYS[:10], repo.uuid, True)
    # another process (its own repository object, nothing shared with ours)
    log_presence_many(fresh(repo), KEYS[5:15], OTHER, True)
    where = locations_many(b, KEYS[:15])
    assert where == {k: ({repo.uuid} if i < 5 else {repo.uuid, OTHER} if i < 10 else {OTHER})
                     for i, k in enumerate(KEYS[:15])}
    # and ours after that builds on theirs
    log_presence_many(b, KEYS[10:15], repo.uuid, True)
    assert all(locations(fresh(repo), k) == {repo.uuid, OTHER} for k in KEYS[5:15])


def test_branch_moved_between_read_and_commit_keeps_both(tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", "a")
    c = clone(a.top, tmp_path / "c", "the clone")
    log_presence_many(AnnexBranch(c), KEYS[:3], c.uuid, True)  # c's branch: a's + more
    b = AnnexBranch(a)
    assert locations_many(b, KEYS[:3]) == {k: set() for k in KEYS[:3]}
    moved: list[str] = []

    def change(old: bytes) -> bytes | None:
        if not moved:
            # Someone moves the branch without the journal lock (a fetch into it).
            git(a.top, "fetch", "-q", str(c.top), "refs/heads/git-annex:refs/heads/git-annex")
            moved.append(git(a.top, "rev-parse", "refs/heads/git-annex").strip())
        return set_presence(old, a.uuid, "1", now())

    tip = b.change_and_commit({log_path(k): change for k in KEYS[:3]})
    assert tip is not None and moved
    assert git(a.top, "merge-base", "--is-ancestor", moved[0], tip) == ""
    for k in KEYS[:3]:
        assert locations(fresh(a), k) == {a.uuid, c.uuid}
    assert b"the clone" in fresh(a).read("uuid.log")


def test_git_annex_journal_and_our_batch_commit_together(tmp_path: Path,
                                                          git_annex: str) -> None:
    files = {f"f{i}.txt": b"file %d\n" % i for i in range(5)}
    a = make_repo(tmp_path / "a", "a", files)
    out = json.loads("[" + ",".join(subprocess.run(
        [git_annex, "whereis", "--json"], cwd=a.top, capture_output=True, text=True,
        check=True).stdout.split("\n")[:-1]) + "]")
    keys = [Key.parse(r["key"]) for r in out]
    assert len(keys) == 5
    # git-annex leaves a change in the journal (not committed) ...
    subprocess.run(["git", "-c", "annex.alwayscommit=false", "annex", "setpresentkey",
                    str(keys[0]), OTHER, "1"], cwd=a.top, check=True, capture_output=True)
    assert any((a.git_dir / "annex" / "journal").iterdir())
    # ... and our batch for the same and other logs commits it with ours.
    b = AnnexBranch(a)
    log_presence_many(b, keys, "22222222-2222-3333-4444-555555555555", True)
    assert b.journal.is_empty()
    where = subprocess.run([git_annex, "whereis", "--json", "--key", str(keys[0])],
                           cwd=a.top, capture_output=True, text=True, check=True).stdout
    uuids = {w["uuid"] for w in json.loads(where)["whereis"]}
    assert {a.uuid, OTHER, "22222222-2222-3333-4444-555555555555"} <= uuids
    assert subprocess.run([git_annex, "fsck", "--fast"], cwd=a.top,
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("writer", ["ours", "theirs"])
def test_cached_reads_follow_commits(tmp_path: Path, writer: str) -> None:
    repo = new_repo(tmp_path / "r")
    b = AnnexBranch(repo)
    paths = [log_path(k) for k in KEYS[:50]]
    for round_ in range(3):
        b.read_many(paths)
        w = b if writer == "ours" else fresh(repo)
        w.change_and_commit({p: (lambda old, r=round_: old + b"line %d\n" % r) for p in paths})
        assert b.read_many(paths) == committed(repo.top, paths)
