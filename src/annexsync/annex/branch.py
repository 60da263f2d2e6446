"""The git-annex branch: reading its logs, changing them, committing, union-merging.

Theory of operation
-------------------
*Reading* a branch file: a journal file, when present, replaces the committed
content. Committed content is looked up by path, at cost proportional to the number
of paths read, not to the size of the branch: the tip commit's root tree is read
through the shared ``cat-file --batch`` and parsed here, then, level by level, only
the subtrees on the wanted paths (for a key's log, ``aaa/bbb/``: git-annex's
hashDirLower), then the blobs, each level one pipelined batch of object ids: never
``git-annex:path`` lookups (git re-reads and scans the root tree for each). One
``ls-tree -r`` of the whole branch is run for :meth:`AnnexBranch.files` and
:meth:`paths`, and for a read that covers so much of the branch that listing it is
cheaper (estimated from the root tree and a sample of subtrees); a listing serves
reads while the tip is the one it lists.

Committed content at a tip never changes, so what was read is kept per repository
object (shared by every :class:`AnnexBranch` on it, bounded by
:data:`CONTENT_CACHE_LIMIT` paths, dropped at the first read at another tip), keyed
by the tip: a command that reads location logs to decide and then records changes
to the same logs (``get``: ``locations_many``, then the recorder's flushes) reads
each blob once. Our own commit carries the cache (and a listing) from its parent to
the new tip, since we know exactly what it changed; a tip moved by anyone else
starts a new cache.

*Changing* a branch file goes through the journal (:mod:`annexsync.annex.journal`)
under its lock; a change function maps old content to new content.

*Committing* writes every journal file into one commit ("update", no trailing
newline, as git-annex does) with one ``fast-import`` (only the trees on changed
paths are rewritten), and moves
``refs/heads/git-annex`` with a compare-and-swap. :meth:`change_and_commit` builds
its commit on the very tip it read the old contents at; if another process moved the
branch meanwhile (git-annex merges under the journal lock, but a push or a plain
``update-ref`` does not), the swap fails and our commit is union-merged with theirs,
so nothing they wrote is overwritten. Journal files are removed only after the ref
moved: a crash before leaves them to be committed by whoever comes next (annexsync or
git-annex), a crash after leaves a consistent branch. We never write
``.git/annex/index`` or ``index.lck``: those are git-annex's, and it notices that the
branch moved and re-merges.

*Merging* other ``*/git-annex`` branches is a union merge: per differing file the
sorted unique union of both sides' lines; a file only one side has is kept; deletions
never propagate. The git-annex branch therefore never conflicts.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from annexsync.annex.journal import Journal
from annexsync.annex.logs import union_merge
from annexsync.annex.repo import AnnexRepo
from annexsync.git.catfile import GitObject, parse_tree
from annexsync.git.fastimport import commit_changes, committer_ident
from annexsync.git.objects import blob_oid, write_loose_object
from annexsync.git.refs import (
    commit_tree,
    diff_tree,
    for_each_ref,
    is_ancestor,
    ls_tree,
    read_ref_file,
    rev_parse,
    update_ref,
)
from annexsync.git.runner import GitError

BRANCH = "git-annex"
REF = "refs/heads/git-annex"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
NULL = "0" * 40


#: fast-import's pack compression for branch commits (tiny logs and trees; see
#: :mod:`annexsync.git.fastimport`); the user's ``pack.compression`` or
#: ``core.compression`` wins.
_COMPRESSION = 0

#: At most this many committed file contents are kept per repository (about 100
#: bytes each for location logs): enough for a command's batch, small for the daemon.
CONTENT_CACHE_LIMIT = 20_000


@dataclass
class _Listing:
    tip: str
    files: dict[str, str]


@dataclass
class _Shared:
    """What one repository object's AnnexBranch instances know of committed content."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    listing: _Listing | None = None
    tip: str | None = None  # the tip ``contents`` describe
    contents: dict[str, bytes] = field(default_factory=dict)  # path -> content (b"": absent)

    def known(self, tip: str, paths: Iterable[str]) -> dict[str, bytes]:
        """Cached contents at ``tip``; what was kept of another tip is dropped."""
        with self.lock:
            if self.listing is not None and self.listing.tip != tip:
                self.listing = None
            if self.tip != tip:
                self.tip, self.contents = tip, {}
                return {}
            c = self.contents
            return {p: c[p] for p in paths if p in c}

    def remember(self, tip: str, found: Mapping[str, bytes]) -> None:
        with self.lock:
            if self.tip != tip:
                self.tip, self.contents = tip, {}
            c = self.contents
            if len(c) + sum(1 for p in found if p not in c) > CONTENT_CACHE_LIMIT:
                self.contents = {}
            # Past the limit keep the first ones: callers read in the order they work.
            room = CONTENT_CACHE_LIMIT - len(self.contents)
            self.contents.update(itertools.islice(found.items(), room))

    def advance(self, parent: str, commit: str, changes: Mapping[str, bytes]) -> None:
        """Our commit ``commit`` is ``parent`` with ``changes``: carry what we know over."""
        with self.lock:
            if self.listing is not None and self.listing.tip == parent:
                # A new dict (a C-level copy): callers may hold the parent's.
                files = dict(self.listing.files)
                files.update((path, blob_oid(data)) for path, data in changes.items())
                self.listing = _Listing(commit, files)
            if self.tip == parent:
                self.tip = commit
                c = self.contents
                if len(c) + sum(1 for p in changes if p not in c) > CONTENT_CACHE_LIMIT:
                    self.contents = {}
                room = CONTENT_CACHE_LIMIT - len(self.contents)
                self.contents.update(itertools.islice(changes.items(), room))


_SHARED: weakref.WeakKeyDictionary[AnnexRepo, _Shared] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


def _shared(repo: AnnexRepo) -> _Shared:
    with _SHARED_LOCK:
        sh = _SHARED.get(repo)
        if sh is None:
            sh = _SHARED[repo] = _Shared()
        return sh


class AnnexBranch:
    """The git-annex branch of one repository."""

    def __init__(self, repo: AnnexRepo) -> None:
        self.repo = repo
        self.git = repo.git
        self.journal = Journal(repo.annex_dir)
        self._shared = _shared(repo)

    @property
    def _listing(self) -> _Listing | None:
        """The cached full listing of the branch (of some tip), if any."""
        return self._shared.listing

    # -- existence ---------------------------------------------------------------
    def tip(self) -> str | None:
        """The branch's commit id (read from the ref files: no git process)."""
        try:
            return read_ref_file(self.git.git_dir, REF)
        except LookupError:
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
        """Map of committed branch path -> blob id at the current tip (cached).

        This lists the whole branch: for reading given paths use :meth:`read_many`.
        """
        tip = self.tip()
        if tip is None:
            return {}
        sh = self._shared
        listing = sh.listing
        if listing is None or listing.tip != tip:
            return self._list(tip)
        return listing.files

    def read_committed(self, path: str) -> bytes:
        tip = self.tip()
        if tip is None:
            return b""
        return self.read_committed_at(tip, [path])[path]

    def read(self, path: str) -> bytes:
        """Content of a branch file: the journal's if journalled, else the committed one."""
        j = self.journal.read(path)
        if j is not None:
            return j
        return self.read_committed(path)

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes]:
        """Content of many branch files (journal first), reading only those files."""
        return self._read_many_at(self.tip(), paths)

    def _read_many_at(self, tip: str | None, paths: Iterable[str]) -> dict[str, bytes]:
        paths = list(dict.fromkeys(paths))
        out: dict[str, bytes] = {}
        journalled = self.journal.entries() if not self.journal.is_empty() else {}
        committed: list[str] = []
        for p in paths:
            if p in journalled:
                data = self.journal.read(p)
                if data is not None:
                    out[p] = data
                    continue
            committed.append(p)
        if committed:
            if tip is None:
                out.update(dict.fromkeys(committed, b""))
            else:
                out.update(self.read_committed_at(tip, committed))
        return out

    def read_committed_at(self, tip: str, paths: Sequence[str]) -> dict[str, bytes]:
        """Committed content of ``paths`` at commit ``tip`` (b"" for a missing file).

        Costs in proportion to ``len(paths)``: cached contents first, then a cached
        listing of ``tip``, else a walk down only the trees on the paths.
        """
        sh = self._shared
        out = sh.known(tip, paths)
        missing = [p for p in paths if p not in out]
        if not missing:
            return out
        listing = sh.listing
        if listing is not None and listing.tip == tip:
            oids = {p: oid for p in missing if (oid := listing.files.get(p)) is not None}
        else:
            oids = self._lookup_blobs(tip, missing)
        by_oid = {oid: (obj.data if obj is not None and obj.type == "blob" else b"")
                  for oid, obj in self.repo.catfile.get_many(set(oids.values()))}
        found = {p: (by_oid[oids[p]] if p in oids else b"") for p in missing}
        sh.remember(tip, found)
        out.update(found)
        return out

    def _lookup_blobs(self, tip: str, paths: Sequence[str]) -> dict[str, str]:
        """Blob ids of those ``paths`` that exist at commit ``tip``.

        One pipelined ``cat-file`` batch per tree level, each reading only the trees
        on the wanted paths (and each of those once). When the paths cover so much
        of the branch that listing all of it is cheaper (:func:`_listing_is_cheaper`),
        one ``ls-tree -r`` is used instead (and kept, like :meth:`files`).
        """
        catfile = self.repo.catfile
        commit = catfile.get(tip)
        if commit is None or commit.type != "commit" or not commit.data.startswith(b"tree "):
            raise GitError(["cat-file", tip], 1, b"the git-annex branch tip is not a commit")
        root_oid = commit.data[5:45].decode()
        root = _tree(root_oid, catfile.get(root_oid))
        trees: dict[str, dict[bytes, tuple[bytes, str]]] = {root_oid: root}
        # path -> (tree id it is looked up in, remaining components)
        pending: dict[str, tuple[str, list[bytes]]] = {}
        at_root = {n.decode("utf-8", "surrogateescape") for n in root}
        for p in paths:
            if p.partition("/")[0] not in at_root:
                continue  # cheap: most paths of a small branch are not there at all
            parts = p.encode("utf-8", "surrogateescape").split(b"/")
            if all(parts):
                pending[p] = (root_oid, parts)
        below = 0  # paths inside a first-level subtree that exists
        subtrees: set[str] = set()
        for _root, parts in pending.values():
            entry = root.get(parts[0]) if len(parts) > 1 else None
            if entry is not None and entry[0] == b"40000":
                below += 1
                subtrees.add(entry[1])
        if len(subtrees) >= _SAMPLE_FROM:
            sample = sorted(subtrees)[:_SAMPLE]
            for oid, obj in catfile.get_many(sample):
                trees[oid] = _tree(oid, obj)
            per_tree = sum(len(trees[o]) for o in sample) / len(sample)
            dirs = sum(1 for mode, _ in root.values() if mode == b"40000")
            if _listing_is_cheaper(below, len(subtrees), per_tree, dirs):
                files = self._list(tip)
                return {p: oid for p in paths if (oid := files.get(p)) is not None}
        found: dict[str, str] = {}
        while pending:
            need = {t for t, _ in pending.values() if t not in trees}
            for oid, obj in catfile.get_many(need):
                trees[oid] = _tree(oid, obj)
            step: dict[str, tuple[str, list[bytes]]] = {}
            for p, (tree, parts) in pending.items():
                entry = trees[tree].get(parts[0])
                if entry is None:
                    continue
                mode, oid = entry
                if len(parts) == 1:
                    if not mode.startswith(b"40") and mode != b"160000":
                        found[p] = oid
                elif mode == b"40000":
                    step[p] = (oid, parts[1:])
            pending = step
        return found

    def _list(self, tip: str) -> dict[str, str]:
        files = {e.path: e.oid for e in ls_tree(self.git, tip) if e.type == "blob"}
        with self._shared.lock:
            self._shared.listing = _Listing(tip, files)
        return files

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
        against concurrent git-annex writers as going through the journal. The old
        contents are read at one tip and the commit is built on that tip (see the
        module docstring).
        """
        with self.journal.locked():
            tip = self.create()
            old = self._read_many_at(tip, changes)
            new: dict[str, bytes] = {}
            for path, fn in changes.items():
                result = fn(old[path])
                if result is not None and result != old[path]:
                    new[path] = result
            return self.commit(message, extra=new, base=tip)

    # -- committing ----------------------------------------------------------------
    def commit(self, message: str = "update", *,
               extra: dict[str, bytes] | None = None, base: str | None = None) -> str | None:
        """Commit every journal file (and ``extra`` contents, which win) in one commit.

        ``base`` is the tip ``extra`` was computed from (default: the current tip);
        the commit's parent. Returns the new tip, or None when there was nothing to
        commit.
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
            tip = self._commit_contents(contents, message, base)
            for jfile in entries.values():
                try:
                    os.unlink(jfile)
                except FileNotFoundError:
                    pass
            return tip

    def _commit_contents(self, contents: dict[str, bytes], message: str,
                         base: str | None = None) -> str:
        parent = base or self.tip()
        assert parent is not None
        commit = commit_changes(self.git, parent, contents, message,
                                ident=committer_ident(self.git, self.repo.config),
                                compression=_COMPRESSION, config=self.repo.config)
        try:
            update_ref(self.git, REF, commit, parent)
        except GitError:
            # Someone else moved the branch since ``parent``: fold our commit in by
            # union merge (which retries its own compare-and-swap).
            self._merge([commit], message="update")
            return self.tip() or commit
        self._shared.advance(parent, commit, contents)
        return commit

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
                              ident=committer_ident(self.git, self.repo.config),
                              compression=_COMPRESSION, config=self.repo.config)


def _tree(oid: str, obj: GitObject | None) -> dict[bytes, tuple[bytes, str]]:
    """A tree read on the way to branch files: missing is an error, not "no files"
    (content computed from a wrongly empty log would drop lines when committed)."""
    if obj is None or obj.type != "tree":
        raise GitError(["cat-file", oid], 1, b"git-annex branch tree missing or not a tree")
    return parse_tree(obj.data)


#: Paths below at least this many distinct top-level directories make a lookup
#: consider listing the whole branch, estimating its size from :data:`_SAMPLE` of them.
_SAMPLE_FROM = 64
_SAMPLE = 16


def _listing_is_cheaper(paths_below: int, subtrees: int, per_subtree: float,
                        dirs: int) -> bool:
    """Whether one ``ls-tree -r`` beats walking down to ``paths_below`` paths.

    Measured costs: ``ls-tree -r`` ~3.7 µs per branch file; the walk ~6.8 µs per tree
    read through ``cat-file`` (each first-level subtree, then one second-level tree
    per path) plus ~0.7 µs per entry of the first-level trees parsed. The branch
    size is estimated as ``dirs * per_subtree`` (second-level trees of hashDirLower
    hold about one file each until a branch has millions): an underestimate only
    ever picks the walk, whose cost follows the paths.
    """
    walk = 6.8 * (subtrees + paths_below) + 0.7 * subtrees * per_subtree
    return walk > 3.7 * dirs * per_subtree


def _merge_message(refnames: list[str]) -> str:
    short = [r.removeprefix("refs/remotes/").removeprefix("refs/heads/") for r in refnames]
    return "merging " + ", ".join(short) + " into git-annex" if short else "merging"
