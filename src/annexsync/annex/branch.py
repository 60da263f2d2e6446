"""The git-annex branch: reading its logs, changing them, committing, union-merging.

Theory of operation
-------------------
*Reading* a branch file: a journal file, when present, replaces the committed
content. Committed content is found through a path -> blob id map built from one
``ls-tree -r`` of the branch tip (cached per tip) and read by blob id through the
shared ``cat-file --batch``: never ``git-annex:path`` lookups in a loop.

*Changing* a branch file goes through the journal (:mod:`annexsync.annex.journal`)
under its lock; a change function maps old content to new content.

*Committing* stages every journal file into a private index loaded from the tip,
writes one commit ("update", no trailing newline, as git-annex does) and moves
``refs/heads/git-annex`` with a compare-and-swap. If another process moved the
branch meanwhile, our commit is union-merged with theirs. Journal files are removed
only after the ref moved. We never write ``.git/annex/index`` or ``index.lck``: those
are git-annex's, and it notices that the branch moved and re-merges.

*Merging* other ``*/git-annex`` branches is a union merge: per differing file the
sorted unique union of both sides' lines; a file only one side has is kept; deletions
never propagate. The git-annex branch therefore never conflicts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from annexsync.annex.journal import Journal
from annexsync.annex.logs import union_merge
from annexsync.annex.repo import AnnexRepo
from annexsync.git.index import IndexEntry, private_index, update_index
from annexsync.git.objects import BlobWriter
from annexsync.git.refs import (
    commit_tree,
    for_each_ref,
    is_ancestor,
    ls_tree,
    rev_parse,
    update_ref,
    write_tree,
)
from annexsync.git.runner import GitError

BRANCH = "git-annex"
REF = "refs/heads/git-annex"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
NULL = "0" * 40


@dataclass
class _Listing:
    tip: str
    files: dict[str, str]


class AnnexBranch:
    """The git-annex branch of one repository."""

    def __init__(self, repo: AnnexRepo) -> None:
        self.repo = repo
        self.git = repo.git
        self.journal = Journal(repo.annex_dir)
        self._listing: _Listing | None = None

    # -- existence ---------------------------------------------------------------
    def tip(self) -> str | None:
        return rev_parse(self.git, REF)

    def exists(self) -> bool:
        return self.tip() is not None

    def create(self) -> str:
        """Create the branch if missing (from origin's if there is one); return the tip."""
        tip = self.tip()
        if tip is not None:
            return tip
        origin = rev_parse(self.git, "refs/remotes/origin/git-annex")
        if origin is not None:
            update_ref(self.git, REF, origin, NULL, "annexsync: branch from origin")
            return origin
        commit = commit_tree(self.git, EMPTY_TREE, [], "branch created")
        update_ref(self.git, REF, commit, NULL, "annexsync: branch created")
        return commit

    # -- reading -----------------------------------------------------------------
    def files(self) -> dict[str, str]:
        """Map of committed branch path -> blob id at the current tip (cached)."""
        tip = self.tip()
        if tip is None:
            return {}
        if self._listing is None or self._listing.tip != tip:
            files = {e.path: e.oid for e in ls_tree(self.git, tip) if e.type == "blob"}
            self._listing = _Listing(tip, files)
        return self._listing.files

    def read_committed(self, path: str) -> bytes:
        oid = self.files().get(path)
        if oid is None:
            return b""
        return self.repo.catfile.get_blob(oid) or b""

    def read(self, path: str) -> bytes:
        """Content of a branch file: the journal's if journalled, else the committed one."""
        j = self.journal.read(path)
        if j is not None:
            return j
        return self.read_committed(path)

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes]:
        """Content of many branch files, reading committed blobs in one pipelined batch."""
        paths = list(dict.fromkeys(paths))
        out: dict[str, bytes] = {}
        journalled = self.journal.entries() if not self.journal.is_empty() else {}
        files = self.files()
        want: dict[str, str] = {}
        for p in paths:
            if p in journalled:
                data = self.journal.read(p)
                if data is not None:
                    out[p] = data
                    continue
            oid = files.get(p)
            if oid is None:
                out[p] = b""
            else:
                want[p] = oid
        if want:
            by_oid = {
                oid: (obj.data if obj is not None else b"")
                for oid, obj in self.repo.catfile.get_many(set(want.values()))
            }
            for p, oid in want.items():
                out[p] = by_oid[oid]
        return out

    def paths(self) -> set[str]:
        """Every branch path, committed or journalled."""
        return set(self.files()) | set(self.journal.entries())

    # -- changing ----------------------------------------------------------------
    def change(self, path: str, fn: Callable[[bytes], bytes | None]) -> bool:
        """Apply ``fn`` (old content -> new content or None for "no change").

        Written to the journal under its lock. Returns whether anything changed.
        """
        with self.journal.locked():
            old = self.read(path)
            new = fn(old)
            if new is None or new == old:
                return False
            self.journal.write(path, new)
            return True

    # -- committing ----------------------------------------------------------------
    def commit(self, message: str = "update") -> str | None:
        """Commit every journal file in one commit; return the new tip (None if nothing)."""
        with self.journal.locked():
            entries = self.journal.entries()
            if not entries:
                return None
            self.create()
            contents: dict[str, bytes] = {}
            for path, jfile in entries.items():
                try:
                    contents[path] = jfile.read_bytes()
                except FileNotFoundError:
                    continue
            tip = self._commit_contents(contents, message)
            for jfile in entries.values():
                try:
                    os.unlink(jfile)
                except FileNotFoundError:
                    pass
            return tip

    def _commit_contents(self, contents: dict[str, bytes], message: str) -> str:
        for _attempt in range(20):
            parent = self.tip()
            assert parent is not None
            with private_index(self.git, parent) as index, BlobWriter(self.git) as blobs:
                entries = [IndexEntry("100644", blobs.add(data), path)
                           for path, data in sorted(contents.items())]
                blobs.flush()
                update_index(self.git, entries, index)
                tree = write_tree(self.git, index)
            commit = commit_tree(self.git, tree, [parent], message)
            try:
                update_ref(self.git, REF, commit, parent)
            except GitError:
                # Someone else committed meanwhile: fold our commit in by union merge.
                if self._merge([commit], message="update") is not None:
                    return self.tip() or commit
                continue
            return commit
        raise GitError(["update-ref", REF], 1, b"the git-annex branch keeps moving")

    # -- merging -----------------------------------------------------------------
    def sibling_refs(self) -> dict[str, str]:
        """Other git-annex branches: remotes', synced/, and the assistant's fallback refs."""
        refs = for_each_ref(self.git, "refs/remotes", "refs/heads/synced", "refs/synced")
        return {name: oid for name, oid in refs.items()
                if name.endswith("/git-annex") and name != REF}

    def merge_siblings(self) -> str | None:
        """Union-merge every sibling git-annex branch; return the new tip if it moved."""
        self.create()
        refs = self.sibling_refs()
        with self.journal.locked():
            self.commit()
            return self._merge(list(dict.fromkeys(refs.values())),
                               message=_merge_message(list(refs)))

    def merge(self, commits: Sequence[str]) -> str | None:
        """Union-merge the given commits into the branch."""
        with self.journal.locked():
            self.commit()
            return self._merge(list(commits), message="merging into git-annex")

    def _merge(self, commits: list[str], message: str) -> str | None:
        for _attempt in range(20):
            tip = self.tip()
            if tip is None:
                if not commits:
                    return None
                update_ref(self.git, REF, commits[0], NULL)
                commits = commits[1:]
                continue
            todo = [c for c in commits if not is_ancestor(self.git, c, tip)]
            if not todo:
                return None
            if len(todo) == 1 and is_ancestor(self.git, tip, todo[0]):
                try:
                    update_ref(self.git, REF, todo[0], tip)
                except GitError:
                    continue
                return todo[0]
            new = self._union_commit(tip, todo, message)
            try:
                update_ref(self.git, REF, new, tip)
            except GitError:
                continue
            return new
        raise GitError(["update-ref", REF], 1, b"the git-annex branch keeps moving")

    def _union_commit(self, tip: str, others: list[str], message: str) -> str:
        with private_index(self.git, tip) as index:
            for other in others:
                changes = _diff_index(self, index, other)
                if not changes:
                    continue
                need = {oid for _, ours, theirs in changes for oid in (ours, theirs) if oid}
                blobs_by_oid = {oid: (obj.data if obj else b"")
                                for oid, obj in self.repo.catfile.get_many(need)}
                entries: list[IndexEntry] = []
                with BlobWriter(self.git) as writer:
                    for path, ours, theirs in changes:
                        if ours is None:
                            assert theirs is not None
                            entries.append(IndexEntry("100644", theirs, path))
                        elif theirs is None:
                            continue  # deletions never propagate
                        else:
                            merged = union_merge(blobs_by_oid[ours], blobs_by_oid[theirs])
                            entries.append(IndexEntry("100644", writer.add(merged), path))
                update_index(self.git, entries, index)
            tree = write_tree(self.git, index)
        return commit_tree(self.git, tree, [tip, *others], message)


def _diff_index(branch: AnnexBranch, index: str, other: str) -> list[tuple[str, str | None,
                                                                           str | None]]:
    """(path, our blob or None, their blob or None) for paths where index and ``other`` differ."""
    out = branch.git.run("diff-index", "--raw", "-z", "-r", "--no-renames", "-l0", "--cached",
                         other, env={"GIT_INDEX_FILE": index})
    fields = out.split(b"\0")
    result: list[tuple[str, str | None, str | None]] = []
    i = 0
    while i + 1 < len(fields):
        meta = fields[i].decode()
        if not meta.startswith(":"):
            i += 1
            continue
        _src_mode, _dst_mode, theirs, ours, status = meta[1:].split(" ")
        path = fields[i + 1].decode("utf-8", "surrogateescape")
        i += 2
        result.append((path, None if status == "D" else ours, None if status == "A" else theirs))
    return result


def _merge_message(refnames: list[str]) -> str:
    short = [r.removeprefix("refs/remotes/").removeprefix("refs/heads/") for r in refnames]
    return "merging " + ", ".join(short) + " into git-annex" if short else "merging"
