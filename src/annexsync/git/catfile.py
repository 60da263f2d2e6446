"""Reading git objects through one long-lived ``git cat-file --batch`` process.

Theory of operation: the process is started on first use and kept until :meth:`close`.
Requests are object names (preferably object ids: resolving ``ref:path`` makes git scan
large trees linearly on every request, see the references). A lock makes one
request/response exchange atomic, so the reader can be shared between threads.

:meth:`CatFile.get_many` pipelines a whole list of requests: a writer thread feeds
stdin while this thread parses stdout, which is what makes reading 10,000 blobs take
tens of milliseconds instead of seconds. :func:`parse_tree` decodes a tree object read
this way, so that a caller can walk down to a few paths, reading only the trees on
their way, instead of listing a whole tree with ``ls-tree -r``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from subprocess import Popen
from typing import IO

from annexsync.git.runner import Git, GitError


@dataclass(frozen=True, slots=True)
class GitObject:
    oid: str
    type: str
    data: bytes


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise GitError(["cat-file", "--batch"], -1, b"cat-file ended early")
    return data


class CatFile:
    """A shared ``cat-file --batch`` reader."""

    def __init__(self, git: Git) -> None:
        self._git = git
        self._proc: Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _process(self) -> Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = self._git.popen("cat-file", "--batch")
        return self._proc

    def _read_reply(self, proc: Popen[bytes]) -> GitObject | None:
        assert proc.stdout is not None
        header = proc.stdout.readline()
        if not header:
            raise GitError(["cat-file", "--batch"], -1, b"cat-file exited")
        parts = header.rstrip(b"\n").split(b" ")
        if len(parts) == 2 and parts[1] in (b"missing", b"ambiguous"):
            return None
        oid, otype, size = parts[0].decode(), parts[1].decode(), int(parts[2])
        data = _read_exact(proc.stdout, size)
        _read_exact(proc.stdout, 1)  # the newline after the content
        return GitObject(oid, otype, data)

    def get(self, name: str) -> GitObject | None:
        """Return the object named ``name`` or None if it does not exist."""
        if "\n" in name:
            raise ValueError("object name contains a newline")
        with self._lock:
            proc = self._process()
            assert proc.stdin is not None
            proc.stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
            proc.stdin.flush()
            return self._read_reply(proc)

    def get_blob(self, name: str) -> bytes | None:
        """Contents of blob ``name``; None when missing (or not a blob)."""
        obj = self.get(name)
        if obj is None or obj.type != "blob":
            return None
        return obj.data

    def get_many(self, names: Iterable[str]) -> list[tuple[str, GitObject | None]]:
        """Return ``(name, object)`` for each name, pipelining the requests."""
        names = list(names)
        if not names:
            return []
        for n in names:
            if "\n" in n:
                raise ValueError("object name contains a newline")
        with self._lock:
            proc = self._process()
            assert proc.stdin is not None
            stdin = proc.stdin
            payload = b"".join(n.encode("utf-8", "surrogateescape") + b"\n" for n in names)

            def feed() -> None:
                try:
                    stdin.write(payload)
                    stdin.flush()
                except (BrokenPipeError, ValueError):
                    pass

            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
            try:
                return [(n, self._read_reply(proc)) for n in names]
            finally:
                writer.join()

    def close(self) -> None:
        """Stop the process."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin:
                proc.stdin.close()
            proc.wait()
            for s in (proc.stdout, proc.stderr):
                if s:
                    s.close()

    def __enter__(self) -> CatFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_tree(data: bytes) -> dict[bytes, tuple[bytes, str]]:
    """Entries of a raw tree object: name -> (mode, hex object id).

    Modes are as git stores them (``40000`` for a tree, ``100644``, ``120000``, …).
    """
    out: dict[bytes, tuple[bytes, str]] = {}
    pos = 0
    end = len(data)
    find = data.find
    while pos < end:
        sp = find(b" ", pos)
        nul = find(b"\0", sp)
        if sp < 0 or nul < 0 or nul + 21 > end:
            raise GitError(["cat-file", "--batch"], -1, b"malformed tree object")
        out[data[sp + 1:nul]] = (data[pos:sp], data[nul + 1:nul + 21].hex())
        pos = nul + 21
    return out


def check_many(git: Git, names: Iterable[str]) -> dict[str, tuple[str, int] | None]:
    """Type and size of many objects with one ``cat-file --batch-check`` process."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    out = git.run("cat-file", "--batch-check",
                  input=b"".join(n.encode() + b"\n" for n in names))
    result: dict[str, tuple[str, int] | None] = {}
    for n, line in zip(names, out.decode().splitlines(), strict=True):
        parts = line.split(" ")
        result[n] = (parts[1], int(parts[2])) if len(parts) == 3 else None
    return result
