"""The remote watcher: remotes on a local path are watched directly.

Theory of operation
-------------------
A clone on a local path (another directory, a mounted drive, a network filesystem
that delivers inotify) may change without any daemon running there: someone runs
``git commit`` in it, or git-annex syncs into it. For each syncable local-path git
remote that is there now, inotify watches its ``refs/heads`` (recursively, since
branch names have slashes) and its git directory (for ``packed-refs``). A burst of
events is gathered for a short calm (20 ms), then, for each remote whose refs moved:

* each changed loose ref is read from the remote (one small file) and compared with
  our ``refs/remotes/NAME/...`` and our own branch tips. When it is one of those, we
  caused the change (our pusher's ``git push``): nothing to do. Otherwise (or when
  ``packed-refs`` changed) the :class:`~annexsync.assistant.resync.Resyncer` is
  asked to fetch and merge that remote (no push and no full transfer scan: a merge
  that brings something pokes the pusher and tells the scanner what changed). When
  only the remote's ``git-annex`` (or ``synced/git-annex``) branch moved, the fetch
  waits :data:`ANNEX_CALM` (1 s) for more: an assistant there commits location logs
  in bursts, one commit per transfer batch, and a fetch-and-merge for each would cost
  far more than it brings. Any other ref moving fetches at once.

The set of watched remotes is recomputed when :meth:`RemoteWatcher.refresh` is
called (the mount watcher does, after each mount or unmount), when our
``.git/config`` is rewritten (a remote was added or removed; the configuration is
then reloaded), when a watched remote's filesystem is unmounted (``IN_UNMOUNT``),
and every minute, for remotes that appear without a mount event. A remote that is
not there (an unplugged drive) is simply not watched.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inotify_simple import INotify
from inotify_simple import flags as F

from annexsync.assistant.hub import Hub
from annexsync.assistant.resync import Resyncer
from annexsync.git.refs import for_each_ref
from annexsync.remotes.gitlocal import find_git_dir
from annexsync.remotes.registry import local_path_of
from annexsync.sync.gitsync import GitSync

#: A remote whose git-annex branch alone moved is fetched after this calm: an assistant
#: there commits location logs in bursts, and nothing in the work tree waits for them.
ANNEX_CALM = 1.0
ANNEX_ONLY_REFS: frozenset[str | None] = frozenset(
    {"refs/heads/git-annex", "refs/heads/synced/git-annex"})
_REFS_MASK = F.CREATE | F.MOVED_TO | F.CLOSE_WRITE | F.DELETE | F.ONLYDIR
_DIR_MASK = F.MOVED_TO | F.CLOSE_WRITE
REFRESH_EVERY = 60.0


@dataclass
class _Watched:
    name: str
    git_dir: Path
    wds: set[int] = field(default_factory=set)


class RemoteWatcher:
    """Service: fetches a local-path remote as soon as its refs move (module docstring)."""

    name = "remotewatcher"

    def __init__(self, hub: Hub, resyncer: Resyncer, *, calm: float = 0.02,
                 on_config: Callable[[], None] | None = None,
                 annex_calm: float = ANNEX_CALM) -> None:
        self.hub = hub
        self.annex_calm = annex_calm
        self.on_config = on_config  # told after .git/config was reloaded
        self.resyncer = resyncer
        self.calm = calm
        self.sync = GitSync(hub.repo, skip_unavailable=True)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._refresh = threading.Event()
        self.watched: dict[str, _Watched] = {}
        self._wd: dict[int, tuple[str | None, str]] = {}  # wd -> (remote or None: ours, dir)
        self._ino: INotify | None = None

    def refresh(self) -> None:
        """Recompute which remotes to watch (a drive came or went, the config changed)."""
        self._refresh.set()
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    # -- watches ---------------------------------------------------------------------------
    def _add(self, remote: str | None, d: str, mask: int, recursive: bool) -> set[int]:
        assert self._ino is not None
        try:
            wd = self._ino.add_watch(d, mask)
        except OSError:
            return set()
        self._wd[wd] = (remote, d)
        wds = {wd}
        if recursive:
            try:
                for e in os.scandir(d):
                    if e.is_dir(follow_symlinks=False):
                        wds |= self._add(remote, e.path, mask, True)
            except OSError:
                pass
        return wds

    def _drop(self, name: str) -> None:
        w = self.watched.pop(name, None)
        if w is None or self._ino is None:
            return
        for wd in w.wds:
            self._wd.pop(wd, None)
            try:
                self._ino.rm_watch(wd)
            except OSError:
                pass

    def _sync_watches(self) -> None:
        repo = self.hub.repo
        ours = os.path.realpath(repo.git_dir)
        want: dict[str, Path] = {}
        for s in self.sync.sync_remotes():  # unavailable local remotes are left out
            if s.kind != "local" or not s.url:
                continue
            found = find_git_dir(local_path_of(s.url, repo.top))
            if found is not None and os.path.realpath(found[0]) != ours:
                want[s.name] = found[0]
        for name in [n for n, w in self.watched.items() if want.get(n) != w.git_dir]:
            self._drop(name)
            self.hub.emit(self.name, "unwatched", remote=name)
        for name, git_dir in want.items():
            if name in self.watched:
                continue
            w = _Watched(name, git_dir)
            w.wds |= self._add(name, str(git_dir), _DIR_MASK, False)
            w.wds |= self._add(name, str(git_dir / "refs" / "heads"), _REFS_MASK, True)
            if w.wds:
                self.watched[name] = w
                self.hub.emit(self.name, "watching", remote=name, path=str(git_dir))

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self._ino = ino = INotify()
        self._wd.clear()
        self.watched.clear()
        try:
            self._add(None, str(self.hub.repo.git_dir), _DIR_MASK, False)
            self._sync_watches()
            next_refresh = time.monotonic() + REFRESH_EVERY
            # remote -> (when to fetch, refs): changes of its git-annex branch alone
            held: dict[str, tuple[float, set[str | None]]] = {}
            while not stop.is_set():
                wake_at = min([next_refresh, *(t for t, _ in held.values())])
                timeout = max(0.0, wake_at - time.monotonic())
                r, _, _ = select.select([ino.fileno(), self._wake_r], [], [], timeout)
                if self._wake_r in r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if stop.is_set():
                    break
                changed: dict[str, set[str | None]] = {}
                refresh = self._refresh.is_set()
                self._refresh.clear()
                if ino.fileno() in r:
                    refresh |= self._read_events(ino, changed)
                if refresh or time.monotonic() >= next_refresh:
                    self._sync_watches()
                    next_refresh = time.monotonic() + REFRESH_EVERY
                now = time.monotonic()
                for n, refs in changed.items():
                    if n not in self.watched or not self._needs_fetch(n, refs):
                        continue
                    due = now
                    if refs <= ANNEX_ONLY_REFS:  # held since its first such change
                        due = held[n][0] if n in held else now + self.annex_calm
                    held[n] = (due, held.get(n, (due, set()))[1] | refs)
                names = sorted(n for n, (t, _) in held.items()
                               if t <= now and n in self.watched)
                if names:
                    self.hub.emit(self.name, "remote-changed", remotes=names,
                                  refs=sorted(str(r) for n in names for r in held[n][1]))
                    self.resyncer.request(names, "remote-changed", push=False,
                                          full_scan=False)
                for n in [n for n, (t, _) in held.items() if t <= now]:
                    del held[n]
        finally:
            self._ino = None
            ino.close()

    def _read_events(self, ino: INotify, changed: dict[str, set[str | None]]) -> bool:
        """Gather a burst of events into ``changed``; True if the watches need a refresh."""
        refresh = False
        for ev in ino.read(timeout=int(self.calm * 1000)):
            info = self._wd.get(ev.wd)
            if ev.mask & (F.UNMOUNT | F.IGNORED):
                if info is not None and info[0] is not None:
                    self.watched.pop(info[0], None)
                    self.hub.emit(self.name, "unwatched", remote=info[0], reason="unmounted"
                                  if ev.mask & F.UNMOUNT else "gone")
                self._wd.pop(ev.wd, None)
                refresh = True
                continue
            if info is None or ev.name.endswith(".lock"):
                continue
            remote, d = info
            if remote is None:  # our own git dir
                if ev.name == "config":
                    self.hub.repo.reload_config()
                    if self.on_config is not None:
                        self.on_config()
                    refresh = True
                continue
            w = self.watched.get(remote)
            if w is None:
                continue
            path = os.path.join(d, ev.name)
            if d == str(w.git_dir):
                if ev.name == "packed-refs":
                    changed.setdefault(remote, set()).add(None)
                continue
            if ev.mask & F.ISDIR:
                if ev.mask & (F.CREATE | F.MOVED_TO):
                    w.wds |= self._add(remote, path, _REFS_MASK, True)
                    changed.setdefault(remote, set()).add(None)  # refs may be inside
                continue
            if ev.mask & F.DELETE:
                continue  # a deleted branch brings nothing to merge
            changed.setdefault(remote, set()).add(os.path.relpath(path, w.git_dir))
        return refresh

    def _needs_fetch(self, name: str, refs: set[str | None]) -> bool:
        """Did the remote move a ref past what we have of it (not our own push)?"""
        w = self.watched[name]
        if None in refs:
            return True
        try:
            ours = for_each_ref(self.hub.repo.git, f"refs/remotes/{name}", "refs/heads")
        except Exception:  # noqa: BLE001 - when in doubt, fetch
            return True
        tips = {v for n, v in ours.items() if n.startswith("refs/heads/")}
        for ref in refs:
            assert ref is not None
            try:
                value = (w.git_dir / ref).read_text().strip()
            except OSError:
                return True
            short = ref.removeprefix("refs/heads/")
            # our own push (git updates the tracking ref a moment after the remote's)
            if value in tips or ours.get(f"refs/remotes/{name}/{short}") == value:
                continue
            return True
        return False
