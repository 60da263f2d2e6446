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

Clones on a new drive
---------------------
Everything on a drive is untrusted: anyone can hand us one. The look is shallow
and bounded (:func:`find_repositories`): the mount point and directories up to two
levels below it, hidden directories skipped, symbolic links never followed (every
directory is opened ``O_NOFOLLOW`` and checked to be the one listed), other
filesystems mounted below not entered, and at most :data:`SCAN_MAX_ENTRIES`
directory entries read. A git repository is a directory holding a ``.git``
directory, or a bare one (``HEAD``, ``objects/``, ``refs/``). For at most
:data:`SCAN_MAX_CANDIDATES` of them that are not remotes yet (real paths compared),
two git processes each, with a time limit, a bounded output and never inside a work
tree: its ``config`` (a regular file of at most 64 KiB, read by us with
``O_NOFOLLOW``) is given to ``git config --no-includes --file -`` for ``annex.uuid``
(``--file -`` would follow ``include.path`` otherwise), and ``git -c
core.fsmonitor=false --git-dir=DIR cat-file blob refs/heads/git-annex:uuid.log`` (at
most 1 MiB). The decision is pure (:func:`plan_drive_remotes`): a repository whose
``annex.uuid`` is a valid UUID, not ours and not a configured remote's, and whose
``uuid.log`` names our UUID is a clone of this repository. It is added as a remote
(:func:`remote_name_for`: its description from its ``uuid.log``, reduced to
``[A-Za-z0-9._-]``, if that is a free remote name, else ``drive-`` and the first 8
characters of its UUID; existing remotes are never changed), with its UUID cached
and ``receivepack``/``uploadpack`` set so that git, when pushing to and fetching from
it, runs none of its hooks, fsmonitor or ``core.alternateRefsCommand``
(:data:`RECEIVE_PACK`). ``repository-found`` is logged for each, and the git config
change makes the remote watcher watch it too. The scan runs in a thread of its own
that the watcher waits for at most :data:`SCAN_WAIT` seconds, so a drive that hangs
(a dead network filesystem, say) never stops the watcher; what a late scan finds is
synced when it is done.
"""

from __future__ import annotations

import os
import re
import select
import stat
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annexsync.annex.logs import current_uuid_values, parse_uuid_log
from annexsync.assistant.hub import Hub
from annexsync.assistant.resync import Resyncer
from annexsync.git.runner import Git, GitError
from annexsync.remotes.registry import RemoteSpec, local_path_of, remote_specs

MOUNTINFO = "/proc/self/mountinfo"
#: After a new mount whose remotes are not (yet) there, look again after these delays.
RECHECK_AFTER = (1.0, 3.0, 10.0)

# Looking for clones on a new drive (module docstring, "Clones on a new drive").
#: Filesystems never looked on for clones: kernel pseudo filesystems, read-only images
#: (snaps) and network filesystems (a dead server would make every look hang).
NO_SCAN_FSTYPES = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "pstore",
    "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tracefs",
    "9p", "afs", "ceph", "cifs", "davfs", "fuse.davfs2", "fuse.rclone", "fuse.s3fs",
    "fuse.sshfs", "glusterfs", "ncpfs", "nfs", "nfs4", "smb3", "smbfs",
})
SCAN_MAX_DEPTH = 2  # the mount point and directories up to this many levels below it
SCAN_MAX_ENTRIES = 1000  # directory entries read per mount, at most
SCAN_MAX_CANDIDATES = 16  # repositories asked about (two git processes each) per look
SCAN_BUDGET = 20.0  # seconds: no repository is asked about after this
SCAN_WAIT = 5.0  # seconds the watcher waits for a look before going on without it
GIT_TIMEOUT = 5.0  # seconds for one git process reading a repository on the drive
CONFIG_MAX = 64 * 1024  # a drive repository's config file, at most (bytes)
UUID_LOG_MAX = 1 << 20  # its uuid.log, at most (bytes)
REMOTE_NAME_MAX = 40
#: What git runs in a found repository when we push to it (``remote.NAME.receivepack``)
#: and fetch from it (``remote.NAME.uploadpack``): none of its hooks, fsmonitor,
#: alternate-refs command or auto-gc, and no push that would check out files there.
RECEIVE_PACK = ("git -c core.hooksPath=/dev/null -c core.fsmonitor=false"
                " -c core.alternateRefsCommand=true -c receive.autogc=false"
                " -c receive.denyCurrentBranch=refuse receive-pack")
UPLOAD_PACK = ("git -c core.hooksPath=/dev/null -c core.fsmonitor=false"
               " -c core.alternateRefsCommand=true upload-pack")
#: Setting that switches the look for clones off (default on).
ADD_DRIVE_REPOS = "annexsync.adddriverepos"


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


# -- pure part: which repositories found on a new drive become remotes ------------------------

_UUID_RE = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_NAME_BAD_RE = re.compile(r"[^A-Za-z0-9._-]+")
_DOTS_RE = re.compile(r"\.{2,}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def valid_uuid(value: str) -> bool:
    """Is ``value`` a UUID as git-annex makes them (8-4-4-4-12 hex digits)?"""
    return _UUID_RE.fullmatch(value) is not None


def sanitise_remote_name(text: str) -> str | None:
    """``text`` made into a remote name of ``[A-Za-z0-9._-]`` (other runs become ``-``),
    at most :data:`REMOTE_NAME_MAX` long; None if nothing usable is left."""
    name = _DOTS_RE.sub(".", _NAME_BAD_RE.sub("-", text))[:REMOTE_NAME_MAX].strip("-.")
    low = name.lower()
    if not name or low.endswith(".lock") or low == "head":
        return None  # not valid in a ref name (refs/remotes/NAME/...)
    return name


def remote_name_for(description: str | None, uuid: str, taken: Iterable[str]) -> str:
    """The name for a found repository: its description if that makes a name not in
    ``taken`` (compared ignoring case), else ``drive-`` + its UUID's first 8 characters
    (``-2``, ``-3``, ... appended while that is taken too)."""
    used = {n.lower() for n in taken}
    name = sanitise_remote_name(description or "")
    if name is not None and name.lower() not in used:
        return name
    short = re.sub(r"[^0-9a-z]", "", uuid[:8].lower())
    base = f"drive-{short}" if short else "drive"
    name, n = base, 2
    while name.lower() in used:
        name, n = f"{base}-{n}", n + 1
    return name


@dataclass(frozen=True)
class DriveRepo:
    """A git repository found on a new mount: its real path, the ``annex.uuid`` its
    config names (unchecked) and its git-annex branch's ``uuid.log`` (untrusted)."""

    path: str
    uuid: str
    uuid_log: bytes


@dataclass(frozen=True)
class DriveDecision:
    """What to do with one :class:`DriveRepo`."""

    path: str
    uuid: str
    name: str | None  # the remote to add; None: left alone
    reason: str = ""  # why it is left alone
    clone: bool = False  # it knows our UUID (leaving it alone is worth a log line)


def plan_drive_remotes(candidates: Iterable[DriveRepo], our_uuid: str, *,
                       remote_names: Iterable[str], remote_paths: Iterable[str],
                       remote_uuids: Mapping[str, str]) -> list[DriveDecision]:
    """Which found repositories to add as remotes, and under which names (by path).

    A repository is added when its path is absolute, plain and not a configured
    remote's (``remote_paths``: real paths), its ``annex.uuid`` is a valid UUID, not
    ``our_uuid`` and no configured remote's (``remote_uuids``: UUID -> remote name),
    no other candidate with that UUID was added, and its ``uuid.log`` (at most
    :data:`UUID_LOG_MAX` bytes) names ``our_uuid``: it is a clone of this repository.
    Names come from :func:`remote_name_for`, never one of ``remote_names`` or of an
    earlier candidate.
    """
    names = list(remote_names)
    paths = set(remote_paths)
    known = {u.lower(): n for u, n in remote_uuids.items()}
    added: dict[str, str] = {}  # uuid -> path
    ours_ok = valid_uuid(our_uuid)
    out: list[DriveDecision] = []
    for c in sorted(candidates, key=lambda c: c.path):
        def skip(reason: str, clone: bool = False, c: DriveRepo = c) -> None:
            out.append(DriveDecision(c.path, c.uuid, None, reason, clone))

        if not ours_ok:
            skip("this repository has no valid annex.uuid")
            continue
        if not c.path.startswith("/") or _CONTROL_RE.search(c.path) or not _utf8(c.path):
            skip("unusable path")
            continue
        if c.path in paths:
            skip("already a remote")
            continue
        if not valid_uuid(c.uuid):
            skip("no valid annex.uuid")
            continue
        uuid = c.uuid.lower()
        if uuid == our_uuid.lower():
            skip("this repository itself")
            continue
        if len(c.uuid_log) > UUID_LOG_MAX:
            skip("uuid.log too large")
            continue
        lines = parse_uuid_log(c.uuid_log)
        if not any(line.uuid == our_uuid for line in lines):
            skip("does not know this repository")
            continue
        if uuid in known:
            skip(f"it is remote {known[uuid]} (configured at another path)", True)
            continue
        if uuid in added:
            skip(f"the same repository as {added[uuid]}", True)
            continue
        own = current_uuid_values(lines).get(c.uuid)
        name = remote_name_for(own.value if own is not None else None, c.uuid, names)
        names.append(name)
        added[uuid] = c.path
        out.append(DriveDecision(c.path, c.uuid, name, "", True))
    return out


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes in a file name (surrogate escapes)
        return False
    return True


# -- the service -----------------------------------------------------------------------------

def local_remote_paths(specs: Iterable[RemoteSpec], top: Path) -> dict[str, str]:
    """Real paths of the syncable local-path git remotes (whether there now or not)."""
    out: dict[str, str] = {}
    for s in specs:
        if s.special or not s.url or s.kind != "local" or not s.sync:
            continue
        out[s.name] = os.path.realpath(local_path_of(s.url, top))
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


# -- looking on a drive (bounded, untrusting; module docstring) ----------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Variables that would point git at another repository than the one we name.
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
             "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
             "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT")


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def repository_kind(dir_fd: int) -> str | None:
    """"work" (a ``.git`` directory inside), "bare" (``HEAD``, ``objects/``, ``refs/``) or
    None, for the directory open as ``dir_fd``; symbolic links do not count."""
    dotgit = _lstat_at(dir_fd, ".git")
    if dotgit is not None and stat.S_ISDIR(dotgit.st_mode):
        return "work"
    head, objects, refs = (_lstat_at(dir_fd, n) for n in ("HEAD", "objects", "refs"))
    if (head is not None and stat.S_ISREG(head.st_mode) and objects is not None
            and stat.S_ISDIR(objects.st_mode) and refs is not None
            and stat.S_ISDIR(refs.st_mode)):
        return "bare"
    return None


def find_repositories(top: str, *, max_depth: int = SCAN_MAX_DEPTH,
                      max_entries: int = SCAN_MAX_ENTRIES
                      ) -> tuple[list[tuple[str, str]], bool]:
    """Git repositories at ``top`` and in directories up to ``max_depth`` levels below
    it, shallowest first, as (path, git dir); and whether the look stopped after
    ``max_entries`` directory entries. Hidden directories, symbolic links, other
    filesystems and the inside of repositories are not entered."""
    found: list[tuple[str, str]] = []
    entries = 0
    try:
        fd = os.open(top, _DIR_FLAGS)
    except OSError:
        return found, False
    try:
        dev = os.fstat(fd).st_dev
    finally:
        os.close(fd)
    # (path, depth, (dev, inode) it had when listed): opened again by path, O_NOFOLLOW,
    # and used only if it still is that directory.
    queue: deque[tuple[str, int, tuple[int, int] | None]] = deque([(top, 0, None)])
    while queue:
        path, depth, ident = queue.popleft()
        try:
            fd = os.open(path, _DIR_FLAGS)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_dev != dev or (ident is not None and (st.st_dev, st.st_ino) != ident):
                continue
            kind = repository_kind(fd)
            if kind is not None:
                found.append((path, path if kind == "bare" else os.path.join(path, ".git")))
                continue
            if depth >= max_depth:
                continue
            with os.scandir(fd) as it:
                for e in it:
                    entries += 1
                    if entries > max_entries:
                        return found, True
                    if e.name.startswith(".") or not e.is_dir(follow_symlinks=False):
                        continue
                    est = e.stat(follow_symlinks=False)
                    queue.append((os.path.join(path, e.name), depth + 1,
                                  (est.st_dev, est.st_ino)))
        except OSError:
            continue
        finally:
            os.close(fd)
    return found, False


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    env["GIT_NO_REPLACE_OBJECTS"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def read_annex_uuid(git_dir: str) -> str | None:
    """``annex.uuid`` from the config file of the repository at ``git_dir`` (a regular
    file of at most :data:`CONFIG_MAX` bytes, not a link), parsed by ``git config
    --no-includes --file -``; None if there is none or anything is odd."""
    try:
        fd = os.open(os.path.join(git_dir, "config"),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > CONFIG_MAX:
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= CONFIG_MAX and (b := os.read(fd, CONFIG_MAX + 1 - size)):
            chunks.append(b)
            size += len(b)
    except OSError:
        return None
    finally:
        os.close(fd)
    if size > CONFIG_MAX:
        return None
    try:
        p = subprocess.run(["git", "config", "--no-includes", "--file", "-",
                            "--get", "annex.uuid"],
                           input=b"".join(chunks), capture_output=True, cwd="/",
                           env=_git_env(), timeout=GIT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = p.stdout.decode("utf-8", "replace").strip()
    return value if p.returncode == 0 and value else None


def read_uuid_log(git_dir: str) -> bytes | None:
    """The ``uuid.log`` on the git-annex branch of the repository at ``git_dir``: one
    ``git --git-dir cat-file`` (no work tree, so no fsmonitor; no hooks), at most
    :data:`UUID_LOG_MAX` bytes in :data:`GIT_TIMEOUT` seconds, else None."""
    return run_bounded(["git", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
                        f"--git-dir={git_dir}", "cat-file", "blob",
                        "refs/heads/git-annex:uuid.log"], UUID_LOG_MAX, GIT_TIMEOUT)


def run_bounded(args: Sequence[str], limit: int, timeout: float) -> bytes | None:
    """The standard output of ``args`` if it exits 0 within ``timeout`` seconds having
    written at most ``limit`` bytes; otherwise it is killed and None returned."""
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, cwd="/", env=_git_env())
    except OSError:
        return None
    with proc:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        out = bytearray()
        ok = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                ok = False  # too slow
                break
            b = os.read(fd, 65536)
            if not b:
                break
            out += b
            if len(out) > limit:
                ok = False  # too much
                break
        if ok:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                ok = False
        if not ok:
            proc.kill()
            proc.wait()
        return bytes(out) if ok and proc.returncode == 0 else None


def _set_config(git: Git, name: str, value: str) -> None:
    """``git config NAME VALUE``, tried again while another writer holds the lock."""
    for attempt in range(5):
        proc = git.run_status("config", name, value)
        if proc.returncode == 0:
            return
        if b"lock" not in proc.stderr or attempt == 4:
            raise GitError(["config", name], proc.returncode, proc.stderr)
        time.sleep(0.05 * (attempt + 1))


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
                _set_config(git, f"{section}.{key}", value)
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
