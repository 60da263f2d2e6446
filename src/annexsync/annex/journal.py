"""The journal: uncommitted changes to git-annex branch files, shared with git-annex.

Theory of operation
-------------------
A change to a branch file is first written, whole, to
``.git/annex/journal/<mangled path>`` (``_`` -> ``__``, ``/`` -> ``_``). While a journal
file exists it *is* the content of that branch file. Writers hold an exclusive fcntl
lock on ``.git/annex/journal.lck`` and write through a temp file in
``.git/annex/othertmp`` plus rename, exactly as git-annex does, so git-annex and
annexsync can change one repository at the same time. A commit stages every journal
file into the branch and then deletes them (see :mod:`annexsync.annex.branch`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from annexsync.annex.locks import Lock, lock_file
from annexsync.annex.logs import mangle_journal_name, unmangle_journal_name


class Journal:
    """The journal directory of one repository."""

    def __init__(self, annex_dir: Path) -> None:
        self.annex_dir = annex_dir
        self.dir = annex_dir / "journal"
        self.lock_path = annex_dir / "journal.lck"
        self.tmp_dir = annex_dir / "othertmp"
        self._held: Lock | None = None
        self._depth = 0
        self._thread_lock = threading.RLock()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the journal lock (re-entrant within this object)."""
        with self._thread_lock:
            if self._depth == 0:
                # Not parents=True: for another repository (a drive that may have
                # been unplugged) we must not recreate it in an empty mount point.
                self.annex_dir.mkdir(exist_ok=True)
                self._held = lock_file(self.lock_path, exclusive=True, blocking=True)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._held is not None:
                    self._held.release()
                    self._held = None

    def path_for(self, branch_path: str) -> Path:
        return self.dir / mangle_journal_name(branch_path)

    def read(self, branch_path: str) -> bytes | None:
        """The journalled content of a branch file, or None if it is not journalled."""
        try:
            data = self.path_for(branch_path).read_bytes()
        except FileNotFoundError:
            return None
        # A reader drops a trailing incomplete line (an append may be in progress).
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
        return data

    def write(self, branch_path: str, content: bytes) -> None:
        """Replace the journalled content of a branch file (caller holds :meth:`locked`)."""
        if self._depth == 0:
            raise RuntimeError("journal write without the journal lock")
        self.dir.mkdir(exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="journal.")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
            os.rename(tmp, self.path_for(branch_path))
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def entries(self) -> dict[str, Path]:
        """Every journalled branch path and its journal file."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return {}
        return {unmangle_journal_name(n): self.dir / n for n in names}

    def is_empty(self) -> bool:
        try:
            return not os.listdir(self.dir)
        except FileNotFoundError:
            return True
