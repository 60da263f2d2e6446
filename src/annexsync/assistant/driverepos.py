"""Clones of this repository on a newly mounted drive: found, checked, added as remotes.

Theory of operation
-------------------
The mount watcher (:mod:`annexsync.assistant.mountwatcher`) calls this for each new
mount. Everything on a drive is untrusted: anyone can hand us one. The look is shallow
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
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from annexsync.annex.logs import current_uuid_values, parse_uuid_log
from annexsync.git.runner import Git, GitError
from annexsync.remotes.registry import RemoteSpec, local_path_of

# Looking for clones on a new drive (module docstring).
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


def set_config_retrying(git: Git, name: str, value: str) -> None:
    """``git config NAME VALUE``, tried again while another writer holds the lock."""
    for attempt in range(5):
        proc = git.run_status("config", name, value)
        if proc.returncode == 0:
            return
        if b"lock" not in proc.stderr or attempt == 4:
            raise GitError(["config", name], proc.returncode, proc.stderr)
        time.sleep(0.05 * (attempt + 1))
