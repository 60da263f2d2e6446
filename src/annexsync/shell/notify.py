"""``notifychanges``: a line each time a branch of this repository moves.

Theory of operation
-------------------
The protocol is git-annex-shell's (its remotedaemon is a client, and so is ours):
once the watches are in place the server writes ``READY``; after that, whenever
branches change, one line ``CHANGED SHA…`` carrying the new values of the refs that
moved. Writes that come close together (a push updates several branches) are
gathered for :data:`GATHER_MS` (20 ms; a push updates all its refs well within it)
into one line. The client never sends anything; end of file on standard input (the
client or its ssh connection went away) ends the command, so no process outlives its
connection.

inotify watches ``refs/heads`` recursively (branch names have slashes; new
directories are watched as they appear) and the git directory for ``packed-refs``.
git writes a ref to ``NAME.lock`` and renames it into place, so a ref is read only
when its final name appears (``IN_MOVED_TO``/``IN_CLOSE_WRITE``), never half
written. A rewritten ``packed-refs`` is read for the branches that have no loose
ref. Only values that differ from the last one seen of that branch are sent (``git
pack-refs`` moves nothing). If the kernel's event queue overflows, every branch is
read again and whatever moved is sent.
Only ``refs/heads`` is watched (git-annex watches all of ``refs/``): the client
fetches branches, so a moved remote-tracking ref or tag would only cost it a
pointless fetch.
"""

from __future__ import annotations

import os
import re
import select
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from inotify_simple import INotify
from inotify_simple import flags as F

GATHER_MS = 20
_REF_MASK = F.CLOSE_WRITE | F.MOVED_TO | F.CREATE | F.ONLYDIR
_DIR_MASK = F.MOVED_TO | F.CLOSE_WRITE
_SHA_RE = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
_MAX_REF_BYTES = 4096


def read_ref_file(path: str) -> bytes | None:
    """The object id in a loose ref file; None if unreadable or symbolic."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_REF_BYTES).strip()
    except OSError:
        return None
    return data if _SHA_RE.fullmatch(data) else None


def read_packed_heads(git_dir: Path) -> dict[bytes, bytes]:
    """``refs/heads/…`` → object id from ``packed-refs`` (empty when there is none)."""
    out: dict[bytes, bytes] = {}
    try:
        with open(git_dir / "packed-refs", "rb") as f:
            for line in f:
                sha, _, name = line.rstrip(b"\n").partition(b" ")
                if name.startswith(b"refs/heads/") and _SHA_RE.fullmatch(sha):
                    out[name] = sha
    except OSError:
        pass
    return out


class RefWatcher:
    """inotify on one repository's branches; :meth:`changed` turns events into ids.

    ``values`` holds the last value seen of every branch, so that a rewrite that
    moves nothing (``git pack-refs`` moving loose refs into ``packed-refs``, a ref
    rewritten with the value it had) is not reported.
    """

    def __init__(self, git_dir: Path) -> None:
        self.git_dir = git_dir
        self.heads = git_dir / "refs" / "heads"
        self.ino = INotify()
        self._dirs: dict[int, str] = {}
        self._git_dir_wd = self.ino.add_watch(str(git_dir), _DIR_MASK)
        self.heads.mkdir(parents=True, exist_ok=True)
        self.values: dict[str, bytes] = {}
        self._watch_tree(str(self.heads))
        self.values = self._current()

    def fileno(self) -> int:
        return self.ino.fileno()

    def close(self) -> None:
        self.ino.close()

    def _name(self, path: str) -> str:
        return os.path.relpath(path, self.git_dir)

    def _watch_tree(self, d: str) -> list[str]:
        """Watch ``d`` and its subdirectories; the ref files already in them."""
        try:
            wd = self.ino.add_watch(d, _REF_MASK)
        except OSError:
            return []
        self._dirs[wd] = d
        found: list[str] = []
        try:
            for e in os.scandir(d):
                if e.is_dir(follow_symlinks=False):
                    found += self._watch_tree(e.path)
                elif not e.name.endswith(".lock"):
                    found.append(e.path)
        except OSError:
            pass
        return found

    def _current(self) -> dict[str, bytes]:
        """Every branch's value now (a loose ref hides its packed value)."""
        values = {k.decode("utf-8", "surrogateescape"): v
                  for k, v in read_packed_heads(self.git_dir).items()}
        for root, _dirs, files in os.walk(self.heads):
            for name in files:
                path = os.path.join(root, name)
                if not name.endswith(".lock") and (s := read_ref_file(path)):
                    values[self._name(path)] = s
        return values

    def _moved(self, values: dict[str, bytes]) -> list[bytes]:
        moved = [v for k, v in values.items() if self.values.get(k) != v]
        self.values.update(values)
        return moved

    def changed(self, timeout_ms: int = 0, gather_ms: int = GATHER_MS) -> list[bytes]:
        """Read pending events (waiting ``gather_ms`` for more); the new object ids."""
        shas: list[bytes] = []
        paths: list[str] = []
        for ev in self.ino.read(timeout=timeout_ms, read_delay=gather_ms):
            if ev.mask & F.Q_OVERFLOW:
                shas += self._moved(self._current())
                continue
            if ev.wd == self._git_dir_wd:
                if ev.name == "packed-refs":
                    packed = read_packed_heads(self.git_dir)
                    shas += self._moved({
                        name: v for k, v in packed.items()
                        if not os.path.exists(self.git_dir / (name := k.decode(
                            "utf-8", "surrogateescape")))})
                continue
            d = self._dirs.get(ev.wd)
            if d is None or not ev.name or ev.name.endswith(".lock"):
                if ev.mask & F.IGNORED:
                    self._dirs.pop(ev.wd, None)
                continue
            path = os.path.join(d, ev.name)
            if ev.mask & F.ISDIR:
                paths += self._watch_tree(path)  # refs may be written before the watch
            elif ev.mask & (F.MOVED_TO | F.CLOSE_WRITE):
                paths.append(path)
        for p in dict.fromkeys(paths):
            if (s := read_ref_file(p)) is not None:
                shas += self._moved({self._name(p): s})
        return list(dict.fromkeys(shas))


def changed_line(shas: Iterable[bytes]) -> bytes:
    """The protocol line for these object ids."""
    return b"CHANGED " + b" ".join(shas) + b"\n"


def serve_notifychanges(git_dir: Path, stdin_fd: int, out: BinaryIO) -> int:
    """Run the ``notifychanges`` protocol until the client closes standard input."""
    watcher = RefWatcher(git_dir)
    try:
        out.write(b"READY\n")
        out.flush()
        while True:
            r, _, _ = select.select([stdin_fd, watcher.fileno()], [], [])
            if stdin_fd in r:
                try:
                    if not os.read(stdin_fd, 4096):
                        return 0
                except OSError:
                    return 0
            if watcher.fileno() in r:
                shas = watcher.changed()
                if shas:
                    out.write(changed_line(shas))
                    out.flush()
    except BrokenPipeError:
        return 0
    finally:
        watcher.close()
