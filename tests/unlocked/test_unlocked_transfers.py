"""Unlocked files follow their content: ``get`` fills them, ``drop`` empties them.

As git-annex does: when content arrives, every unlocked file the keys database
associates with the key gets it (also one that was not named, holding the same
content as a locked file that was); when it is dropped they become pointer files
again. ``git status`` stays clean either way.
"""

from __future__ import annotations

from pathlib import Path

from unlockedkit import ANNEXSYNC, Sh, commit, status

from annexsync.annex.backends import hash_file
from annexsync.annex.keys import pointer_content
from annexsync.annex.repo import AnnexRepo


def _clone(sh: Sh, repo: AnnexRepo, tmp_path: Path) -> Path:
    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", repo.top, b)
    sh(b, ANNEXSYNC, "init", "b")
    return b


def test_get_fills_unlocked_files_and_drop_empties_them(repo: AnnexRepo, sh: Sh,
                                                         tmp_path: Path) -> None:
    a = repo.top
    (a / "u.txt").write_bytes(b"unlocked content\n")
    (a / "twin.txt").write_bytes(b"shared content\n")  # unlocked
    (a / "locked.txt").write_bytes(b"shared content\n")  # locked, same key
    sh(a, ANNEXSYNC, "add", "--unlocked", "u.txt", "twin.txt")
    sh(a, ANNEXSYNC, "add", "locked.txt")
    commit(sh, a)
    ku = hash_file(a / "u.txt")[0]
    ks = hash_file(a / "twin.txt")[0]
    b = _clone(sh, repo, tmp_path)
    assert (b / "u.txt").read_bytes() == pointer_content(ku)

    sh(b, ANNEXSYNC, "get", "u.txt", "locked.txt")
    assert (b / "u.txt").read_bytes() == b"unlocked content\n"
    # not named, but unlocked with the content that arrived for locked.txt
    assert (b / "twin.txt").read_bytes() == b"shared content\n"
    assert (b / "locked.txt").is_symlink()
    assert status(sh, b) == ""

    sh(b, ANNEXSYNC, "drop", "--force", "u.txt")
    assert (b / "u.txt").read_bytes() == pointer_content(ku)
    assert (b / "twin.txt").read_bytes() == b"shared content\n"
    assert status(sh, b) == ""
    sh(b, ANNEXSYNC, "drop", "--force", "locked.txt")
    assert (b / "twin.txt").read_bytes() == pointer_content(ks)
    assert status(sh, b) == ""


def test_drop_leaves_a_modified_unlocked_file_alone(repo: AnnexRepo, sh: Sh) -> None:
    a = repo.top
    (a / "m.txt").write_bytes(b"committed\n")
    sh(a, ANNEXSYNC, "add", "--unlocked", "m.txt")
    commit(sh, a)
    (a / "m.txt").write_bytes(b"edited, not committed\n")
    sh(a, ANNEXSYNC, "drop", "--force", "m.txt")
    assert (a / "m.txt").read_bytes() == b"edited, not committed\n"
