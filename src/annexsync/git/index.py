"""The git index: listing it and changing it in batches.

Changes go through one ``git update-index -z --index-info`` process per batch. A
*private* index (``GIT_INDEX_FILE``) lets us build trees, for example for the
git-annex branch, without touching the user's index.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from annexsync.git.runner import Git, bulk_env

MODE_FILE = "100644"
MODE_EXECUTABLE = "100755"
MODE_SYMLINK = "120000"
NULL_OID = "0" * 40


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One ``update-index --index-info`` line: ``mode`` 0 removes the path."""

    mode: str
    oid: str
    path: str

    def encode(self) -> bytes:
        return f"{self.mode} {self.oid}\t".encode() + self.path.encode(
            "utf-8", "surrogateescape"
        ) + b"\0"


def removal(path: str) -> IndexEntry:
    """An entry that removes ``path`` from the index."""
    return IndexEntry("0", NULL_OID, path)


def update_index(git: Git, entries: Iterable[IndexEntry], index_file: str | None = None) -> int:
    """Apply entries to the index (the repository's, or ``index_file``); return how many."""
    payload = b"".join(e.encode() for e in entries)
    if not payload:
        return 0
    env = bulk_env({"GIT_INDEX_FILE": index_file} if index_file else None)
    git.run("update-index", "-z", "--index-info", input=payload, env=env)
    return payload.count(b"\0")


@dataclass(frozen=True, slots=True)
class StagedFile:
    mode: str
    oid: str
    stage: int
    path: str


def ls_files_staged(git: Git, paths: Sequence[str] = ()) -> Iterator[StagedFile]:
    """Every index entry (``ls-files -s -z``), optionally limited to pathspecs."""
    out = git.run("ls-files", "-s", "-z", "--full-name", "--", *paths)
    for rec in out.split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, oid, stage = meta.decode().split(" ")
        yield StagedFile(mode, oid, int(stage), path.decode("utf-8", "surrogateescape"))


def ls_files(git: Git, *flags: str, paths: Sequence[str] = ()) -> list[str]:
    """Paths from ``ls-files -z FLAGS -- PATHS`` (relative to the top)."""
    out = git.run("ls-files", "-z", "--full-name", *flags, "--", *paths)
    return [p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p]


def ls_files_tagged(git: Git, *flags: str, paths: Sequence[str] = ()
                    ) -> Iterator[tuple[str, str]]:
    """(tag, path) pairs from ``ls-files -t -z FLAGS -- PATHS``: ``?`` untracked,
    ``C`` modified (or deleted), ``H`` cached, ... (see ``git ls-files -t``)."""
    out = git.run("ls-files", "-t", "-z", "--full-name", *flags, "--", *paths)
    for rec in out.split(b"\0"):
        if rec:
            yield rec[:1].decode(), rec[2:].decode("utf-8", "surrogateescape")


@contextmanager
def private_index(git: Git, tree: str | None = None) -> Iterator[str]:
    """A temporary index file, optionally loaded with ``tree``; removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="annexsync-index.", dir=git.git_dir)
    os.close(fd)
    os.unlink(path)  # git wants to create it itself
    try:
        if tree is not None:
            git.run("read-tree", tree, env={"GIT_INDEX_FILE": path})
        yield path
    finally:
        for p in (path, path + ".lock"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
