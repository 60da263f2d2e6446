"""ssh with cached connections: URL parsing, argv building, masters, the GIT_SSH wrapper.

Theory of operation
-------------------
Every conversation with another host goes through the system OpenSSH, like
git-annex does, so ``~/.ssh/config``, agents and known hosts behave as the user
expects and git, rsync and annexsync all share one transport.

*Connection caching.* One ControlMaster per ``[user@]host[:port]`` lives in the
repository's ``.git/annex/ssh/`` directory (git-annex's directory and naming, so
both tools share a master): the socket is named ``host!port`` (``host`` without a
port), or the md5 of that name when it is longer than 32 characters. A unix socket
path must fit in ``sun_path`` (108 bytes, and ssh first binds a temporary name 17
bytes longer), so when the path would be too long the socket moves to a private
short directory under ``/tmp/annexsync-ssh-UID/``; if even that is too long,
caching is off for that host. Masters are started with ``ControlPersist`` and run
until :meth:`SshConnections.cleanup` (or :meth:`~SshConnections.stop_master`) stops
the ones nobody uses, as git-annex does at the end of a command; as a backstop a
master also exits after :data:`DEFAULT_PERSIST` of idleness (git-annex: forever),
so a process that never cleans up leaks nothing for long. A daemon keeps its
master busy, and ``persist="yes"`` is available.

*Keep-alives.* Unless the user's ssh configuration (``ssh -G``) sets
``ServerAliveInterval``, a master is started with 15 s keep-alives, so a link that
died silently is noticed in about a minute instead of when TCP gives up.

*Sidecar lock.* ``<socket>.lock`` is locked *shared* by every process that is using
(or about to use) the socket; cleanup takes an *exclusive* non-blocking lock before
``ssh -O stop``, so a master is never stopped under a user. The locks are fcntl
locks and conflict with git-annex's.

*git.* :meth:`SshConnections.git_env` returns environment variables that make
``git fetch``/``git push`` run :func:`wrapper_main` as their ssh: it parses the
OpenSSH-style arguments git passes, holds the shared lock, and runs ``ssh`` with the
same socket, so git reuses the cached connection.

Everything that comes from a URL or a config file is validated before it reaches an
argv: a host starting with ``-`` would be an ssh option.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from annexsync.annex.locks import Lock, LockBusy, lock_file
from annexsync.remotes.base import RemoteUnavailable

if TYPE_CHECKING:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.remotes.base import Remote
    from annexsync.remotes.registry import RemoteSpec

__all__ = [
    "ConfigLookup",
    "SshConnections",
    "SshLocation",
    "is_ssh_url",
    "parse_ssh_url",
    "register_remote_kinds",
    "shell_quote_command",
    "wrapper_main",
]

# sun_path is 108 bytes on Linux; ssh binds "<path>.<16 hex>" first, then renames.
_SUN_PATH = 108
_SSH_TMP_SUFFIX = 17
_MAX_SOCKET_NAME = 32  # git-annex hashes longer names (lengthofmd5s)

_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.%-]*|\[[0-9A-Fa-f:.%a-zA-Z]+\]")
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")

DEFAULT_PERSIST = "600"
"""ControlPersist: seconds an idle master stays up."""

KEEPALIVE_INTERVAL = 15
KEEPALIVE_COUNT = 4
"""A master notices a dead link after about a minute (unless the user configured it)."""
_keepalive_cache: dict[tuple[object, ...], list[str]] = {}
_keepalive_mutex = threading.Lock()

ENV_SOCKET_DIR = "ANNEXSYNC_SSH_SOCKET_DIR"
ENV_OPTIONS = "ANNEXSYNC_SSH_OPTIONS"
ENV_PROGRAM = "ANNEXSYNC_SSH_PROGRAM"
ENV_PERSIST = "ANNEXSYNC_SSH_PERSIST"
ENV_CACHING = "ANNEXSYNC_SSH_CACHING"


class ConfigLookup(Protocol):
    """What is read from git config: a ``GitConfig`` or a plain dict of lower-case names."""

    def get(self, name: str, default: str | None = None, /) -> str | None: ...


@dataclass(frozen=True)
class SshLocation:
    """Where an ssh URL points: ``[user@]host[:port]`` and the path on that host.

    ``path`` is as the remote shell should see it: absolute (``/srv/r``), in a home
    directory (``~/r``, ``~bob/r``), or relative to the login directory (``r``).
    """

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """``user@host`` or ``host``: the host argument of ssh."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return f"{self.user}@{host}" if self.user else host

    @property
    def annex_shell_dir(self) -> str:
        """The directory argument git-annex gives git-annex-shell (``/~/r`` for ``~/r``)."""
        p = self.path
        if p.startswith("~"):
            return "/" + p
        if not p.startswith("/"):
            return "/~/" + p
        return p

    def url(self) -> str:
        """The location as an ``ssh://`` URL."""
        port = f":{self.port}" if self.port else ""
        user = f"{self.user}@" if self.user else ""
        path = self.annex_shell_dir
        return f"ssh://{user}{self.host}{port}{path}"


def _check_host(host: str, url: str) -> str:
    if not _HOST_RE.fullmatch(host) or host.startswith("-"):
        raise ValueError(f"{url!r}: {host!r} is not a valid ssh host name")
    return host


def _check_user(user: str | None, url: str) -> str | None:
    if user is None:
        return None
    if not _USER_RE.fullmatch(user):
        raise ValueError(f"{url!r}: {user!r} is not a valid ssh user name")
    return user


def _check_path(path: str, url: str) -> str:
    if not path or _BAD_PATH_CHARS.search(path):
        raise ValueError(f"{url!r}: empty path or control characters in the path")
    return path


def is_ssh_url(url: str) -> bool:
    """True if git would reach ``url`` over ssh (``ssh://…`` or scp-like ``host:path``)."""
    if re.match(r"(?:ssh|git\+ssh|ssh\+git)://", url):
        return True
    if "://" in url or url.startswith(("/", ".", "~")):
        return False
    # scp-like: a colon before any slash (git's rule); "[host]:path" too.
    colon = url.find(":")
    slash = url.find("/")
    if url.startswith("["):
        close = url.find("]")
        return close > 0 and url[close + 1 : close + 2] == ":"
    return colon > 0 and (slash < 0 or colon < slash)


def parse_ssh_url(url: str) -> SshLocation:
    """Parse ``ssh://[user@]host[:port]/path`` or ``[user@]host:path``.

    Raises ValueError for anything else or anything unsafe (a host starting with
    ``-``, control characters, a bad port).
    """
    m = re.fullmatch(r"(?:ssh|git\+ssh|ssh\+git)://([^/]*)(/.*)?", url, re.DOTALL)
    if m:
        authority, path = m.group(1), m.group(2) or ""
        user = None
        if "@" in authority:
            user, authority = authority.rsplit("@", 1)
        port: int | None = None
        if authority.startswith("["):
            close = authority.find("]")
            if close < 0:
                raise ValueError(f"{url!r}: unterminated [ in host")
            host, rest = authority[: close + 1], authority[close + 1 :]
        else:
            host, _, rest = authority.partition(":")
            rest = ":" + rest if _ else ""
        if rest:
            if not re.fullmatch(r":[0-9]{1,5}", rest) or not 0 < int(rest[1:]) < 65536:
                raise ValueError(f"{url!r}: bad port")
            port = int(rest[1:])
        # ssh://host/~/r and ssh://host/~bob/r are home-relative, like git.
        if path.startswith("/~"):
            path = path[1:]
        return SshLocation(_check_host(host, url), _check_path(path, url),
                           _check_user(user, url), port)
    if not is_ssh_url(url):
        raise ValueError(f"{url!r} is not an ssh URL")
    authority, _, path = url.partition(":") if not url.startswith("[") else (
        url[: url.index("]") + 1], ":", url[url.index("]") + 2 :])
    user = None
    if "@" in authority:
        user, authority = authority.rsplit("@", 1)
    return SshLocation(_check_host(authority, url), _check_path(path, url),
                       _check_user(user, url), None)


def shell_quote_command(args: Sequence[str]) -> str:
    """One command line for the remote shell, every word single-quoted like git-annex."""
    return " ".join("'" + a.replace("'", "'\\''") + "'" for a in args)


def _socket_name(destination: str, port: int | None) -> str:
    name = f"{destination}!{port}" if port else destination
    if len(name.encode()) > _MAX_SOCKET_NAME or "/" in name:
        return hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()
    return name


def _fits(path: Path) -> bool:
    return len(os.fsencode(path)) + _SSH_TMP_SUFFIX < _SUN_PATH - 8


def _private_short_dir() -> Path | None:
    """``/tmp/annexsync-ssh-UID``: ours, 0700, not a symlink; None if it cannot be."""
    base = Path(tempfile.gettempdir())
    if len(os.fsencode(base)) > 20:
        base = Path("/tmp")
    d = base / f"annexsync-ssh-{os.getuid()}"
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return d


class SshConnections:
    """Cached ssh connections of one repository (or of the wrapper, from its env).

    Thread-safe. ``socket_dir`` None disables caching; ``options`` are extra ssh
    options (``remote.NAME.annex-ssh-options``) put before the host.
    """

    def __init__(self, socket_dir: Path | None, *, options: Sequence[str] = (),
                 program: Sequence[str] = ("ssh",), persist: str = DEFAULT_PERSIST,
                 caching: bool = True) -> None:
        self.socket_dir = socket_dir if caching else None
        self.options = list(options)
        self.program = list(program)
        self.persist = persist
        self._locks: dict[Path, Lock] = {}
        self._names: set[str] = set()
        self._mutex = threading.Lock()
        for opt in self.options:
            if _BAD_PATH_CHARS.search(opt):
                raise ValueError(f"control character in ssh option {opt!r}")

    # -- construction ------------------------------------------------------------
    @classmethod
    def for_repo(cls, git_dir: Path, config: ConfigLookup | None = None,
                 remote: str | None = None,
                 environ: Mapping[str, str] | None = None) -> SshConnections:
        """Connections for the repository whose git dir is ``git_dir``.

        ``config`` maps lower-cased git config names to values (``annex.sshcaching``,
        ``remote.NAME.annex-ssh-options``). ``GIT_SSH_COMMAND`` in ``environ``, when
        set by the user, replaces the ``ssh`` program (its caching options are kept).
        """
        config = config if config is not None else {}
        environ = os.environ if environ is None else environ
        caching = (config.get("annex.sshcaching") or "true").lower() not in (
            "false", "no", "off", "0")
        options: list[str] = []
        if remote is not None:
            raw = config.get(f"remote.{remote}.annex-ssh-options")
            if raw:
                options = shlex.split(raw)
        program: list[str] = ["ssh"]
        if not environ.get(ENV_SOCKET_DIR):
            if environ.get("GIT_SSH_COMMAND"):
                program = shlex.split(environ["GIT_SSH_COMMAND"])
            elif environ.get("GIT_SSH"):
                # An arbitrary program (plink...): no OpenSSH multiplexing options.
                program, caching = [environ["GIT_SSH"]], False
        return cls(git_dir / "annex" / "ssh", options=options, program=program,
                   caching=caching)

    @classmethod
    def from_wrapper_env(cls, environ: Mapping[str, str]) -> SshConnections:
        """The connections described by :meth:`git_env`'s variables."""
        sock = environ.get(ENV_SOCKET_DIR)
        program = shlex.split(environ.get(ENV_PROGRAM, "ssh")) or ["ssh"]
        return cls(
            Path(sock) if sock else None,
            options=shlex.split(environ.get(ENV_OPTIONS, "")),
            program=program,
            persist=environ.get(ENV_PERSIST, DEFAULT_PERSIST),
            caching=environ.get(ENV_CACHING, "1") == "1" and bool(sock),
        )

    # -- sockets -------------------------------------------------------------------
    def socket_path(self, destination: str, port: int | None = None) -> Path | None:
        """The ControlPath for a host, or None when caching is off or impossible."""
        if self.socket_dir is None:
            return None
        return self._socket_for_name(_socket_name(destination, port))

    def _socket_for_name(self, name: str) -> Path | None:
        assert self.socket_dir is not None
        path = self.socket_dir.absolute() / name
        if _fits(path):
            return path
        short = _private_short_dir()
        if short is None:
            return None
        digest = hashlib.md5(os.fsencode(path), usedforsecurity=False).hexdigest()
        path = short / digest
        return path if _fits(path) else None

    def _lock_path(self, sock: Path) -> Path:
        """``<name>.lock`` in the socket directory, also for a socket moved to /tmp, so
        that :meth:`cleanup` finds every socket of this repository from its locks."""
        assert self.socket_dir is not None
        if sock.parent == self.socket_dir.absolute():
            return Path(f"{sock}.lock")
        for entry in self._names:
            if self._socket_for_name(entry) == sock:
                return self.socket_dir.absolute() / f"{entry}.lock"
        return Path(f"{sock}.lock")

    def _hold(self, sock: Path) -> None:
        """Take (once per process) the shared sidecar lock of ``sock``."""
        with self._mutex:
            if sock in self._locks:
                return
            lockpath = self._lock_path(sock)
            lockpath.parent.mkdir(parents=True, exist_ok=True)
            self._locks[sock] = lock_file(lockpath, exclusive=False, blocking=True)

    def caching_options(self, destination: str, port: int | None) -> list[str]:
        """``-S SOCKET -o ControlMaster=auto -o ControlPersist=…`` (takes the lock)."""
        sock = self.socket_path(destination, port)
        if sock is None:
            return []
        with self._mutex:
            self._names.add(_socket_name(destination, port))
        self._hold(sock)
        return ["-S", str(sock), "-o", "ControlMaster=auto",
                "-o", f"ControlPersist={self.persist}",
                *self.keepalive_options(destination, port)]

    def keepalive_options(self, destination: str, port: int | None) -> list[str]:
        """``ServerAliveInterval`` for a master, unless the user's ssh config sets one.

        A master whose link died silently would otherwise hold every session on it
        (a push, the notifychanges stream) until TCP gives up, which takes many
        minutes. ``ssh -G`` tells what the user's configuration says (no connection
        is made); its answer is remembered per host for the life of the process.
        """
        key = (tuple(self.program), tuple(self.options), destination, port)
        with _keepalive_mutex:
            if key in _keepalive_cache:
                return _keepalive_cache[key]
        argv = [*self.program, *self.options, *(["-p", str(port)] if port else []),
                "-G", destination]
        opts: list[str] = []
        try:
            out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                 timeout=10).stdout.decode("utf-8", "replace")
            values = dict(ln.split(" ", 1) for ln in out.splitlines() if " " in ln)
            # BatchMode implies 300 s (15 min to notice a dead link): not the user's choice
            implied = {"0", "300"} if values.get("batchmode") == "yes" else {"0"}
            if values.get("serveraliveinterval", "0") in implied and "hostname" in values:
                opts = ["-o", f"ServerAliveInterval={KEEPALIVE_INTERVAL}",
                        "-o", f"ServerAliveCountMax={KEEPALIVE_COUNT}"]
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        with _keepalive_mutex:
            _keepalive_cache[key] = opts
        return opts

    # -- argv ----------------------------------------------------------------------
    def ssh_argv(self, loc: SshLocation | str, command: Sequence[str] | str | None,
                 *, port: int | None = None, extra: Sequence[str] = ()) -> list[str]:
        """The argv that runs ``command`` on the host over the cached connection.

        ``command`` is a list of words (quoted for the remote shell here) or an
        already-quoted string; None opens no command (``-N`` style use).
        """
        if isinstance(loc, SshLocation):
            destination, port = loc.destination, loc.port
        else:
            destination = loc
        if destination.startswith("-"):
            raise ValueError(f"refusing ssh host {destination!r}")
        argv = [*self.program, *self.caching_options(destination, port), *self.options,
                *extra]
        if port:
            argv += ["-p", str(port)]
        argv += ["-T", destination]
        if command is not None:
            argv.append(command if isinstance(command, str) else shell_quote_command(command))
        return argv

    def rsync_rsh(self, destination: str, port: int | None = None,
                  transport: Sequence[str] | None = None) -> str:
        """The ``rsync -e`` value: ssh with caching options, quoted for rsync."""
        prog = list(transport) if transport else list(self.program)
        argv = [*prog, *self.caching_options(destination, port), *self.options]
        if port:
            argv += ["-p", str(port)]
        argv.append("-T")
        return " ".join(shlex.quote(a) for a in argv)

    # -- masters -------------------------------------------------------------------
    def ensure_master(self, loc: SshLocation | str, *, port: int | None = None,
                      timeout: float = 60.0) -> None:
        """Connect now (``ssh … true`` in batch mode) so a master is running.

        Raises :class:`RemoteUnavailable` with ssh's last message when it cannot connect.
        """
        dest = loc.destination if isinstance(loc, SshLocation) else loc
        if isinstance(loc, SshLocation):
            port = loc.port
        if self.master_running(dest, port):
            return
        argv = self.ssh_argv(dest, "true", port=port, extra=["-o", "BatchMode=yes"])
        argv.insert(argv.index("-T"), "-n")
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RemoteUnavailable(f"ssh to {dest}: no answer within {timeout:.0f}s")
            except FileNotFoundError:
                raise RemoteUnavailable(f"ssh to {dest}: {self.program[0]} not installed")
            # 255 is ssh's own failure; any other status came from the remote command,
            # so the connection is up (a forced command may well refuse "true").
            if proc.returncode == 255:
                err.seek(0)
                raise RemoteUnavailable(f"ssh to {dest} failed: {last_line(err.read(65536))}")

    def master_running(self, destination: str, port: int | None = None) -> bool:
        """Does a master accept connections on the host's socket? (No process is run.)"""
        sock = self.socket_path(destination, port)
        if sock is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            try:
                s.connect(os.fspath(sock))
            except OSError:
                return False
        return True

    def master_pid(self, destination: str, port: int | None = None) -> int | None:
        """The pid of the running master for a host (``ssh -O check``), or None."""
        sock = self.socket_path(destination, port)
        if sock is None or not sock.exists():
            return None
        proc = subprocess.run([*self.program, "-S", str(sock), "-O", "check", destination],
                              capture_output=True, stdin=subprocess.DEVNULL)
        m = re.search(rb"pid=([0-9]+)", proc.stderr)
        return int(m.group(1)) if proc.returncode == 0 and m else None

    def release(self) -> None:
        """Drop this process's shared locks (the masters keep running)."""
        with self._mutex:
            locks, self._locks = self._locks, {}
        for lk in locks.values():
            lk.release()

    def cleanup(self) -> list[str]:
        """Stop every master in the socket directory that no process is using.

        Our own shared locks are dropped first. Returns the socket names stopped.
        """
        self.release()
        if self.socket_dir is None or not self.socket_dir.is_dir():
            return []
        stopped = []
        for entry in sorted(os.listdir(self.socket_dir)):
            if not entry.endswith(".lock"):
                continue
            name = entry[: -len(".lock")]
            sock = self._socket_for_name(name)
            if sock is None:
                continue
            try:
                if not stat.S_ISSOCK(os.lstat(sock).st_mode):
                    continue
            except OSError:
                continue
            if self._stop_if_unused(sock, self.socket_dir / entry):
                stopped.append(name)
        return stopped

    def _stop_if_unused(self, sock: Path, lockpath: Path) -> bool:
        try:
            lk = lock_file(lockpath, exclusive=True, blocking=False)
        except (LockBusy, OSError):
            return False
        try:
            subprocess.run([*self.program, "-S", str(sock), "-O", "stop", "localhost"],
                           capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
            return True
        except (OSError, subprocess.TimeoutExpired):
            return False
        finally:
            lk.release()

    def stop_master(self, destination: str, port: int | None = None) -> bool:
        """Stop one host's master if unused (see :meth:`cleanup`)."""
        sock = self.socket_path(destination, port)
        if sock is None:
            return False
        with self._mutex:
            self._names.add(_socket_name(destination, port))
            lk = self._locks.pop(sock, None)
        if lk is not None:
            lk.release()
        return sock.exists() and self._stop_if_unused(sock, self._lock_path(sock))

    # -- git -------------------------------------------------------------------------
    def git_env(self) -> dict[str, str]:
        """Environment for git processes so that their ssh uses these connections.

        ``GIT_SSH`` names the ``annexsync-ssh-wrapper`` script when it is installed
        beside this Python; otherwise ``GIT_SSH_COMMAND`` runs this module with ``-m``.
        """
        env = {
            ENV_SOCKET_DIR: str(self.socket_dir.absolute()) if self.socket_dir else "",
            ENV_OPTIONS: shlex.join(self.options),
            ENV_PROGRAM: shlex.join(self.program),
            ENV_PERSIST: self.persist,
            ENV_CACHING: "1" if self.socket_dir is not None else "0",
            "GIT_SSH_VARIANT": "ssh",
        }
        script = Path(sys.executable).parent / "annexsync-ssh-wrapper"
        if script.exists():
            env["GIT_SSH"] = str(script)
            env["GIT_SSH_COMMAND"] = ""
        else:
            env["GIT_SSH_COMMAND"] = shlex.join([sys.executable, "-m", "annexsync.remotes.ssh"])
        return env

    def close(self) -> None:
        """Same as :meth:`release`."""
        self.release()


def last_line(data: bytes, limit: int = 300) -> str:
    """The last non-empty line of a (hostile) message, printable and bounded."""
    text = data.decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "no error message"
    line = "".join(c if c.isprintable() else "?" for c in lines[-1])
    return line if len(line) <= limit else line[:limit] + "…"


def register_remote_kinds() -> None:
    """Registry plugin hook: git remotes with ssh URLs speak P2P over cached ssh."""
    from annexsync.remotes.registry import EXPENSIVE_COST, register_git_kind

    def ssh_git_remote(spec: RemoteSpec, repo: AnnexRepo) -> Remote:
        from annexsync.remotes.p2p import ssh_remote_factory

        return ssh_remote_factory(spec, repo)

    register_git_kind("ssh", ssh_git_remote, EXPENSIVE_COST)


# -- the GIT_SSH wrapper -------------------------------------------------------------------

_SSH_FLAGS_WITH_ARG = set("BbcDEeFIiJLlmOopQRSWw")


def _parse_git_ssh_args(argv: Sequence[str]) -> tuple[list[str], int | None, str, list[str]]:
    """Split what git passes to ssh: (options, port, host, command words)."""
    opts: list[str] = []
    port: int | None = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-") or a == "-":
            break
        flag = a[1:2]
        if flag in _SSH_FLAGS_WITH_ARG:
            value = a[2:] if len(a) > 2 else (argv[i + 1] if i + 1 < len(argv) else None)
            if value is None:
                raise ValueError(f"ssh option {a} needs a value")
            i += 1 if len(a) > 2 else 2
            if flag == "p":
                if not value.isdigit() or not 0 < int(value) < 65536:
                    raise ValueError(f"bad port {value!r}")
                port = int(value)
            else:
                opts += ["-" + flag, value]
            continue
        opts.append(a)
        i += 1
    if i >= len(argv):
        raise ValueError("no host given")
    host = argv[i]
    if host.startswith("-"):
        raise ValueError(f"refusing ssh host {host!r}")
    return opts, port, host, list(argv[i + 1 :])


def wrapper_main(argv: Sequence[str] | None = None) -> int:
    """``GIT_SSH`` entry point: run ssh as git asked, over the cached connection."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["-G"] or (args and args[0] == "-G"):
        return 0  # git's probe for an OpenSSH-compatible program
    try:
        opts, port, host, command = _parse_git_ssh_args(args)
    except ValueError as e:
        print(f"annexsync-ssh-wrapper: {e}", file=sys.stderr)
        return 255
    conns = SshConnections.from_wrapper_env(os.environ)
    env = {k: v for k, v in os.environ.items()
           if k not in (ENV_SOCKET_DIR, ENV_OPTIONS, ENV_PROGRAM, ENV_PERSIST, ENV_CACHING)}
    # git passed the remote command already quoted for the remote shell.
    remote_command = " ".join(command) if command else None
    try:
        full = conns.ssh_argv(host, remote_command, port=port, extra=opts)
    except ValueError as e:
        print(f"annexsync-ssh-wrapper: {e}", file=sys.stderr)
        return 255
    try:
        child = subprocess.Popen(full, env=env)
    except OSError as e:
        print(f"annexsync-ssh-wrapper: cannot run {full[0]}: {e.strerror}", file=sys.stderr)
        return 255

    def forward(signum: int, _frame: object) -> None:
        child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        rc = child.wait()
    finally:
        conns.release()
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(wrapper_main())
