"""The pure conflict resolver: names, and which side keeps the name."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from annexsync.annex.keys import Key
from annexsync.sync.variants import Side, resolve, variant_name

K1 = Key.parse("SHA256E-s10--b4873b91" + "0" * 56 + ".txt")
K2 = Key.parse("SHA256E-s10--9b3c1600" + "1" * 56 + ".txt")


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()[:4]


def test_variant_names_like_git_annex() -> None:
    assert variant_name("conflict.txt", str(K1)) == f"conflict.variant-{md5(str(K1))}.txt"
    assert variant_name("x.tar.gz", "k") == f"x.tar.variant-{md5('k')}.gz"
    assert variant_name("noext", "k") == f"noext.variant-{md5('k')}"
    assert variant_name("d/.bashrc", "k") == f"d/.variant-{md5('k')}.bashrc"
    assert variant_name("a.variant-1234.txt", "k", full="KEYFILE") == \
        "a.variant-1234.variant-KEYFILE.txt"


def test_both_annexed_different_keys_become_two_variants() -> None:
    out = resolve("f.txt", Side("120000", "o1", K1), Side("120000", "o2", K2))
    assert sorted(e.path for e in out) == sorted(
        [f"f.variant-{md5(str(K1))}.txt", f"f.variant-{md5(str(K2))}.txt"])


def test_same_key_keeps_name_unlocked_wins() -> None:
    out = resolve("f.txt", Side("120000", "o1", K1), Side("100644", "o2", K1))
    assert [(e.path, e.mode) for e in out] == [("f.txt", "100644")]


def test_plain_side_keeps_name_annexed_becomes_variant() -> None:
    out = resolve("f.txt", Side("100644", "plain", None), Side("120000", "o2", K2))
    assert {e.path: e.oid for e in out} == {"f.txt": "plain",
                                            f"f.variant-{md5(str(K2))}.txt": "o2"}


def test_modify_delete_keeps_modified_as_variant() -> None:
    out = resolve("f.txt", None, Side("120000", "o2", K2))
    assert [e.path for e in out] == [f"f.variant-{md5(str(K2))}.txt"]


def test_file_against_directory_moves_file_aside() -> None:
    out = resolve("f", Side("100644", "plain", None), None, directory_here=True)
    assert [e.path for e in out] == [f"f.variant-{md5('plain')}"]


def _side(mode: str, content: tuple[str, Key | None]) -> Side:
    # a blob id is determined by mode and content, as in git
    return Side(mode, f"{mode}:{content[0]}", content[1])


sides = st.one_of(
    st.none(),
    st.builds(_side, st.sampled_from(["100644", "120000"]),
              st.sampled_from([("plain-a", None), ("plain-b", None), ("k1", K1), ("k2", K2)])),
)


@given(sides, sides, st.booleans())
def test_resolution_is_symmetric_and_keeps_every_side(ours: Side | None, theirs: Side | None,
                                                      directory_here: bool) -> None:
    one = resolve("f.txt", ours, theirs, directory_here=directory_here)
    two = resolve("f.txt", theirs, ours, directory_here=directory_here)
    assert {e.path: (e.key, e.oid if e.key is None else None) for e in one} == \
        {e.path: (e.key, e.oid if e.key is None else None) for e in two}
    kept_content = {e.key or e.oid for e in one}
    for s in (ours, theirs):
        if s is not None:
            assert (s.key or s.oid) in kept_content
    if directory_here:
        assert all(e.path != "f.txt" for e in one)
