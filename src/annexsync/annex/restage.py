"""Restaging: refreshing git's index after we change unlocked files' content.

Theory of operation
-------------------
When an unlocked file is filled with content (or emptied back to a pointer) the file's
stat changes but the index still has the old stat, so ``git status`` would have to run
the clean filter on it to see it is unchanged. *Restaging* asks git to look again.

We share git-annex's restage log so either tool finishes what the other started:
``.git/annex/restage.log`` holds ``"<inode cache>:<file>"`` lines, appended under an
exclusive fcntl lock on ``restage.lck``. :func:`restage` moves the log to
``restage.old`` (appending if an interrupted run left one), releases the lock,
and feeds the files that are still exactly as we left them (same inode cache) to
``git update-index -q --refresh -z --stdin``, then deletes ``restage.old``.

``update-index --stdin`` *re-adds* the listed paths through the clean filter (it does
not merely refresh them), so a path is only fed when that is a no-op for its content:
its index entry is a pointer to key K and the work-tree file is either a pointer to K
or holds K's content per the inode caches of the keys database. Anything else is left
alone. The index may be locked by a git command running at that moment: we retry for
a while, then keep ``restage.old`` for the next run and say how to finish by hand.

Never run this while holding ``keysdb.lck``, the restage lock or an open keys database
transaction: ``update-index`` runs our filter process, which needs them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from annexsync.annex.keys import parse_pointer
from annexsync.annex.keysdb import InodeCache, KeysDb
from annexsync.annex.locks import lock_file
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.worktree import read_pointer_file, staged_literal
from annexsync.git.runner import GitError

UNABLE_TO_RESTAGE = (
    "git status will show some files to be modified, since content availability has "
    "changed and annexsync was unable to update the index. This is only a cosmetic "
    "problem affecting git status; git add, git commit, etc won't be affected. To fix "
    "the git status display, you can run: annexsync restage")


@dataclass
class RestageResult:
    restaged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    warning: str | None = None


def _paths(repo: AnnexRepo) -> tuple[Path, Path, Path]:
    return (repo.annex_path("restage.log"), repo.annex_path("restage.old"),
            repo.annex_path("restage.lck"))


def format_entry(file: str, ic: InodeCache) -> bytes:
    """One restage log line (git-annex's ``formatRestageLog``), without the newline."""
    return ic.format().encode() + b":" + file.encode("utf-8", "surrogateescape")


def parse_entry(line: bytes) -> tuple[str, InodeCache] | None:
    ics, sep, f = line.partition(b":")
    if not sep or not f:
        return None
    ic = InodeCache.parse(ics.decode("ascii", "replace"))
    if ic is None:
        return None
    return f.decode("utf-8", "surrogateescape"), ic


def log_restage(repo: AnnexRepo, entries: Iterable[tuple[str, InodeCache]]) -> int:
    """Append files to the restage log; returns how many."""
    lines = [format_entry(f, ic) + b"\n" for f, ic in entries if "\n" not in f]
    if not lines:
        return 0
    logf, _old, lck = _paths(repo)
    with lock_file(lck, exclusive=True), open(logf, "ab") as fh:
        fh.write(b"".join(lines))
    return len(lines)


def pending(repo: AnnexRepo) -> bool:
    """Is there anything in the restage logs?"""
    logf, old, _ = _paths(repo)
    return any(p.exists() and p.stat().st_size > 0 for p in (logf, old))


def restage(repo: AnnexRepo, *, attempts: int = 40) -> RestageResult:
    """Refresh the index entries of the files in the restage log (see module doc)."""
    logf, old, lck = _paths(repo)
    result = RestageResult()
    if not pending(repo):
        return result
    with lock_file(lck, exclusive=True):
        if logf.exists():
            data = logf.read_bytes()
            if old.exists():
                with open(old, "ab") as fh:
                    fh.write(data)
                os.unlink(logf)
            else:
                os.rename(logf, old)
    entries: dict[str, InodeCache] = {}
    try:
        raw = old.read_bytes()
    except FileNotFoundError:
        raw = b""
    for line in raw.split(b"\n"):
        parsed = parse_entry(line)
        if parsed is not None:
            entries[parsed[0]] = parsed[1]
    candidates = [f for f, ic in entries.items()
                  if (cur := InodeCache.of_path(repo.top / f)) is not None and cur.same(ic)]
    feed = _safe_to_restage(repo, candidates)
    result.skipped = [f for f in entries if f not in feed]
    if feed:
        ok, err = _update_index(repo, feed, attempts)
        if not ok:
            result.warning = UNABLE_TO_RESTAGE + (f" ({err})" if err else "")
            return result
    result.restaged = feed
    try:
        os.unlink(old)
    except FileNotFoundError:
        pass
    return result


def refresh_paths(repo: AnnexRepo, files: list[str], *, attempts: int = 40) -> str | None:
    """Have git re-read these just-staged unlocked files (their index entries were
    written without stat info); returns a warning when the index stayed locked."""
    files = [f for f in files if (repo.top / f).exists()]
    if not files:
        return None
    ok, err = _update_index(repo, files, attempts)
    return None if ok else UNABLE_TO_RESTAGE + (f" ({err})" if err else "")


def _safe_to_restage(repo: AnnexRepo, files: list[str]) -> list[str]:
    """Files whose index entry is a pointer to the key their work-tree file holds."""
    if not files:
        return []
    staged = {s.path: s.oid for s in staged_literal(repo.git, files)
              if s.stage == 0 and s.mode in ("100644", "100755")}
    blobs = {oid: (obj.data if obj else b"")
             for oid, obj in repo.catfile.get_many(set(staged.values()))}
    ok: list[str] = []
    with KeysDb(repo) as db:
        for f in files:
            oid = staged.get(f)
            key = parse_pointer(blobs.get(oid, b"")) if oid else None
            if key is None:
                continue
            path = repo.top / f
            if db.is_unmodified_cheap(key, InodeCache.of_path(path)) or \
                    read_pointer_file(path) == key:
                ok.append(f)
    return ok


def _update_index(repo: AnnexRepo, files: list[str], attempts: int) -> tuple[bool, str]:
    payload = b"".join(f.encode("utf-8", "surrogateescape") + b"\0" for f in files)
    delay = 0.02
    err = ""
    for _ in range(attempts):
        try:
            repo.git.run("-c", "core.safecrlf=false", "update-index", "-q", "--refresh", "-z",
                         "--stdin", input=payload)
            return True, ""
        except GitError as e:
            err = e.stderr.splitlines()[-1] if e.stderr else str(e)
            if "index.lock" not in e.stderr:
                return False, err
        time.sleep(delay)  # another git command holds the index; back off and retry
        delay = min(delay * 1.5, 0.25)
    return False, err
