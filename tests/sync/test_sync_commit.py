"""sync's commit step: the commit is exactly what ``write-tree`` + ``commit-tree`` make.

When nothing else was staged, sync builds its commit from HEAD plus what it staged
(one ``fast-import``) instead of from the whole index; these tests change files every
way that matters to a tree (new, modified, deleted, a file replacing a directory and
the reverse, modes, odd names, unlocked files, files kept in git) and check that the
committed tree is the index's and that the commit's author and committer are git's.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from synckit import ok, replace, sh

from annexsync.sync.gitsync import GitSync
from annexsync.testing.annexrepos import run_cli


@pytest.fixture
def fast_commits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The commits sync built from HEAD plus what it staged (not by write-tree)."""
    made: list[str] = []
    real = GitSync._commit_staged

    def counting(self: GitSync, *args: object, **kwargs: object) -> str:
        commit = real(self, *args, **kwargs)  # type: ignore[arg-type]
        made.append(commit)
        return commit

    monkeypatch.setattr(GitSync, "_commit_staged", counting)
    return made


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "r"
    r.mkdir()
    sh(r, "git", "init", "-q", "-b", "main")
    assert run_cli(r, "init", "R")[0] == 0
    (r / ".gitattributes").write_text("*.cfg annex.largefiles=nothing\n")
    for path, text in {"keep.txt": "keep\n", "dir/a.txt": "a\n", "dir/sub/b.txt": "b\n",
                       "thing": "a thing\n", "solo/only.txt": "only\n",
                       "settings.cfg": "colour=blue\n", "run.sh": "echo hi\n"}.items():
        replace(r, path, text)
    ok(r, "sync", "--quiet")
    return r


def assert_committed_is_index(repo: Path) -> None:
    # write-tree builds the tree from the index: it must be what HEAD has, and
    # nothing is left staged or changed.
    assert sh(repo, "git", "write-tree").strip() == sh(
        repo, "git", "rev-parse", "HEAD^{tree}").strip()
    assert sh(repo, "git", "status", "--porcelain", "--untracked-files=all") == ""
    sh(repo, "git", "fsck", "--connectivity-only", "--no-dangling")


def test_every_kind_of_change_is_committed_as_staged(repo: Path,
                                                     fast_commits: list[str]) -> None:
    replace(repo, "new.txt", "new\n")
    replace(repo, "keep.txt", "keep, changed\n")
    replace(repo, "dir/sub/b.txt", None)  # dir/sub/ disappears
    replace(repo, "solo/only.txt", None)  # solo/ disappears
    replace(repo, "thing", None)
    replace(repo, "thing/inside.txt", "a directory now\n")  # file -> directory
    replace(repo, "settings.cfg", "colour=red\n")  # kept in git
    replace(repo, 'odd "name"\twith\nnewline.txt', "odd\n")
    replace(repo, "deep/er/still/x.txt", "x\n")
    os.chmod(repo / "run.sh", 0o755)
    before = sh(repo, "git", "rev-parse", "HEAD").strip()
    ok(repo, "sync", "--quiet")
    assert sh(repo, "git", "rev-parse", "HEAD^").strip() == before
    assert fast_commits == [sh(repo, "git", "rev-parse", "HEAD").strip()]
    assert_committed_is_index(repo)
    files = set(sh(repo, "git", "ls-files", "-z").split("\0")) - {""}
    assert 'odd "name"\twith\nnewline.txt' in files
    assert {"thing/inside.txt", "deep/er/still/x.txt", "new.txt"} <= files
    assert not files & {"thing", "dir/sub/b.txt", "solo/only.txt"}
    modes = {line.split()[3]: line.split()[0] for line in
             sh(repo, "git", "ls-tree", "-r", "HEAD").splitlines() if "\t" not in line.split()[3]}
    assert modes["settings.cfg"] == "100644" and modes["new.txt"] == "120000"
    # directory -> file
    replace(repo, "dir", None)
    replace(repo, "dir", "a file now\n")
    ok(repo, "sync", "--quiet")
    assert_committed_is_index(repo)
    assert "dir" in sh(repo, "git", "ls-files").split()
    assert len(fast_commits) == 2


def test_commit_has_gits_author_and_committer(repo: Path, fast_commits: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sh(repo, "git", "config", "author.name", "Configured Author")
    monkeypatch.delenv("GIT_AUTHOR_NAME", raising=False)
    replace(repo, "new.txt", "new\n")
    ok(repo, "sync", "--quiet")
    assert_committed_is_index(repo)
    fields = sh(repo, "git", "log", "-1", "--format=%an <%ae> %ad%n%cn <%ce> %cd%n%B",
                "--date=raw").split("\n")
    expected_author = sh(repo, "git", "var", "GIT_AUTHOR_IDENT").strip()
    expected_committer = sh(repo, "git", "var", "GIT_COMMITTER_IDENT").strip()
    assert fields[0] == expected_author and fields[0].startswith("Configured Author <")
    assert fields[1] == expected_committer
    assert fields[2] == "git-annex in R"
    assert len(fast_commits) == 1


def test_unlocked_and_already_staged_changes(repo: Path, fast_commits: list[str]) -> None:
    replace(repo, "big.bin", "unlocked content\n")
    ok(repo, "add", "big.bin")
    sh(repo, "git", "commit", "-q", "-m", "big")
    ok(repo, "unlock", "big.bin")
    sh(repo, "git", "commit", "-q", "-m", "unlocked")
    (repo / "big.bin").write_text("unlocked content, changed\n")
    replace(repo, "other.txt", "other\n")
    ok(repo, "sync", "--quiet")
    assert_committed_is_index(repo)
    assert len(fast_commits) == 1
    # Something staged by hand is committed with the rest (the whole index).
    replace(repo, "by-hand.cfg", "staged by hand\n")
    sh(repo, "git", "add", "by-hand.cfg")
    replace(repo, "later.txt", "later\n")
    ok(repo, "sync", "--quiet")
    assert_committed_is_index(repo)
    assert {"by-hand.cfg", "later.txt"} <= set(sh(repo, "git", "ls-files").split())
    assert len(fast_commits) == 1  # that one went through write-tree


def test_touched_but_unchanged_file_makes_no_commit(repo: Path) -> None:
    head = sh(repo, "git", "rev-parse", "HEAD").strip()
    content = (repo / "settings.cfg").read_text()
    (repo / "settings.cfg").write_text(content)  # same bytes, new mtime
    ok(repo, "sync", "--quiet")
    assert sh(repo, "git", "rev-parse", "HEAD").strip() == head
    assert_committed_is_index(repo)
