"""The housekeeping git does after its own commands: ``gc --auto``.

Theory of operation
-------------------
``git commit``, ``merge``, ``fetch`` and receive-pack end by running automatic
maintenance, which packs loose objects once there are too many. annexsync writes
objects with plumbing that never does (``fast-import`` unpacks small imports into
loose objects, ``unpack-objects`` feeds a local clone, ``hash-object -w`` adds
blobs), so a repository it works on — and a clone it pushes into without
receive-pack — would pile up loose objects and small packs for ever, and git would
get slower with every day the assistant runs.

So after a round that wrote objects, :class:`AutoGc` applies git's own test
(:func:`gc_due`: more than ``gc.auto``/256 loose objects in ``objects/17``, or more
than ``gc.autoPackLimit`` packs) — one or two directory listings — and only then
starts ``git maintenance run --auto --quiet``, exactly what git's commands start.
git decides again under its lock and, unless ``gc.autoDetach`` is false, packs in
the background. ``maintenance.auto=false`` and ``gc.auto=0`` turn it off, as they
do for git. In a clone we push into, its hooks do not run (``pre-auto-gc`` is code
of another repository). Checks are rate-limited per repository (injected clock).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from annexsync.git.config import GitConfig
from annexsync.git.runner import Git

DEFAULT_GC_AUTO = 6700
DEFAULT_PACK_LIMIT = 50
_HEX = frozenset("0123456789abcdef")


def _count_loose(objects: Path) -> int:
    try:
        names = os.listdir(objects / "17")
    except OSError:
        return 0
    return sum(1 for n in names if len(n) == 38 and _HEX.issuperset(n))


def _count_packs(objects: Path) -> int:
    try:
        names = set(os.listdir(objects / "pack"))
    except OSError:
        return 0
    return sum(1 for n in names
               if n.endswith(".idx") and n[:-4] + ".keep" not in names)


def gc_due(git_dir: Path, cfg: GitConfig) -> bool:
    """Whether ``git gc --auto`` would find work here (git's own thresholds)."""
    if not cfg.get_bool("maintenance.auto", True):
        return False
    limit = cfg.get_int("gc.auto", DEFAULT_GC_AUTO)
    if limit <= 0:
        return False
    objects = git_dir / "objects"
    if _count_loose(objects) > (limit + 255) // 256:
        return True
    packs = cfg.get_int("gc.autopacklimit", DEFAULT_PACK_LIMIT)
    return packs > 0 and _count_packs(objects) > packs


class AutoGc:
    """Starts git's automatic maintenance in repositories that need it.

    ``wait`` False (the assistant): git runs in a thread, so a user's
    ``gc.autoDetach=false`` never holds up the caller; one at a time per repository.
    """

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 interval: float = 30.0, wait: bool = True) -> None:
        self.monotonic = monotonic
        self.interval = interval
        self.wait = wait
        self._checked: dict[Path, float] = {}
        self._running: set[Path] = set()
        self._lock = threading.Lock()
        self.started: list[Path] = []  # git dirs maintenance was started in (reporting)

    def check(self, git: Git, cfg: GitConfig, *, foreign: bool = False) -> bool:
        """Start maintenance in ``git``'s repository if due; returns whether it did.

        ``foreign``: a clone we wrote into (its hooks are not run)."""
        key = git.git_dir
        now = self.monotonic()
        with self._lock:
            last = self._checked.get(key)
            if (last is not None and now - last < self.interval) or key in self._running:
                return False
            self._checked[key] = now
        if not gc_due(key, cfg):
            return False
        with self._lock:
            if key in self._running:
                return False
            self._running.add(key)
            self.started.append(key)
        args = ["-c", "core.hooksPath=/dev/null"] if foreign else []
        args += ["maintenance", "run", "--auto", "--quiet"]

        def run() -> None:
            try:
                git.run_status(*args)
            finally:
                with self._lock:
                    self._running.discard(key)

        if self.wait:
            run()
        else:
            threading.Thread(target=run, name="auto-gc", daemon=True).start()
        return True
