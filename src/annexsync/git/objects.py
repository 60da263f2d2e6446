"""Writing git objects in bulk.

Blobs are hashed here (a git blob id is sha1 of ``blob <len>\\0<data>``) and streamed to
one ``git fast-import`` process, which packs them: 10,000 blobs cost one process and
one pack instead of 10,000 processes and loose files. Work-tree files that go into git
as they are use one ``hash-object -w --stdin-paths`` process for the whole batch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zlib
from collections.abc import Iterable, Sequence
from subprocess import Popen

from annexsync.git.runner import Git, GitError, bulk_env


def blob_oid(data: bytes) -> str:
    """The object id git gives a blob with this content."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


class BlobWriter:
    """Writes blobs into the object database.

    A few small blobs are written as loose objects directly (no process at all);
    past :attr:`LOOSE_LIMIT` blobs everything streams into one ``git fast-import``,
    which packs them. Blobs are visible to other git processes after :meth:`flush`.
    """

    LOOSE_LIMIT = 32

    def __init__(self, git: Git) -> None:
        self._git = git
        self._proc: Popen[bytes] | None = None
        self._written: set[str] = set()
        self._pending: list[tuple[str, bytes]] = []

    def add(self, data: bytes) -> str:
        """Queue a blob; return its object id."""
        oid = blob_oid(data)
        if oid in self._written:
            return oid
        self._written.add(oid)
        if self._proc is None and len(self._pending) < self.LOOSE_LIMIT and len(data) < 65536:
            self._pending.append((oid, data))
            return oid
        if self._proc is None:
            self._proc = self._git.popen("fast-import", "--quiet", "--done", stdout=None,
                                         env=bulk_env())
            for _, pending in self._pending:
                self._send(pending)
            self._pending.clear()
        self._send(data)
        return oid

    def _send(self, data: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"blob\ndata %d\n" % len(data) + data + b"\n")

    def flush(self) -> None:
        """Make every queued blob part of the repository."""
        proc, self._proc = self._proc, None
        pending, self._pending = self._pending, []
        self._written.clear()
        for oid, data in pending:
            write_loose_object(self._git.git_dir, oid, b"blob", data)
        if proc is None:
            return
        assert proc.stdin is not None
        try:
            proc.stdin.write(b"done\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
        stderr = proc.stderr.read() if proc.stderr else b""
        if proc.wait() != 0:
            raise GitError(["fast-import"], proc.returncode, stderr)
        if proc.stderr:
            proc.stderr.close()

    close = flush

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.flush()
        elif self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None


def write_loose_object(git_dir: os.PathLike[str] | str, oid: str, otype: bytes,
                       data: bytes) -> None:
    """Write one loose object (zlib-compressed, temp file + rename, read-only) if absent."""
    objdir = os.path.join(git_dir, "objects", oid[:2])
    path = os.path.join(objdir, oid[2:])
    if os.path.exists(path):
        return
    os.makedirs(objdir, exist_ok=True)
    body = zlib.compress(otype + b" %d\0" % len(data) + data, 1)
    fd, tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=objdir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def hash_paths(git: Git, paths: Sequence[str], *, write: bool = True) -> list[str]:
    """Blob ids of work-tree files (relative to the top), written to the odb, no filters.

    One ``hash-object --stdin-paths`` process for the whole list.
    """
    if not paths:
        return []
    for p in paths:
        if "\n" in p:
            raise ValueError(f"cannot hash a path containing a newline: {p!r}")
    args = ["hash-object", "--no-filters", "--stdin-paths"]
    if write:
        args.insert(1, "-w")
    out = git.run(*args, env=bulk_env(), input=b"".join(p.encode("utf-8", "surrogateescape") + b"\n"
                                        for p in paths))
    oids = out.decode().split()
    if len(oids) != len(paths):
        raise GitError(args, -1, b"hash-object returned a wrong number of ids")
    return oids


def write_blobs(git: Git, blobs: Iterable[bytes]) -> list[str]:
    """Write several blobs with one fast-import process; return their ids."""
    with BlobWriter(git) as w:
        return [w.add(b) for b in blobs]
