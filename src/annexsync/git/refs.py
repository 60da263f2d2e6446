"""Refs, trees and commits through plumbing commands."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from annexsync.git.runner import Git, GitError


def rev_parse(git: Git, rev: str) -> str | None:
    """The object id ``rev`` names, or None if it does not exist."""
    proc = git.run_status("rev-parse", "--verify", "--quiet", rev + "^{object}")
    if proc.returncode != 0:
        return None
    return proc.stdout.decode().strip()


_OID_LENGTHS = (40, 64)  # SHA-1, SHA-256
_PACKED: dict[Path, tuple[tuple[int, int, int], dict[str, str]]] = {}


def read_ref_file(git_dir: Path, ref: str) -> str | None:
    """``ref``'s object id from the files backend, without a git process: the loose ref
    file, else ``packed-refs`` (parsed once per version of that file: ``git gc`` and our
    own maintenance pack refs, and a ref asked for per key must not cost a git each
    time). None: no such ref. Raises LookupError where files cannot answer (a symbolic
    or unreadable ref, a linked worktree, a reftable repository): ask git then."""
    try:
        data: bytes | None = (git_dir / ref).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        data = None
    if data is not None:
        oid = data.strip().decode("ascii", "replace")
        if len(oid) in _OID_LENGTHS and all(c in "0123456789abcdef" for c in oid):
            return oid
        raise LookupError(ref)
    if (git_dir / "commondir").exists() or (git_dir / "reftable").is_dir():
        raise LookupError(ref)
    path = git_dir / "packed-refs"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    sig = (st.st_ino, st.st_size, st.st_mtime_ns)
    cached = _PACKED.get(path)
    if cached is None or cached[0] != sig:
        refs: dict[str, str] = {}
        for line in path.read_bytes().splitlines():
            if not line or line[:1] in (b"#", b"^"):
                continue  # the header, and peeled values of annotated tags
            oid_b, _, name = line.partition(b" ")
            refs[name.decode("utf-8", "surrogateescape")] = oid_b.decode("ascii", "replace")
        cached = _PACKED[path] = (sig, refs)
    return cached[1].get(ref)


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
