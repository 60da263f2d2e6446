"""Refs, trees and commits through plumbing commands."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from annexsync.git.runner import Git, GitError


def rev_parse(git: Git, rev: str) -> str | None:
    """The object id ``rev`` names, or None if it does not exist."""
    proc = git.run_status("rev-parse", "--verify", "--quiet", rev + "^{object}")
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip()


def update_ref(git: Git, ref: str, new: str, old: str | None = None, message: str = "") -> None:
    """Set ``ref`` to ``new``; with ``old``, only if it still points there (compare-and-swap).

    ``old`` may be the null id to require that the ref does not exist yet.
    """
    args = ["update-ref"]
    if message:
        args += ["-m", message]
    args += [ref, new]
    if old is not None:
        args.append(old)
    git.run(*args)


def write_tree(git: Git, index_file: str | None = None) -> str:
    env = {"GIT_INDEX_FILE": index_file} if index_file else None
    return git.run("write-tree", env=env).decode().strip()


def commit_tree(git: Git, tree: str, parents: Sequence[str], message: str) -> str:
    """Create a commit object; the message is stored exactly as given."""
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    return git.run(*args, input=message.encode()).decode().strip()


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: str
    type: str
    oid: str
    path: str


def ls_tree(git: Git, treeish: str, *, recursive: bool = True,
            paths: Sequence[str] = ()) -> Iterator[TreeEntry]:
    """Entries of a tree (``ls-tree [-r] -z``)."""
    args = ["ls-tree", "-z", "--full-tree"]
    if recursive:
        args.append("-r")
    args += [treeish, "--", *paths]
    for rec in git.run(*args).split(b"\0"):
        if not rec:
            continue
        meta, path = rec.split(b"\t", 1)
        mode, otype, oid = meta.decode().split(" ")
        yield TreeEntry(mode, otype, oid, path.decode("utf-8", "surrogateescape"))


def for_each_ref(git: Git, *patterns: str) -> dict[str, str]:
    """Map of ref name to object id for refs matching the patterns."""
    out = git.run("for-each-ref", "--format=%(objectname) %(refname)", *patterns)
    refs: dict[str, str] = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        oid, name = line.split(" ", 1)
        refs[name] = oid
    return refs


def is_ancestor(git: Git, a: str, b: str) -> bool:
    """Is commit ``a`` an ancestor of (or equal to) ``b``?"""
    proc = git.run_status("merge-base", "--is-ancestor", a, b)
    if proc.returncode in (0, 1):
        return proc.returncode == 0
    raise GitError(["merge-base", "--is-ancestor"], proc.returncode, proc.stderr)


@dataclass(frozen=True, slots=True)
class TreeChange:
    old_mode: str
    new_mode: str
    old_oid: str
    new_oid: str
    status: str
    path: str


def diff_tree(git: Git, old: str, new: str) -> Iterator[TreeChange]:
    """Changed paths between two trees/commits (``diff-tree -r -z --raw --no-renames``)."""
    out = git.run("diff-tree", "-r", "-z", "--raw", "--no-renames", old, new)
    fields = out.split(b"\0")
    i = 0
    while i + 1 < len(fields):
        meta = fields[i].decode()
        if not meta.startswith(":"):
            i += 1
            continue
        om, nm, oo, no, st = meta[1:].split(" ")
        yield TreeChange(om, nm, oo, no, st, fields[i + 1].decode("utf-8", "surrogateescape"))
        i += 2
