"""Every kind of conflict resolves with every side's content still reachable (annexsync only).

Two annexsync clones ``a`` and ``b`` (each the other's remote) change the same path
in different ways; ``a`` syncs first, ``b`` merges and resolves, ``a`` takes the
resolution. Afterwards each side's version is readable in both work trees (after
``sync --content``, or ``get``), the trees are equal, and nothing is left conflicted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from synckit import assert_clean, content, head_tree, ok, replace, sh, staged

DIR = object()  # "make this path a directory holding one file"

SEED = {"doc.txt": "doc\n", "thing": "a thing\n", ".bashrc": "alias ll='ls -l'\n",
        "settings.cfg": "colour=blue\n", ".gitattributes": "*.cfg annex.largefiles=nothing\n"}

# kind -> (a's change, b's change): path -> new text, None (delete) or DIR.
KINDS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "both-changed": ({"doc.txt": "doc by a\n"}, {"doc.txt": "doc by b, longer\n"}),
    "modified-deleted": ({"doc.txt": "doc by a\n"}, {"doc.txt": None}),
    "deleted-modified": ({"doc.txt": None}, {"doc.txt": "doc by b\n"}),
    "file-vs-directory": ({"thing": "thing by a\n"}, {"thing": DIR}),
    "directory-vs-file": ({"thing": DIR}, {"thing": "thing by b\n"}),
    "small-file-vs-directory": ({"settings.cfg": DIR}, {"settings.cfg": "colour=b\n"}),
    "annexed-vs-git": ({"doc.txt": "doc annexed by a\n"}, {"doc.txt": "doc in git by b\n"}),
    "git-vs-annexed": ({"doc.txt": "doc in git by a\n"}, {"doc.txt": "doc annexed by b\n"}),
    "both-in-git": ({".bashrc": "alias la='ls -a'\n"}, {".bashrc": "export EDITOR=vi\n"}),
    "small-modified-deleted": ({"settings.cfg": None}, {"settings.cfg": "colour=red\n"}),
}


@pytest.fixture
def ab(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    ok(a, "init", "A")
    for path, text in SEED.items():
        replace(a, path, text)
    ok(a, "sync")
    sh(tmp_path, "git", "clone", "-q", "a", "b")
    b = tmp_path / "b"
    ok(b, "init", "B")
    sh(a, "git", "remote", "add", "b", "../b")
    sh(b, "git", "remote", "rename", "origin", "a")
    return a, b


def apply(repo: Path, changes: dict[str, object], who: str) -> set[str]:
    """Make the changes; return the texts written (what must stay reachable)."""
    texts: set[str] = set()
    for path, change in changes.items():
        if change is DIR:
            text = f"inside {path}/ by {who}\n"
            replace(repo, path, None)
            replace(repo, f"{path}/inside.txt", text)
        else:
            assert change is None or isinstance(change, str)
            text = change
            replace(repo, path, text)
            if text is not None and "in git" in text:
                ok(repo, "add", "--force-small", path)
        if text is not None:
            texts.add(text)
    return texts


def readable(repo: Path) -> set[str]:
    return {t for p in staged(repo) if (t := content(repo, p)) is not None}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_side_stays_reachable(ab: tuple[Path, Path], kind: str) -> None:
    a, b = ab
    change_a, change_b = KINDS[kind]
    want = apply(a, change_a, "a")
    ok(a, "sync", "--content")
    want |= apply(b, change_b, "b")
    code_out = ok(b, "sync", "--content")
    assert "conflicts resolved" in code_out, code_out
    ok(a, "sync", "--content")
    ok(b, "sync", "--content")
    for repo in (a, b):
        assert want <= readable(repo), f"{repo.name}: {sorted(want - readable(repo))} lost"
        assert all(stage == 0 for _, _, stage in staged(repo).values())
        assert_clean(repo)
    assert head_tree(a) == head_tree(b)


def test_variant_content_can_be_fetched_with_get(ab: tuple[Path, Path]) -> None:
    a, b = ab
    apply(a, {"doc.txt": "doc by a\n"}, "a")
    ok(a, "sync")  # git only: b does not get a's content
    apply(b, {"doc.txt": "doc by b\n"}, "b")
    ok(b, "sync")
    variants = sorted(p for p in staged(b) if p.startswith("doc.variant-"))
    assert len(variants) == 2
    assert {content(b, p) for p in variants} == {"doc by b\n", None}
    ok(b, "get", *variants)
    assert {content(b, p) for p in variants} == {"doc by a\n", "doc by b\n"}
    ok(a, "sync")
    ok(a, "get", ".")
    assert {content(a, p) for p in variants} == {"doc by a\n", "doc by b\n"}
    assert head_tree(a) == head_tree(b)


def test_renamed_side_of_a_type_conflict_is_folded_back() -> None:
    from annexsync.sync.merge import fold_renamed_sides

    link, plain = ("120000", "l" * 40), ("100644", "p" * 40)
    # plain file (ours) against a locked annexed file (theirs): git moved ours aside
    unmerged = {"doc.txt": {3: link}, "doc.txt~HEAD": {1: plain, 2: plain}}
    assert fold_renamed_sides(unmerged) == {"doc.txt": {2: plain, 3: link}}
    # a file against a directory: the file's side stays where git put it
    unmerged = {"thing~HEAD": {1: plain, 2: plain}}
    assert fold_renamed_sides(unmerged) == unmerged
    # both sides at the renamed path, or the side already present: left alone
    unmerged = {"a": {2: link}, "a~x": {2: plain, 3: plain}, "b": {2: link}, "b~x": {2: plain}}
    assert fold_renamed_sides(unmerged) == unmerged
