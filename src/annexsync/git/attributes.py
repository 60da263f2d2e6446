"""gitattributes lookups through one long-lived ``git check-attr --stdin -z`` process."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from subprocess import Popen

from annexsync.git.runner import Git, GitError

# Up to this many paths go through the long-lived process; more, through a one-shot
# process that reads them all at once (no round trip per path).
_FEW = 32


class CheckAttr:
    """Answers "what is attribute A of path P" for many paths with one git process."""

    def __init__(self, git: Git, attributes: Sequence[str], *,
                 keep_alive: bool = False) -> None:
        """``keep_alive``: a caller that asks again and again and calls :meth:`close`;
        :meth:`get_many` then answers a few paths through the long-lived process."""
        self._git = git
        self._attrs = list(attributes)
        self._keep_alive = keep_alive
        self._proc: Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _process(self) -> Popen[bytes]:
        if self._proc is None:
            self._proc = self._git.popen("check-attr", "--stdin", "-z", *self._attrs)
        return self._proc

    def get(self, path: str) -> dict[str, str | None]:
        """Attribute values for ``path``; None where unspecified."""
        return self._get_one(path)

    def get_many(self, paths: Sequence[str]) -> list[dict[str, str | None]]:
        """Attribute values for many paths: one one-shot ``check-attr`` for the batch;
        with ``keep_alive``, a few through the long-lived process (a caller asking per
        file must not start a git per file)."""
        if not paths:
            return []
        if self._keep_alive and len(paths) <= _FEW:
            return [self._get_one(p) for p in paths]
        payload = b"".join(p.encode("utf-8", "surrogateescape") + b"\0" for p in paths)
        out = self._git.run("check-attr", "--stdin", "-z", *self._attrs, input=payload)
        fields = out.split(b"\0")
        results: list[dict[str, str | None]] = []
        i = 0
        for _ in paths:
            values: dict[str, str | None] = {}
            for _ in self._attrs:
                name = fields[i + 1].decode()
                value = fields[i + 2].decode("utf-8", "surrogateescape")
                values[name] = None if value == "unspecified" else value
                i += 3
            results.append(values)
        return results

    def _get_one(self, path: str) -> dict[str, str | None]:
        with self._lock:
            proc = self._process()
            assert proc.stdin is not None
            proc.stdin.write(path.encode("utf-8", "surrogateescape") + b"\0")
            proc.stdin.flush()
            values: dict[str, str | None] = {}
            for _ in self._attrs:
                fields = [self._read_field(proc) for _ in range(3)]
                values[fields[1]] = None if fields[2] == "unspecified" else fields[2]
            return values

    @staticmethod
    def _read_field(proc: Popen[bytes]) -> str:
        assert proc.stdout is not None
        buf = bytearray()
        while True:
            c = proc.stdout.read(1)
            if not c:
                raise GitError(["check-attr"], -1, b"check-attr exited")
            if c == b"\0":
                return buf.decode("utf-8", "surrogateescape")
            buf += c

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait()
            for s in (proc.stdout, proc.stderr):
                if s:
                    s.close()
