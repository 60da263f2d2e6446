"""The git-annex branch: reading its logs, changing them, committing, union-merging.

Theory of operation
-------------------
*Reading* a branch file: a journal file, when present, replaces the committed
content. Committed content is found through a path -> blob id map built from one
``ls-tree -r`` of the branch tip (cached per tip) and read by blob id through the
shared ``cat-file --batch``: never ``git-annex:path`` lookups in a loop.

*Changing* a branch file goes through the journal (:mod:`annexsync.annex.journal`)
under its lock; a change function maps old content to new content.

*Committing* writes every journal file into one commit ("update", no trailing
newline, as git-annex does) with one ``fast-import`` (only the trees on changed
paths are rewritten), and moves
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
from annexsync.git.fastimport import commit_changes, committer_ident
from annexsync.git.objects import write_loose_object
from annexsync.git.refs import (
    commit_tree,
    diff_tree,
    for_each_ref,
    is_ancestor,
    ls_tree,
    rev_parse,
    update_ref,
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
        """The branch's commit id (read from the ref file when loose: no git process)."""
        try:
            oid = (self.git.git_dir / REF).read_text().strip()
            if len(oid) == 40:
                return oid
        except (FileNotFoundError, NotADirectoryError):
            pass
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
        # git knows the empty tree without storing it, but fsck and other clones
        # want the object itself.
        write_loose_object(self.git.git_dir, EMPTY_TREE, b"tree", b"")
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

    def change_and_commit(self, changes: dict[str, Callable[[bytes], bytes | None]],
                          message: str = "update") -> str | None:
        """Apply many changes and commit them, with the journal, in one commit.

        For bulk work (thousands of location log lines) this skips writing a journal
        file per change; it holds the journal lock throughout, so it is as safe
        against concurrent git-annex writers as going through the journal.
        """
        with self.journal.locked():
            old = self.read_many(changes)
            new: dict[str, bytes] = {}
            for path, fn in changes.items():
                result = fn(old[path])
                if result is not None and result != old[path]:
                    new[path] = result
            return self.commit(message, extra=new)

    # -- committing ----------------------------------------------------------------
    def commit(self, message: str = "update", *,
               extra: dict[str, bytes] | None = None) -> str | None:
        """Commit every journal file (and ``extra`` contents, which win) in one commit.

        Returns the new tip, or None when there was nothing to commit.
        """
        with self.journal.locked():
            entries = self.journal.entries()
            if not entries and not extra:
                return None
            self.create()
            contents: dict[str, bytes] = {}
            for path, jfile in entries.items():
                try:
                    contents[path] = jfile.read_bytes()
                except FileNotFoundError:
                    continue
            contents.update(extra or {})
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
            commit = commit_changes(self.git, parent, dict(contents), message,
                                    ident=committer_ident(self.git, self.repo.config))
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
        """A merge commit of ``tip`` and ``others``: per differing file, the union of lines.

        Union merge is associative and commutative, so folding the others one at a
        time into a set of overrides gives the same result as merging them at once.
        """
        merged: dict[str, bytes] = {}
        for other in others:
            changes = [c for c in diff_tree(self.git, tip, other) if c.new_mode != "000000"]
            need = {c.new_oid for c in changes}
            need |= {c.old_oid for c in changes if c.old_mode != "000000"
                     and c.path not in merged}
            blobs = {oid: (obj.data if obj else b"")
                     for oid, obj in self.repo.catfile.get_many(need)}
            for c in changes:
                theirs = blobs[c.new_oid]
                if c.path in merged:
                    ours = merged[c.path]
                elif c.old_mode != "000000":
                    ours = blobs[c.old_oid]
                else:
                    merged[c.path] = theirs
                    continue
                merged[c.path] = union_merge(ours, theirs)
        # Deletions never propagate: files only we have are simply kept.
        return commit_changes(self.git, tip, merged, message, merge_parents=others,
                              ident=committer_ident(self.git, self.repo.config))


def _merge_message(refnames: list[str]) -> str:
    short = [r.removeprefix("refs/remotes/").removeprefix("refs/heads/") for r in refnames]
    return "merging " + ", ".join(short) + " into git-annex" if short else "merging"
