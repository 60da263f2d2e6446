"""Writing git objects in bulk.

Blobs are hashed here (a git blob id is sha1 of ``blob <len>\\0<data>``) and streamed to
one ``git fast-import`` process, which packs them: 10,000 blobs cost one process and
one pack instead of 10,000 processes and loose files. Work-tree files that go into git
as they are use one ``hash-object -w --stdin-paths`` process for the whole batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from subprocess import Popen

from annexsync.git.runner import Git, GitError


def blob_oid(data: bytes) -> str:
    """The object id git gives a blob with this content."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


class BlobWriter:
    """Streams blobs into the object database through ``git fast-import``.

    Blobs become visible to other git processes after :meth:`close` (or :meth:`flush`).
    """

    def __init__(self, git: Git) -> None:
        self._git = git
        self._proc: Popen[bytes] | None = None
        self._written: set[str] = set()

    def add(self, data: bytes) -> str:
        """Queue a blob; return its object id."""
        oid = blob_oid(data)
        if oid in self._written:
            return oid
        if self._proc is None:
            self._proc = self._git.popen(
                "fast-import", "--quiet", "--done", stdout=None
            )
        assert self._proc.stdin is not None
        self._proc.stdin.write(b"blob\ndata %d\n" % len(data) + data + b"\n")
        self._written.add(oid)
        return oid

    def flush(self) -> None:
        """Finish the pack so every queued blob is in the repository."""
        proc, self._proc = self._proc, None
        self._written.clear()
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
    out = git.run(*args, input=b"".join(p.encode("utf-8", "surrogateescape") + b"\n"
                                        for p in paths))
    oids = out.decode().split()
    if len(oids) != len(paths):
        raise GitError(args, -1, b"hash-object returned a wrong number of ids")
    return oids


def write_blobs(git: Git, blobs: Iterable[bytes]) -> list[str]:
    """Write several blobs with one fast-import process; return their ids."""
    with BlobWriter(git) as w:
        return [w.add(b) for b in blobs]
