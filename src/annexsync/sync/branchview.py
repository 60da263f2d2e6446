"""The git-annex branch as a sync round reads it: a few files without listing them all.

Theory of operation
-------------------
:class:`~annexsync.annex.branch.AnnexBranch` finds committed branch files through one
``ls-tree -r`` of the whole branch per tip, which is right when many files are read
(every location log of a ``sync --content``) but costs most of a sync round in a
large repository when only a handful are: ``config.log`` for ``annex.largefiles``,
the location logs of the ten files just added, ``uuid.log`` for the commit message,
``remote.log`` for the remotes. Each of those reads changes the tip and so would
list the branch again.

:class:`SyncBranch` answers reads of at most :data:`FEW` paths from a path-limited
``ls-tree`` of just those paths (one process; git walks only the subtrees on their
way). The journal, locking, commits and merges are :class:`AnnexBranch`'s, unchanged:
the reads go through :meth:`AnnexBranch.read_many` and :meth:`AnnexBranch.read_committed`,
which see only the listed paths. Larger reads, and :meth:`AnnexBranch.paths`, still
list the whole branch once per tip.

(This belongs in :class:`AnnexBranch` itself; it lives here until it moves there.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.repo import AnnexRepo

#: Reads of up to this many paths use a path-limited ``ls-tree``.
FEW = 1000
_CHUNK = 250  # paths per ls-tree command line


class SyncBranch(AnnexBranch):
    """An :class:`AnnexBranch` whose small reads do not list the whole branch."""

    def __init__(self, repo: AnnexRepo) -> None:
        super().__init__(repo)
        self._local = threading.local()  # .only: the paths being read, in this thread
        self._known_tip: str | None = None
        self._known: dict[str, str | None] = {}  # path -> blob id (None: absent) at tip

    @contextmanager
    def _reading(self, paths: list[str]) -> Iterator[None]:
        outer = getattr(self._local, "only", None)
        self._local.only = paths
        try:
            yield
        finally:
            self._local.only = outer

    def files(self) -> dict[str, str]:
        only: list[str] | None = getattr(self._local, "only", None)
        listing = self._listing
        tip = self.tip()
        if (only is None or len(only) > FEW or tip is None
                or (listing is not None and listing.tip == tip)):
            return super().files()
        if self._known_tip != tip:
            self._known_tip, self._known = tip, {}
        missing = [p for p in only if p not in self._known]
        for i in range(0, len(missing), _CHUNK):
            chunk = missing[i:i + _CHUNK]
            found = self._ls_tree_paths(tip, chunk)
            for p in chunk:
                self._known[p] = found.get(p)
        return {p: oid for p in only if (oid := self._known[p]) is not None}

    def _ls_tree_paths(self, tip: str, paths: list[str]) -> dict[str, str]:
        out = self.git.run("ls-tree", "-r", "-z", "--full-tree", tip, "--", *paths,
                           env={"GIT_LITERAL_PATHSPECS": "1"})
        found: dict[str, str] = {}
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, path = rec.split(b"\t", 1)
            _mode, otype, oid = meta.decode().split(" ")
            if otype == "blob":
                found[path.decode("utf-8", "surrogateescape")] = oid
        return found

    def read_committed(self, path: str) -> bytes:
        with self._reading([path]):
            return super().read_committed(path)

    def read_many(self, paths: Iterable[str]) -> dict[str, bytes]:
        paths = list(dict.fromkeys(paths))
        with self._reading(paths):
            return super().read_many(paths)
