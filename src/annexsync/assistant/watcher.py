"""The watcher service: inotify on the whole work tree, reporting paths that changed.

Theory of operation
-------------------
One inotify instance with a watch on every directory of the work tree except
``.git``. Raw events are turned into *notes* for the committer by
:func:`interpret` (pure): a path that may have changed, whether it may still be open
for writing (created but not yet closed, or found by a scan), and whether a
directory appeared (watch it and scan it at once, so a burst of files into a fresh
directory loses nothing) or disappeared.

* ``IN_CLOSE_WRITE``, ``IN_MOVED_TO``, ``IN_ATTRIB``, ``IN_DELETE``, ``IN_MOVED_FROM``: the path.
* ``IN_CREATE`` of a file: the path, "maybe open" (the writer has not closed it; a hard
  link or a copy never sends close-write, so the committer checks for writers).
* ``IN_Q_OVERFLOW``: events were lost: ask for a full rescan.
* Reaching the watch limit (``ENOSPC`` from ``inotify_add_watch``) raises an alert with
  the fix, and the watcher keeps going with what it has.

Paths are reported relative to the top; the committer decides what they mean by
looking at the disk, which also makes our own writes harmless.
"""

from __future__ import annotations

import errno
import os
import select
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from inotify_simple import INotify
from inotify_simple import flags as F

WATCH_MASK = (F.CLOSE_WRITE | F.CREATE | F.DELETE | F.MOVED_FROM | F.MOVED_TO | F.ATTRIB
              | F.DELETE_SELF | F.MOVE_SELF | F.ONLYDIR | F.EXCL_UNLINK)
WATCH_LIMIT_HINT = ("inotify watch limit reached: some directories are not watched. "
                    "Raise it with: sysctl fs.inotify.max_user_watches=524288")


@dataclass(frozen=True, slots=True)
class Note:
    """What the committer should look at."""

    path: str  # relative to the top ("" = the top itself)
    maybe_open: bool = False  # the file may still be being written
    new_dir: bool = False  # a directory appeared: watch and scan it
    gone_dir: bool = False  # a directory disappeared or moved away
    rescan: bool = False  # events were lost: rescan everything


def interpret(mask: int, directory: str, name: str) -> Note | None:
    """Pure: one raw inotify event (mask, watched dir, name) to a note, or None."""
    if mask & F.Q_OVERFLOW:
        return Note("", rescan=True)
    if mask & F.IGNORED:
        return None
    path = f"{directory}/{name}" if directory and name else (name or directory)
    if path == ".git" or path.startswith(".git/"):
        return None
    is_dir = bool(mask & F.ISDIR)
    if is_dir:
        if mask & (F.CREATE | F.MOVED_TO):
            return Note(path, new_dir=True)
        if mask & (F.DELETE | F.MOVED_FROM):
            return Note(path, gone_dir=True)
        return None
    if mask & (F.DELETE_SELF | F.MOVE_SELF):
        return None  # the parent's event covers it
    if mask & F.CREATE:
        return Note(path, maybe_open=True)
    if mask & (F.CLOSE_WRITE | F.MOVED_TO | F.ATTRIB | F.DELETE | F.MOVED_FROM):
        return Note(path)
    return None


class Watcher:
    """Recursive inotify watch of a work tree; calls ``on_note`` from its own thread."""

    def __init__(self, top: str, on_note: Callable[[Note], None],
                 on_alert: Callable[[str], None] | None = None) -> None:
        self.top = top.rstrip("/")
        self.on_note = on_note
        self.on_alert = on_alert or (lambda msg: None)
        self.inotify = INotify()
        self.wd_to_dir: dict[int, str] = {}
        self.dir_to_wd: dict[str, int] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._limit_alerted = False
        self.ready = threading.Event()

    # -- watches -------------------------------------------------------------------
    def _add_watch(self, rel: str) -> bool:
        full = os.path.join(self.top, rel) if rel else self.top
        try:
            wd = self.inotify.add_watch(full, WATCH_MASK)
        except OSError as e:
            if e.errno == errno.ENOSPC and not self._limit_alerted:
                self._limit_alerted = True
                self.on_alert(WATCH_LIMIT_HINT)
            return False
        old = self.wd_to_dir.get(wd)
        if old is not None and old != rel:
            self.dir_to_wd.pop(old, None)
        self.wd_to_dir[wd] = rel
        self.dir_to_wd[rel] = wd
        return True

    def _forget_tree(self, rel: str) -> None:
        prefix = rel + "/"
        for d in [d for d in self.dir_to_wd if d == rel or d.startswith(prefix)]:
            wd = self.dir_to_wd.pop(d)
            self.wd_to_dir.pop(wd, None)
            try:
                self.inotify.rm_watch(wd)
            except OSError:
                pass

    def watch_tree(self, rel: str, *, report_files: bool) -> Iterator[str]:
        """Watch ``rel`` and every directory below it; yield files found (if asked).

        The watch on a directory is added *before* it is listed, so a file created
        meanwhile is either listed or reported by inotify (possibly both).
        """
        stack = [rel]
        while stack:
            d = stack.pop()
            if d == ".git" or d.startswith(".git/"):
                continue
            self._add_watch(d)
            full = os.path.join(self.top, d) if d else self.top
            try:
                entries = list(os.scandir(full))
            except OSError:
                continue
            for e in entries:
                child = f"{d}/{e.name}" if d else e.name
                if child == ".git":
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(child)
                    elif report_files:
                        yield child
                except OSError:
                    continue

    # -- the loop ------------------------------------------------------------------
    def run(self) -> None:
        """Watch until :meth:`stop` (blocking; run it in a thread)."""
        for _ in self.watch_tree("", report_files=False):
            pass
        self.ready.set()
        fd = self.inotify.fileno()
        while True:
            r, _, _ = select.select([fd, self._stop_r], [], [])
            if self._stop_r in r:
                break
            for ev in self.inotify.read(timeout=0):
                directory = self.wd_to_dir.get(ev.wd)
                if directory is None and not ev.mask & F.Q_OVERFLOW:
                    continue
                note = interpret(ev.mask, directory or "", ev.name)
                if note is None:
                    continue
                if note.new_dir:
                    self.on_note(note)
                    for f in self.watch_tree(note.path, report_files=True):
                        self.on_note(Note(f, maybe_open=True))
                    continue
                if note.gone_dir:
                    self._forget_tree(note.path)
                if note.rescan:
                    for _ in self.watch_tree("", report_files=False):
                        pass
                self.on_note(note)

    def stop(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        self.inotify.close()
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass
