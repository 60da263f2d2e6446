"""Merging another branch into the checked-out branch, resolving every conflict.

Theory of operation
-------------------
``git merge`` does the merge (it knows how to update the work tree safely). When
it stops on conflicts, :func:`resolve_conflicts` reads the unmerged index entries,
asks :func:`annexsync.sync.variants.resolve` what each path becomes, writes the
result into the index and the work tree, and commits the merge ("git-annex
automatic merge conflict fix", like git-annex). A merge interrupted by a crash
(``MERGE_HEAD`` present) is finished the same way by the next sync.

git records some conflicts under other names: a file against a directory leaves
the file's side at ``P~BRANCH`` (its variant is named after that path, as
git-annex names it), and a regular file against a symlink at ``P`` (a plain file
against a locked annexed one) moves the regular file's side to ``P~BRANCH``;
:func:`fold_renamed_sides` puts that side back at ``P`` so the plain file keeps
the name, which is git-annex's result.

Annexed variants are written as relative symlinks (locked) or pointer files with
their content when present (unlocked); plain variants get their blob's content.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from annexsync.annex.keys import Key, parse_pointer, parse_symlink_target, symlink_target
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.errors import AnnexError
from annexsync.git.index import IndexEntry, ls_files_staged, update_index
from annexsync.git.refs import rev_parse
from annexsync.sync.variants import Entry, Side, resolve

CONFLICT_FIX_MESSAGE = "git-annex automatic merge conflict fix"


@dataclass
class MergeResult:
    ref: str
    merged: bool  # something new came in
    conflicts: list[str]  # paths that were resolved automatically


class MergeError(AnnexError):
    """git could not merge (for a reason other than content conflicts)."""


def merge_in_progress(repo: AnnexRepo) -> bool:
    return (repo.git_dir / "MERGE_HEAD").exists()


def merge_ref(repo: AnnexRepo, ref: str, *, message: str | None = None,
              run_hooks: bool = True) -> MergeResult:
    """Merge ``ref`` into HEAD; conflicts are resolved automatically.

    ``run_hooks`` False runs ``git merge`` with no hooks: only for a caller that does
    their work itself (see :func:`annexsync.annex.init.hooks_are_ours_only`)."""
    git = repo.git
    head = rev_parse(git, "HEAD")
    other = rev_parse(git, ref)
    if other is None or other == head:
        return MergeResult(ref, False, [])
    if head is None:
        # Unborn branch (fresh clone of an empty repo that got content): take theirs.
        proc = git.run_status("reset", "-q", "--hard", other)
        if proc.returncode != 0:
            raise MergeError(f"cannot check out {ref}: {_last_line(proc.stderr)}")
        return MergeResult(ref, True, [])
    if git.run_status("merge-base", "--is-ancestor", other, head).returncode == 0:
        return MergeResult(ref, False, [])
    args = ["-c", "merge.directoryRenames=false", "merge", "--no-edit",
            "--allow-unrelated-histories", "-q"]
    if not run_hooks:
        args = ["-c", "core.hooksPath=/dev/null", *args]
    if message:
        args += ["-m", message]
    proc = git.run_status(*args, ref, env={"GIT_MERGE_AUTOEDIT": "no"})
    if proc.returncode == 0:
        return MergeResult(ref, True, [])
    if not merge_in_progress(repo) and not _unmerged(repo):
        raise MergeError(f"merging {ref} failed: {_last_line(proc.stderr or proc.stdout)}")
    conflicts = resolve_conflicts(repo)
    return MergeResult(ref, True, conflicts)


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "unknown error"


def _unmerged(repo: AnnexRepo) -> dict[str, dict[int, tuple[str, str]]]:
    out: dict[str, dict[int, tuple[str, str]]] = {}
    for s in ls_files_staged(repo.git, ()):
        if s.stage:
            out.setdefault(s.path, {})[s.stage] = (s.mode, s.oid)
    return out


def fold_renamed_sides(unmerged: dict[str, dict[int, tuple[str, str]]]
                       ) -> dict[str, dict[int, tuple[str, str]]]:
    """Put back the side git moved away in a "distinct types" conflict.

    When one side has a regular file and the other a symlink at ``P`` (a plain file
    against a locked annexed file), git's merge records the regular file's side at
    ``P~BRANCH`` (``P~HEAD`` for ours). git-annex then resolves ``P`` by grafting in
    the other side's ``P`` from its branch and drops ``P~BRANCH``, so the plain
    file keeps its name. Folding ``P~BRANCH``'s lone side back into ``P`` gives
    the same result. A ``P~BRANCH`` whose ``P`` is not conflicted (a file against a
    directory) is left alone: git-annex names that variant after ``P~BRANCH`` too.
    """
    out = {p: dict(stages) for p, stages in unmerged.items()}
    for q in sorted(unmerged):
        base, sep, suffix = q.rpartition("~")
        if not sep or not base or "/" in suffix or base not in out or q not in out:
            continue
        sides = {2, 3} & set(out[q])
        if len(sides) != 1:
            continue
        side = sides.pop()
        if side in out[base]:
            continue
        out[base][side] = out[q][side]
        del out[q]
    return out


def resolve_conflicts(repo: AnnexRepo) -> list[str]:
    """Resolve every unmerged path, commit the merge; return the resolved paths."""
    git = repo.git
    unmerged = _unmerged(repo)
    if unmerged:
        oids = {oid for stages in unmerged.values() for _, oid in stages.values()}
        blobs = {oid: (obj.data if obj else b"") for oid, obj in repo.catfile.get_many(oids)}
        staged_paths = {s.path for s in ls_files_staged(repo.git, ()) if s.stage == 0}
        removals = [IndexEntry("0", "0" * 40, path) for path in sorted(unmerged)]
        additions: list[Entry] = []
        for path, stages in sorted(fold_renamed_sides(unmerged).items()):
            ours = _side(stages.get(2), blobs)
            theirs = _side(stages.get(3), blobs)
            prefix = path + "/"
            directory_here = any(p.startswith(prefix) for p in staged_paths)
            additions.extend(resolve(path, ours, theirs, directory_here=directory_here))
        update_index(git, removals)
        update_index(git, [IndexEntry(e.mode, e.oid, e.path) for e in additions])
        _write_worktree(repo, unmerged, additions, blobs)
    if merge_in_progress(repo) or unmerged:
        proc = git.run_status("-c", "core.hooksPath=/dev/null", "commit", "--no-verify", "-q",
                              "-m", CONFLICT_FIX_MESSAGE)
        if proc.returncode != 0 and merge_in_progress(repo):
            raise MergeError(f"committing the merge failed: {_last_line(proc.stderr)}")
    return sorted(unmerged)


def _side(stage: tuple[str, str] | None, blobs: dict[str, bytes]) -> Side | None:
    if stage is None:
        return None
    mode, oid = stage
    data = blobs.get(oid, b"")
    key: Key | None = None
    if mode == "120000":
        key = parse_symlink_target(data)
    elif mode in ("100644", "100755") and len(data) <= 32768:
        key = parse_pointer(data)
    return Side(mode, oid, key)


def _write_worktree(repo: AnnexRepo, unmerged: dict[str, dict[int, tuple[str, str]]],
                    entries: list[Entry], blobs: dict[str, bytes]) -> None:
    top = repo.top
    keep = {e.path for e in entries}
    for path in unmerged:
        # git leaves the conflicted file, or "path~HEAD"/"path~branch" next to a directory.
        p = top / path
        if path not in keep and (p.is_symlink() or p.is_file()):
            p.unlink()
        parent = p.parent
        if parent.is_dir():
            for sibling in parent.iterdir():
                if sibling.name.startswith(p.name + "~") and (sibling.is_file()
                                                             or sibling.is_symlink()):
                    sibling.unlink()
    store = ObjectStore(repo.annex_dir, bare=repo.bare)
    for e in entries:
        dest = top / e.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        if e.mode == "120000":
            target = (symlink_target(e.key, e.path) if e.key is not None
                      else blobs[e.oid].decode("utf-8", "surrogateescape"))
            os.symlink(target, dest)
        else:
            content = blobs.get(e.oid, b"")
            if e.key is not None:
                obj = store.find(e.key)
                if obj is not None:
                    content = Path(obj).read_bytes()
            _write_file(dest, content, executable=e.mode == "100755")
    # Stat info of the rewritten files: let git refresh it so status is clean.
    repo.git.run_status("update-index", "-q", "--refresh")


def _write_file(dest: Path, content: bytes, *, executable: bool) -> None:
    tmp = dest.with_name(f".annexsync-tmp.{os.getpid()}.{dest.name}"[:255])
    with open(tmp, "wb") as f:
        f.write(content)
    os.chmod(tmp, 0o755 if executable else 0o644)
    os.replace(tmp, dest)
