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
starts ``git maintenance run --auto --quiet``, what git's commands start. git
decides again under its lock and packs in the background unless
``maintenance.autoDetach`` (falling back to ``gc.autoDetach``) is false; git 2.47
and later are told so with ``--detach``/``--no-detach``, as git's own commands do
(older ones leave it to ``gc``). ``maintenance.auto=false`` and ``gc.auto=0`` turn
it off, as they do for git. In a clone we push into, nothing of that clone's own
runs: not its hooks (``pre-auto-gc``), not its ``core.fsmonitor``, and a clone with
a ``gc.recentObjectsHook`` is left alone. Checks are rate-limited per repository
(injected clock), and a repository where maintenance was started is not asked
again for an hour (git may leave loose objects it keeps on purpose, such as recent
unreachable ones; it would be started every few seconds for nothing).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from annexsync.git.config import GitConfig
from annexsync.git.runner import FOREIGN_CONFIG, Git

DEFAULT_GC_AUTO = 6700
DEFAULT_PACK_LIMIT = 50
_HEX = frozenset("0123456789abcdef")
_DETACH_OPTION_SINCE = (2, 47)  # `git maintenance run --[no-]detach`
_git_versions: dict[str, tuple[int, ...]] = {}


def git_version(git: Git) -> tuple[int, ...]:
    """The version of the git that ``git`` runs, as numbers (cached per program)."""
    prog = git.base_args()[0]
    v = _git_versions.get(prog)
    if v is None:
        out = git.run_status("version").stdout.decode(errors="replace")
        nums = []
        for part in out.removeprefix("git version ").split(".")[:3]:
            digits = "".join(itertools.takewhile(str.isdigit, part))
            if not digits:
                break
            nums.append(int(digits))
        v = _git_versions[prog] = tuple(nums)
    return v


def maintenance_args(git: Git, cfg: GitConfig, *, foreign: bool) -> list[str] | None:
    """The command line git's own commands would run for automatic maintenance here
    (None: not to be run, see the module docstring)."""
    args: list[str] = []
    if foreign:
        if cfg.get("gc.recentobjectshook") is not None:
            return None
        for setting in FOREIGN_CONFIG:
            args += ["-c", setting]
    args += ["maintenance", "run", "--auto", "--quiet"]
    if git_version(git) >= _DETACH_OPTION_SINCE:
        detach = cfg.get_bool("maintenance.autodetach", cfg.get_bool("gc.autodetach", True))
        args.append("--detach" if detach else "--no-detach")
    return args


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
                 interval: float = 30.0, after_start: float = 3600.0,
                 wait: bool = True) -> None:
        self.monotonic = monotonic
        self.interval = interval
        self.after_start = after_start
        self.wait = wait
        self._next: dict[Path, float] = {}  # git dir -> not checked again before
        self._running: set[Path] = set()
        self._lock = threading.Lock()

    def check(self, git: Git, cfg: GitConfig, *, foreign: bool = False) -> bool:
        """Start maintenance in ``git``'s repository if due; returns whether it did.

        ``foreign``: a clone we wrote into (its hooks are not run)."""
        key = git.git_dir
        now = self.monotonic()
        with self._lock:
            if now < self._next.get(key, now) or key in self._running:
                return False
            self._next[key] = now + self.interval
        if not gc_due(key, cfg):
            return False
        args = maintenance_args(git, cfg, foreign=foreign)
        if args is None:
            return False
        with self._lock:
            if key in self._running:
                return False
            self._running.add(key)
            self._next[key] = now + self.after_start

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
