"""Pure decisions of the clean/smudge filter, inode caches and log formats."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annexsync.annex.keys import Key, pointer_content
from annexsync.annex.keysdb import InodeCache
from annexsync.annex.restage import format_entry, parse_entry
from annexsync.annex.smudge import (
    CleanAction,
    PointerKind,
    classify_head,
    is_dotfile,
    outside_repo,
    should_annex,
)

KEY = Key.parse("SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt")
PTR = pointer_content(KEY)


@pytest.mark.parametrize("data,complete,kind", [
    (PTR, True, PointerKind.POINTER),
    (PTR.rstrip(b"\n"), True, PointerKind.POINTER),
    (PTR.rstrip(b"\n") + b"\r\n", True, PointerKind.POINTER),
    (PTR + b"/annex/extra line\n", True, PointerKind.POINTER),
    (PTR + b"user text\n", True, PointerKind.APPENDED),
    (PTR + b"x" * 40000, False, PointerKind.APPENDED),
    (b"/annex/objects/../../etc/passwd\n", True, PointerKind.BAD_KEY),
    (b"/annex/objects/SHA256E-s5--nothex\n", True, PointerKind.BAD_KEY),
    (b"/annex/objects/SHA256E-s12--" + b"a" * 64 + b"%2F..\n", True, PointerKind.BAD_KEY),
    (b"hello world\n", True, PointerKind.NONE),
    (b"", True, PointerKind.NONE),
    (b"see /annex/objects/ in the manual\nand more text\n", True, PointerKind.NONE),
])
def test_classify_head(data: bytes, complete: bool, kind: PointerKind) -> None:
    got, key = classify_head(data, complete)
    assert got is kind
    assert (key == KEY) if kind is PointerKind.POINTER else key is None


def test_hostile_keys_never_become_paths() -> None:
    for raw in (b"/annex/objects/..\n", b"/annex/objects/.\n", b"/annex/objects/\n",
                b"/annex/objects/WORM--a\x00b\n", b"/annex/objects/SHA256--" + b"0" * 63 + b"\n"):
        assert classify_head(raw, True)[1] is None


A = CleanAction


@pytest.mark.parametrize("kw,expected", [
    # largefiles not configured: follows the index
    (dict(largefiles=None, was_annexed=False), A.GIT),
    (dict(largefiles=None, was_annexed=True), A.ANNEX),
    # configured: the expression decides
    (dict(largefiles=True, was_annexed=False), A.ANNEX),
    (dict(largefiles=False, was_annexed=True), A.GIT),
    # dotfiles follow the index unless annex.dotfiles
    (dict(largefiles=True, was_annexed=False, dotfile=True), A.GIT),
    (dict(largefiles=True, was_annexed=True, dotfile=True), A.ANNEX),
    (dict(largefiles=True, was_annexed=False, dotfile=True, annex_dotfiles=True), A.ANNEX),
    # annex.gitaddtoannex=false: only what was annexed stays annexed
    (dict(largefiles=True, was_annexed=False, gitaddtoannex=False), A.GIT),
    # a known annexed inode stays annexed whatever the config says
    (dict(largefiles=False, was_annexed=False, inode_known=True), A.ANNEX),
    # a git file of the same size: annex only if the content really changed
    (dict(largefiles=True, was_annexed=False, staged_git_blob_same_size=True),
     A.ANNEX_UNLESS_GIT_BLOB),
])
def test_should_annex(kw: dict[str, bool | None], expected: CleanAction) -> None:
    args: dict[str, bool | None] = dict(dotfile=False, annex_dotfiles=False,
                                        gitaddtoannex=True, inode_known=False,
                                        staged_git_blob_same_size=False)
    args.update(kw)
    assert should_annex(**args) is expected  # type: ignore[arg-type]


def test_paths() -> None:
    assert is_dotfile(".hidden") and is_dotfile("a/.b/c") and not is_dotfile("a/b.c")
    for p in ("/etc/passwd", "../x", "..", "", ".git/config"):
        assert outside_repo(p), p
    assert not outside_repo("sub/file")


def test_inode_cache_format_matches_git_annex() -> None:
    assert InodeCache(2165485, 6, 1795825396, 16140045).format() == \
        "2165485 6 1795825396 016140045"
    # a whole second leaves an empty fraction and a trailing space, like git-annex
    assert InodeCache(2163497, 4, 1700000000, 0).format() == "2163497 4 1700000000 "
    assert InodeCache(1, 2, 3, 500_000_000).format() == "1 2 3 5"
    assert InodeCache.parse("2163497 4 1700000000 ") == InodeCache(2163497, 4, 1700000000, None)
    assert InodeCache.parse("1 2 3 5") == InodeCache(1, 2, 3, 500_000_000)
    assert InodeCache.parse("1 2") is None and InodeCache.parse("a b c d") is None
    assert InodeCache.parse("1 2 3 x") is None
    low = InodeCache(1, 2, 3, None)
    assert low.same(InodeCache(1, 2, 3, 999)) and not low.same(InodeCache(1, 2, 4, 0))
    assert not InodeCache(1, 2, 3, 5).same(InodeCache(1, 2, 3, 6))


@given(st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**33),
       st.integers(0, 999_999_999))
def test_inode_cache_roundtrip(ino: int, size: int, sec: int, ns: int) -> None:
    ic = InodeCache(ino, size, sec, ns)
    back = InodeCache.parse(ic.format())
    assert back is not None and back.same(ic)


def test_inode_cache_of_files(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    ic = InodeCache.of_path(f)
    st_ = os.stat(f)
    assert ic is not None and ic.inode == st_.st_ino and ic.size == 3
    assert InodeCache.of_path(tmp_path) is None
    (tmp_path / "l").symlink_to(f)
    assert InodeCache.of_path(tmp_path / "l") is None


def test_restage_log_entries() -> None:
    ic = InodeCache(5, 6, 7, 0)
    line = format_entry("dir/a b:c.txt", ic)
    assert line == b"5 6 7 :dir/a b:c.txt"
    assert parse_entry(line) == ("dir/a b:c.txt", InodeCache(5, 6, 7, None))
    assert parse_entry(b"garbage") is None and parse_entry(b"1 2 3 4:") is None
