"""The mount watcher: a drive holding a clone is plugged in, and it is synced at once.

Theory of operation
-------------------
``/proc/self/mountinfo`` is pollable: after it has been read, a mount or unmount in
our mount namespace makes the kernel report ``POLLPRI|POLLERR`` on it, and the
notification re-arms only when the file is read again *from offset 0*. The file is
always "readable", so waiting for readability (``select``/``add_reader``) would
busy-loop; we register the fd with an ``epoll`` for ``EPOLLPRI`` only, together
with a wake-up pipe, and block in ``epoll.poll``. Each wake-up re-reads the whole
table from offset 0 (which re-arms it), parses it (:func:`parse_mountinfo`) and
compares it with the previous table (:func:`diff_mounts`). No D-Bus is needed, it
works in containers, and it is testable as root in ``unshare -m``.

Optionally, when ``jeepney`` is importable and a system bus exists, UDisks2's
``InterfacesAdded``/``InterfacesRemoved`` signals are used as an extra *trigger*
to re-read the table (like git-annex's MountWatcher, which only uses them as a
trigger too). Without jeepney or a system bus this is skipped; nothing depends on it.

On a change:

* every local-path git remote is placed on the mount that holds its path
  (:func:`containing_mount`, the deepest and topmost mount point above it);
* each *new* mount (not a pseudo or network filesystem, :data:`NO_SCAN_FSTYPES`) is
  looked on for clones of this repository that are not remotes yet, unless git
  config ``annexsync.adddriverepos`` is false (see "Clones on a new drive" below);
* remotes on a *new* mount that really are there (their ``annex.uuid`` is the one
  cached in ``remote.NAME.annex-uuid``), and the clones just added, are synced with
  at once, in one request: fetch, merge, push
  (:class:`~annexsync.assistant.resync.Resyncer`, which also pokes the transfer
  scanner for a full check, so content moves per preferred content). A remote that
  is still missing on the new mount (the drive is another one, or is still being
  populated) is looked at again a few times during the next 10 s; so is a new
  mount on which no clone was added;
* remotes on a mount that *went away* are only reported (``remote-unavailable``).
  An unmounted drive, or a mount point that exists but is empty, is never taken
  as "everything was deleted": git-level sync skips unavailable local remotes
  (:func:`annexsync.sync.gitsync.local_unavailable`), transfers to and from them
  wait in the retry queue, and nothing is written about their content.

Clones on a new drive are looked for by :mod:`annexsync.assistant.driverepos`
(shallow, bounded, hostile-drive-proof; the decision is pure).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from annexsync.assistant.driverepos import (
    ADD_DRIVE_REPOS,
    NO_SCAN_FSTYPES,
    RECEIVE_PACK,
    SCAN_BUDGET,
    SCAN_MAX_CANDIDATES,
    SCAN_MAX_ENTRIES,
    SCAN_WAIT,
    UPLOAD_PACK,
    DriveRepo,
    find_repositories,
    local_remote_paths,
    plan_drive_remotes,
    read_annex_uuid,
    read_uuid_log,
    set_config_retrying,
    valid_uuid,
)
from annexsync.assistant.hub import Hub
from annexsync.assistant.resync import Resyncer
from annexsync.git.runner import GitError
from annexsync.remotes.registry import local_path_of, remote_specs

MOUNTINFO = "/proc/self/mountinfo"
#: After a new mount whose remotes are not (yet) there, look again after these delays.
RECHECK_AFTER = (1.0, 3.0, 10.0)



# -- pure part: parsing and comparing mount tables ------------------------------------------

@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/PID/mountinfo`` (see proc(5))."""

    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str  # the directory of the filesystem mounted here (bind mounts: not "/")
    mount_point: str
    options: str
    fstype: str
    source: str

    @property
    def ident(self) -> tuple[int, str]:
        """What makes a mount "the same" across two readings (a moved mount is new)."""
        return (self.mount_id, self.mount_point)


def unescape(field: str) -> str:
    r"""Undo the kernel's octal escapes (``\040`` space, ``\011`` tab, ``\012``, ``\134``)."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            digits = field[i + 1:i + 4]
            if all(d in "01234567" for d in digits):
                out.append(chr(int(digits, 8)))
                i += 4
                continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_mountinfo(data: bytes | str) -> list[Mount]:
    """Every mount of a mountinfo table, in table order; malformed lines are skipped.

    Bytes are decoded like file names (``os.fsdecode``), so odd mount points survive.
    """
    text = os.fsdecode(data) if isinstance(data, bytes) else data
    mounts: list[Mount] = []
    for line in text.split("\n"):
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
            mounts.append(Mount(
                mount_id=int(fields[0]), parent_id=int(fields[1]), device=fields[2],
                root=unescape(fields[3]), mount_point=unescape(fields[4]),
                options=fields[5], fstype=unescape(fields[sep + 1]),
                source=unescape(fields[sep + 2]) if len(fields) > sep + 2 else ""))
        except (ValueError, IndexError):
            continue
    return mounts


def diff_mounts(old: Sequence[Mount], new: Sequence[Mount]) -> tuple[list[Mount], list[Mount]]:
    """(added, removed) between two readings; a remount with other options is neither."""
    old_ids = {m.ident for m in old}
    new_ids = {m.ident for m in new}
    return ([m for m in new if m.ident not in old_ids],
            [m for m in old if m.ident not in new_ids])


def _under(path: str, mount_point: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def containing_mount(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount ``path`` (absolute, normalised) lives on: the deepest mount point
    above it, and of several mounts stacked on that point the last (topmost) one."""
    best: Mount | None = None
    for m in mounts:
        if _under(path, m.mount_point) and (
                best is None or len(m.mount_point) >= len(best.mount_point)):
            best = m
    return best


def remotes_on(changed: Iterable[Mount], table: Sequence[Mount],
               paths: dict[str, str]) -> list[str]:
    """Names (of ``paths``: remote name -> real path) whose path lives on one of the
    ``changed`` mounts, according to ``table`` (the table that holds those mounts)."""
    idents = {m.ident for m in changed}
    out: list[str] = []
    for name, path in paths.items():
        m = containing_mount(path, table)
        if m is not None and m.ident in idents:
            out.append(name)
    return out


def read_table(fd: int) -> bytes:
    """The whole mount table, read from offset 0 (which also re-arms POLLPRI)."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


@dataclass
class _Look:
    """One look for clones, run in a thread of its own (:meth:`MountWatcher._look`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    late: bool = False  # the watcher went on without it: it asks for the sync itself
    found: list[str] = field(default_factory=list)


class MountWatcher:
    """Service: syncs with remotes whose drive was just mounted (module docstring)."""

    name = "mountwatcher"

    def __init__(self, hub: Hub, resyncer: Resyncer, *,
                 on_change: Callable[[], None] | None = None,
                 mountinfo: str = MOUNTINFO, udisks: bool = True,
                 scan_wait: float = SCAN_WAIT) -> None:
        self.hub = hub
        self.resyncer = resyncer
        self.on_change = on_change
        self.mountinfo = mountinfo
        self.udisks = udisks
        self.scan_wait = scan_wait
        self.wakeups = 0  # epoll wake-ups for the mount table (tests: no busy loop)
        self.table: list[Mount] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._reread = threading.Event()
        self._rechecks: list[tuple[float, frozenset[str]]] = []
        # new mounts on which no clone was found, looked on again (mount idents)
        self._rescans: list[tuple[float, frozenset[tuple[int, str]]]] = []
        self._look_now: _Look | None = None

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def poke(self) -> None:
        """Read the mount table again (the UDisks2 trigger, or anyone who knows)."""
        self._reread.set()
        self.wake()

    def run(self, stop: threading.Event) -> None:
        fd = os.open(self.mountinfo, os.O_RDONLY | os.O_CLOEXEC)
        ep = select.epoll()
        udisks: threading.Thread | None = None
        try:
            ep.register(fd, select.EPOLLPRI)
            ep.register(self._wake_r, select.EPOLLIN)
            self.table = parse_mountinfo(read_table(fd))
            self.hub.emit(self.name, "watching", mounts=len(self.table))
            if self.udisks:
                udisks = _start_udisks(self.hub, stop, self.poke)
            while not stop.is_set():
                timeout = self._next_recheck()
                events = ep.poll(timeout)
                changed = False
                for f, _mask in events:
                    if f == fd:
                        changed = True
                    elif f == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except BlockingIOError:
                            pass
                if self._reread.is_set():
                    self._reread.clear()
                    changed = True
                if stop.is_set():
                    break
                if changed:
                    self.wakeups += 1
                    if not self._reload(fd):
                        # Woken but nothing changed: do not spin should the kernel
                        # keep reporting (it re-arms only on a read from offset 0).
                        stop.wait(0.05)
                self._run_rechecks()
        finally:
            ep.close()
            os.close(fd)
            if udisks is not None:
                udisks.join(2)

    # -- reacting ----------------------------------------------------------------------
    def _reload(self, fd: int) -> bool:
        new = parse_mountinfo(read_table(fd))
        old, self.table = self.table, new
        added, removed = diff_mounts(old, new)
        if not added and not removed:
            return False
        self.changed(added, removed, old, new)
        return True

    def changed(self, added: list[Mount], removed: list[Mount], old: Sequence[Mount],
                new: Sequence[Mount]) -> None:
        """React to a change of the mount table (see the module docstring)."""
        hub = self.hub
        scanned = self._scannable(added)  # (reads the config afresh if any)
        paths = local_remote_paths(remote_specs(hub.repo, hub.branch), hub.repo.top)
        gone = remotes_on(removed, old, paths)
        came = remotes_on(added, new, paths)
        found = self._look(scanned, first=True) if scanned else []
        hub.emit(self.name, "mounts-changed",
                 added=[m.mount_point for m in added][:10],
                 removed=[m.mount_point for m in removed][:10],
                 remotes_added=came, remotes_removed=gone, repositories_found=found)
        for name in gone:
            if name not in came:
                hub.emit(self.name, "remote-unavailable", remote=name, reason="unmounted")
        if came or found:
            self._sync_if_there(frozenset(came) | frozenset(found), first=True)
        if scanned and not found:
            now = time.monotonic()
            idents = frozenset(m.ident for m in scanned)
            self._rescans += [(now + d, idents) for d in RECHECK_AFTER]
        if self.on_change is not None and (added or removed):
            self.on_change()

    def _sync_if_there(self, names: frozenset[str], *, first: bool) -> None:
        from annexsync.sync.gitsync import local_unavailable

        hub = self.hub
        specs = {s.name: s for s in remote_specs(hub.repo, hub.branch)}
        here: list[str] = []
        missing: list[str] = []
        for n in sorted(names):
            spec = specs.get(n)
            if spec is None:
                continue
            why = local_unavailable(spec, hub.repo)
            if why is None:
                here.append(n)
            else:
                missing.append(n)
                if first:
                    hub.emit(self.name, "remote-not-here", remote=n, reason=why)
        if here:
            hub.emit(self.name, "remote-mounted", remotes=here)
            self.resyncer.request(here, "mounted", full_scan=True)
        found = frozenset(here)
        self._rechecks = [(t, ns - found) for t, ns in self._rechecks if ns - found]
        if missing and first:
            now = time.monotonic()
            self._rechecks += [(now + d, frozenset(missing)) for d in RECHECK_AFTER]

    def _next_recheck(self) -> float:
        times = [t for t, _ in self._rechecks] + [t for t, _ in self._rescans]
        if not times:
            return 60.0
        return max(0.0, min(times) - time.monotonic())

    def _run_rechecks(self) -> None:
        now = time.monotonic()
        due = [ns for t, ns in self._rechecks if t <= now]
        if due:
            self._rechecks = [(t, ns) for t, ns in self._rechecks if t > now]
            self._sync_if_there(frozenset().union(*due), first=False)
        rescan = [ids for t, ids in self._rescans if t <= now]
        if rescan:
            self._rescans = [(t, ids) for t, ids in self._rescans if t > now]
            idents: frozenset[tuple[int, str]] = frozenset().union(*rescan)
            mounts = self._scannable([m for m in self.table if m.ident in idents])
            found = self._look(mounts, first=False) if mounts else []  # if still mounted
            if found:
                self._rescans = [(t, ids - idents) for t, ids in self._rescans
                                 if ids - idents]
                self._sync_if_there(frozenset(found), first=False)

    # -- clones on a new drive (module docstring) ------------------------------------------
    def _scannable(self, mounts: Sequence[Mount]) -> list[Mount]:
        """The mounts to look on for clones: none if ``annexsync.adddriverepos`` is false
        (read afresh, and with it the remotes), pseudo and network filesystems never."""
        mounts = [m for m in mounts if m.fstype not in NO_SCAN_FSTYPES]
        if not mounts:
            return []
        cfg = self.hub.repo.reload_config()
        return mounts if cfg.get_bool(ADD_DRIVE_REPOS, True) else []

    def _look(self, mounts: Sequence[Mount], *, first: bool) -> list[str]:
        """Look on ``mounts`` for clones and add them (:meth:`discover`) in a thread of
        its own, waiting for it at most ``scan_wait`` seconds; names of the remotes added.
        A look that takes longer asks for the sync itself when it is done."""
        hub = self.hub
        where = [m.mount_point for m in mounts][:10]
        if self._look_now is not None and not self._look_now.done.is_set():
            hub.emit(self.name, "drive-scan-skipped", mounts=where,
                     reason="the previous look has not finished")
            return []
        look = self._look_now = _Look()

        def run() -> None:
            found: list[str] = []
            try:
                found = self.discover(mounts, first=first)
            except Exception as e:  # noqa: BLE001 - a drive must not stop the watcher
                hub.emit(self.name, "drive-scan-failed", mounts=where,
                         error=f"{type(e).__name__}: {e}")
            with look.lock:
                look.found = found
                look.done.set()
                late = look.late
            if late and found:
                hub.emit(self.name, "remote-mounted", remotes=found)
                self.resyncer.request(found, "mounted", full_scan=True)

        threading.Thread(target=run, name="drive-scan", daemon=True).start()
        if not look.done.wait(self.scan_wait):
            with look.lock:
                if not look.done.is_set():
                    look.late = True
                    hub.emit(self.name, "drive-scan-slow", mounts=where,
                             seconds=self.scan_wait)
                    return []
        return look.found

    def discover(self, mounts: Sequence[Mount], *, first: bool = True) -> list[str]:
        """Find clones of this repository on ``mounts`` that are not remotes yet and add
        them as remotes; their names. ``first``: the first look on these mounts (later
        ones report only what they add)."""
        hub = self.hub
        repo = hub.repo
        cfg = repo.config
        our_uuid = cfg.get("annex.uuid") or ""
        if not valid_uuid(our_uuid):
            return []
        specs = remote_specs(repo, hub.branch, cache_uuids=False)
        known_paths = {os.path.realpath(repo.top), os.path.realpath(repo.git_dir)}
        for s in specs:
            if not s.special and s.url and s.kind == "local":
                p = os.path.realpath(local_path_of(s.url, repo.top))
                known_paths.add(p)
                if os.path.basename(p) == ".git":
                    known_paths.add(os.path.dirname(p))
        candidates: list[DriveRepo] = []
        asked = 0
        deadline = time.monotonic() + SCAN_BUDGET
        for m in mounts:
            repos, truncated = find_repositories(m.mount_point)
            if truncated and first:
                hub.emit(self.name, "drive-scan-truncated", mount=m.mount_point,
                         entries=SCAN_MAX_ENTRIES)
            for path, git_dir in repos:
                real = os.path.realpath(path)
                if real in known_paths:
                    continue
                if asked >= SCAN_MAX_CANDIDATES or time.monotonic() > deadline:
                    if first:
                        hub.emit(self.name, "drive-scan-truncated", mount=m.mount_point,
                                 repositories_asked=asked)
                    break
                asked += 1
                uuid = read_annex_uuid(git_dir)
                if uuid is None or not valid_uuid(uuid) or uuid.lower() == our_uuid.lower():
                    continue
                log = read_uuid_log(git_dir)
                if log is not None:
                    candidates.append(DriveRepo(real, uuid, log))
        decisions = plan_drive_remotes(
            candidates, our_uuid, remote_names=cfg.remotes(), remote_paths=known_paths,
            remote_uuids={s.uuid: s.name for s in specs if s.uuid})
        added: list[str] = []
        for d in decisions:
            if d.name is None:
                if d.clone and first:
                    hub.emit(self.name, "repository-skipped", path=d.path, uuid=d.uuid,
                             reason=d.reason)
            elif self._add_remote(d.name, d.path, d.uuid):
                hub.emit(self.name, "repository-found", remote=d.name, path=d.path,
                         uuid=d.uuid)
                added.append(d.name)
        if added:
            repo.reload_config()
        return added

    def _add_remote(self, name: str, path: str, uuid: str) -> bool:
        """Configure remote ``name`` for the clone at ``path``, unless that name is taken
        by now (an existing remote is never touched); the URL is written last."""
        git = self.hub.repo.git
        section = f"remote.{name}"
        # (names are [A-Za-z0-9._-]: only the dots need escaping in git's regex)
        pattern = "^" + section.replace(".", "\\.") + "\\."
        taken = git.run_status("config", "--get-regexp", pattern)
        if taken.returncode != 1 or taken.stdout:
            self.hub.emit(self.name, "repository-add-failed", remote=name, path=path,
                          error="a remote of that name exists")
            return False
        try:
            for key, value in (("receivepack", RECEIVE_PACK), ("uploadpack", UPLOAD_PACK),
                               ("annex-uuid", uuid),
                               ("fetch", f"+refs/heads/*:refs/remotes/{name}/*"),
                               ("url", path)):
                set_config_retrying(git, f"{section}.{key}", value)
        except GitError as e:
            git.run_status("config", "--remove-section", section)
            self.hub.emit(self.name, "repository-add-failed", remote=name, path=path,
                          error=str(e))
            return False
        return True


# -- optional: UDisks2 over D-Bus as an extra trigger --------------------------------------------

def system_bus_available() -> bool:
    """Is there a system D-Bus to talk to?"""
    addr = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    if addr:
        return True
    return os.path.exists("/run/dbus/system_bus_socket") or os.path.exists(
        "/var/run/dbus/system_bus_socket")


def _start_udisks(hub: Hub, stop: threading.Event,
                  trigger: Callable[[], None]) -> threading.Thread | None:
    """Listen to UDisks2's ObjectManager signals if jeepney and a system bus exist."""
    try:
        import jeepney  # noqa: F401
    except ImportError:
        hub.emit(MountWatcher.name, "udisks-skipped", reason="jeepney is not installed")
        return None
    if not system_bus_available():
        hub.emit(MountWatcher.name, "udisks-skipped", reason="no system D-Bus")
        return None
    t = threading.Thread(target=_udisks_loop, args=(hub, stop, trigger), daemon=True,
                         name="udisks")
    t.start()
    return t


def _udisks_loop(hub: Hub, stop: threading.Event, trigger: Callable[[], None]) -> None:
    try:
        from jeepney import MatchRule, message_bus
        from jeepney.io.blocking import open_dbus_connection

        conn = open_dbus_connection(bus="SYSTEM")
    except Exception as e:  # noqa: BLE001 - optional: report and go on without it
        hub.emit(MountWatcher.name, "udisks-skipped", reason=f"{type(e).__name__}: {e}")
        return
    try:
        rule = MatchRule(type="signal", interface="org.freedesktop.DBus.ObjectManager",
                         path="/org/freedesktop/UDisks2")
        conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=5)
        hub.emit(MountWatcher.name, "udisks-listening")
        with conn.filter(rule, bufsize=64) as matches:
            while not stop.is_set():
                try:
                    conn.recv_until_filtered(matches, timeout=1.0)
                except TimeoutError:
                    continue
                while matches:
                    matches.popleft()
                trigger()
    except Exception as e:  # noqa: BLE001
        hub.emit(MountWatcher.name, "udisks-stopped", reason=f"{type(e).__name__}: {e}")
    finally:
        conn.close()
