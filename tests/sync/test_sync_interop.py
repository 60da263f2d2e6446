"""annexsync sync against git annex sync: clones of both tools converge with each other.

``ours`` is an annexsync clone, ``theirs`` a git-annex clone (the real binary); each
has the other as a remote (``theirs``; ``origin``), over local paths (and over ssh
in one test). git-annex's sync commits only tracked files, so new files on its side
go through ``git annex add`` first, as a user of it would do.

Conflicts: the same conflict is resolved once by annexsync and once by git-annex
(in the same position: the resolving side merges the other's ``synced/main``); both
must give the names git-annex's rules give, computed here from the keys, and the
other side must take the resolution as it is.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from synckit import (
    assert_clean,
    content,
    find_in,
    fix_commits,
    ga,
    head_tree,
    ok,
    replace,
    sh,
    staged,
    uuid_of,
    variant,
    whereis,
)

from annexsync.testing.sshd import SshServer

pytestmark = pytest.mark.interop

SEED = {"doc.txt": "doc\n", "thing": "a thing\n", "notes/readme.txt": "readme\n",
        ".bashrc": "alias ll='ls -l'\n", "settings.cfg": "colour=blue\n",
        ".gitattributes": "*.cfg annex.largefiles=nothing\n"}


def make_pair(base: Path, origin: str) -> tuple[Path, Path]:
    """(ours, theirs) sharing SEED; ``origin`` says which tool made the first clone."""
    first = base / ("ours" if origin == "annexsync" else "theirs")
    first.mkdir()
    sh(first, "git", "init", "-q", "-b", "main")
    for path, text in SEED.items():
        replace(first, path, text)
    if origin == "annexsync":
        ok(first, "init", "A")
        ok(first, "sync")
    else:
        ga(first, "init", "B")
        ga(first, "add", ".")
        ga(first, "sync")
    second = base / ("theirs" if origin == "annexsync" else "ours")
    sh(base, "git", "clone", "-q", first.name, second.name)
    if origin == "annexsync":
        ga(second, "init", "B")
    else:
        ok(second, "init", "A")
    ours, theirs = base / "ours", base / "theirs"
    # Each knows the other as "theirs"/"origin" (a clone already has "origin").
    if origin == "annexsync":
        sh(ours, "git", "remote", "add", "theirs", "../theirs")
    else:
        sh(ours, "git", "remote", "rename", "origin", "theirs")
        sh(theirs, "git", "remote", "add", "origin", "../ours")
    return ours, theirs


@pytest.fixture
def pair(tmp_path: Path, git_annex: str) -> tuple[Path, Path]:
    return make_pair(tmp_path, "annexsync")


def theirs_commit(theirs: Path, *small: str) -> None:
    """Stage new files on the git-annex side (``small`` ones into git)."""
    for path in small:
        sh(theirs, "git", "-c", "annex.largefiles=nothing", "annex", "add", path)
    ga(theirs, "add", ".")


def sha256e(text: str, ext: str) -> str:
    data = text.encode()
    return f"SHA256E-s{len(data)}--{hashlib.sha256(data).hexdigest()}{ext}"


def assert_same_answers(ours: Path, theirs: Path, *, all_present: bool = False) -> None:
    """Both tools in both clones agree on where every annexed file's content is."""
    views = {(repo.name, tool): whereis(repo, tool)
             for repo in (ours, theirs) for tool in ("annexsync", "git-annex")}
    first = views[("ours", "annexsync")]
    assert first, "no annexed files?"
    for name, view in views.items():
        assert view == first, f"whereis differs: {name}"
    a, b = uuid_of(ours), uuid_of(theirs)
    for repo in (ours, theirs):
        for tool in ("annexsync", "git-annex"):
            for desc, uuid in (("A", a), ("B", b)):
                assert find_in(repo, tool, desc) == {f for f, us in first.items() if uuid in us}
    if all_present:
        assert all(us == {a, b} for us in first.values()), first


# -- changes flow both ways ---------------------------------------------------------------


@pytest.mark.parametrize("origin", ["annexsync", "git-annex"])
def test_git_level_changes_flow_both_ways(tmp_path: Path, git_annex: str, origin: str) -> None:
    ours, theirs = make_pair(tmp_path, origin)
    # annexsync side: new, modified, deleted and renamed files; then git-annex pulls.
    replace(ours, "new.txt", "new from ours\n")
    replace(ours, "doc.txt", "doc, edited by ours\n")
    replace(ours, "thing", None)
    os.rename(ours / "notes" / "readme.txt", ours / "notes" / "README.md")
    ok(ours, "sync")
    ga(theirs, "sync")
    assert head_tree(ours) == head_tree(theirs)
    assert (theirs / "new.txt").is_symlink() and not (theirs / "thing").exists()
    # git-annex side: the same kinds of change, and a small file; then annexsync pulls.
    replace(theirs, "from-theirs.bin", "binary-ish from theirs\n")
    replace(theirs, "settings.cfg", "colour=green\n")
    replace(theirs, "new.txt", None)
    sh(theirs, "git", "mv", "doc.txt", "notes/doc.txt")
    theirs_commit(theirs)
    ga(theirs, "sync")
    ok(ours, "sync")
    assert head_tree(ours) == head_tree(theirs)
    files = staged(ours)
    assert {"from-theirs.bin", "notes/doc.txt", "notes/README.md", "settings.cfg"} <= set(files)
    assert "new.txt" not in files and "doc.txt" not in files
    assert files["settings.cfg"][0] == "100644" and content(ours, "settings.cfg") == \
        "colour=green\n"
    # A last round both ways changes nothing.
    tree = head_tree(ours)
    ga(theirs, "sync")
    ok(ours, "sync")
    assert head_tree(ours) == head_tree(theirs) == tree
    assert_clean(ours)
    assert_clean(theirs)
    assert_same_answers(ours, theirs)


def test_content_flows_both_ways(pair: tuple[Path, Path]) -> None:
    content_flows_both_ways(*pair)


def test_content_flows_both_ways_over_ssh(pair: tuple[Path, Path], sshd: SshServer) -> None:
    """The same, each clone reaching the other over ssh (git, git-annex-shell, P2P)."""
    ours, theirs = pair
    options = shlex.join(sshd.ssh_options())
    sh(ours, "git", "remote", "set-url", "theirs", sshd.url(theirs))
    sh(ours, "git", "config", "remote.theirs.annex-ssh-options", options)
    sh(theirs, "git", "remote", "set-url", "origin", sshd.url(ours))
    sh(theirs, "git", "config", "remote.origin.annex-ssh-options", options)
    sh(theirs, "git", "config", "core.sshCommand", sshd.git_ssh_command())
    logins = sshd.accepted_logins()
    content_flows_both_ways(ours, theirs)
    assert sshd.accepted_logins() > logins


def content_flows_both_ways(ours: Path, theirs: Path) -> None:
    """Content moves in all four ways: each tool sends to and gets from the other."""
    a, b = uuid_of(ours), uuid_of(theirs)
    replace(ours, "photo.jpg", "jpeg from ours\n")
    ok(ours, "sync", "--content")  # annexsync sends
    assert whereis(ours, "annexsync")["photo.jpg"] == {a, b}
    ga(theirs, "sync", "--content")
    assert content(theirs, "photo.jpg") == "jpeg from ours\n"
    assert content(theirs, "doc.txt") == "doc\n"  # seed content came along too
    replace(theirs, "song.ogg", "ogg from theirs\n")
    theirs_commit(theirs)
    ga(theirs, "sync", "--content")  # git-annex sends
    replace(theirs, "podcast.mp3", "mp3 from theirs\n")
    theirs_commit(theirs)
    ga(theirs, "sync")  # only git: ours learns of the file, not its content
    ok(ours, "sync", "--content")  # annexsync gets
    assert content(ours, "song.ogg") == "ogg from theirs\n"
    assert content(ours, "podcast.mp3") == "mp3 from theirs\n"
    assert head_tree(ours) == head_tree(theirs)
    ga(theirs, "sync", "--content")  # learns that ours has everything now
    assert_clean(ours)
    assert_clean(theirs)
    assert_same_answers(ours, theirs, all_present=True)


# -- conflicts that both tools resolve ------------------------------------------------------

Edit = Callable[[Path], None]


def _set(path: str, text: str | None) -> Edit:
    return lambda repo: replace(repo, path, text)


def _make_dir(repo: Path) -> None:
    replace(repo, "thing", None)
    replace(repo, "thing/inside.txt", "inside the directory\n")


OURS_DOC, THEIRS_DOC = "doc, ours\n", "doc, theirs (longer)\n"
OURS_THING = "thing, ours\n"

# kind -> (ours' edit, theirs' edit, small files on theirs, expected {path: (mode, text)}).
# Expected names follow git-annex's rules; the file/directory case's variant is named
# after the path git moved the file to (the side merged in is refs/heads/synced/main).
CONFLICTS: dict[str, tuple[Edit, Edit, tuple[str, ...], dict[str, tuple[str, str]]]] = {
    "both-changed": (
        _set("doc.txt", OURS_DOC), _set("doc.txt", THEIRS_DOC), (),
        {variant("doc.txt", sha256e(OURS_DOC, ".txt")): ("120000", OURS_DOC),
         variant("doc.txt", sha256e(THEIRS_DOC, ".txt")): ("120000", THEIRS_DOC)}),
    "modified-deleted": (
        _set("doc.txt", OURS_DOC), _set("doc.txt", None), (),
        {variant("doc.txt", sha256e(OURS_DOC, ".txt")): ("120000", OURS_DOC)}),
    "annexed-vs-git": (
        _set("doc.txt", OURS_DOC), _set("doc.txt", THEIRS_DOC), ("doc.txt",),
        {"doc.txt": ("100644", THEIRS_DOC),
         variant("doc.txt", sha256e(OURS_DOC, ".txt")): ("120000", OURS_DOC)}),
    "file-vs-directory": (
        _set("thing", OURS_THING), _make_dir, (),
        {"thing/inside.txt": ("120000", "inside the directory\n"),
         variant("thing~refs_heads_synced_main", sha256e(OURS_THING, "")):
             ("120000", OURS_THING)}),
}


@pytest.mark.parametrize("resolver", ["annexsync", "git-annex"])
@pytest.mark.parametrize("kind", sorted(CONFLICTS))
def test_conflict_resolves_to_the_same_tree(pair: tuple[Path, Path], kind: str,
                                            resolver: str) -> None:
    ours, theirs = pair
    edit_ours, edit_theirs, small, expected = CONFLICTS[kind]
    if kind == "file-vs-directory" and resolver == "annexsync":
        # The resolving side has the directory, so the file is "theirs" in both tests.
        edit_ours, edit_theirs = _make_dir, _set("thing", OURS_THING)
    untouched = set(staged(ours)) - {"thing" if kind == "file-vs-directory" else "doc.txt"}
    if resolver == "annexsync":
        edit_theirs(theirs)
        theirs_commit(theirs, *small)
        ga(theirs, "sync", "--content")
        edit_ours(ours)
        ok(ours, "sync", "--content")  # merges what theirs pushed: resolves
        ga(theirs, "sync", "--content")
    else:
        edit_ours(ours)
        ok(ours, "sync", "--content")
        edit_theirs(theirs)
        theirs_commit(theirs, *small)
        ga(theirs, "sync", "--content")  # resolves
        ok(ours, "sync", "--content")
    ga(theirs, "sync", "--content")  # fetches the content ours just sent or got
    for repo in (ours, theirs):
        files = staged(repo)
        got = {p: (mode, content(repo, p)) for p, (mode, _, _) in files.items()
               if p not in untouched}
        assert got == expected, f"{repo.name} ({resolver} resolved {kind})"
        assert all(stage == 0 for _, _, stage in files.values())
    assert head_tree(ours) == head_tree(theirs)
    assert fix_commits(ours) == fix_commits(theirs) == 1
    # The conflict does not come back: more rounds change nothing.
    tree = head_tree(ours)
    ok(ours, "sync")
    ga(theirs, "sync")
    ok(ours, "sync")
    assert head_tree(ours) == head_tree(theirs) == tree
    assert fix_commits(ours) == fix_commits(theirs) == 1
    assert_clean(ours)
    assert_clean(theirs)


# -- conflicts git-annex leaves to the user ---------------------------------------------------
# git-annex resolves a conflict only when one side is annexed: a dotfile (kept in git)
# edited on both sides, or a small file modified on one side and deleted on the other,
# stay conflicted there. annexsync keeps every side as a variant.


@pytest.mark.parametrize("resolver", ["annexsync", "git-annex"])
def test_dotfile_edited_on_both_sides_keeps_both(pair: tuple[Path, Path],
                                                 resolver: str) -> None:
    ours, theirs = pair
    mine, other = "alias ll='ls -la'\n", "export EDITOR=vi\n"
    replace(theirs, ".bashrc", other)
    replace(ours, ".bashrc", mine)
    if resolver == "annexsync":
        theirs_commit(theirs)
        ga(theirs, "sync")
        ok(ours, "sync")
        ga(theirs, "sync")  # a fast-forward to ours' resolution
        assert head_tree(ours) == head_tree(theirs)
    else:
        ok(ours, "sync")
        theirs_commit(theirs)
        ga(theirs, "sync", check=False)  # stops on the conflict; its push is refused
        ok(ours, "sync")  # merges theirs' commit itself
    texts = {content(ours, p) for p in staged(ours) if p.endswith(".bashrc")}
    assert {mine, other} <= texts
    assert_clean(ours)


@pytest.mark.parametrize("resolver", ["annexsync", "git-annex"])
def test_small_file_modified_and_deleted_keeps_the_change(pair: tuple[Path, Path],
                                                          resolver: str) -> None:
    ours, theirs = pair
    changed = "colour=red\n"
    if resolver == "annexsync":
        replace(theirs, "settings.cfg", changed)
        ga(theirs, "sync")
        replace(ours, "settings.cfg", None)
        ok(ours, "sync")
        ga(theirs, "sync")
        assert head_tree(ours) == head_tree(theirs)
    else:
        replace(ours, "settings.cfg", None)
        ok(ours, "sync")
        replace(theirs, "settings.cfg", changed)
        ga(theirs, "sync", check=False)
        ok(ours, "sync")
    kept = [p for p in staged(ours) if p.startswith("settings")]
    assert [content(ours, p) for p in kept] == [changed], kept
    assert_clean(ours)
