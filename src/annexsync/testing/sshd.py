"""A real OpenSSH server on 127.0.0.1 for tests and benchmarks.

Theory of operation
-------------------
:func:`start_sshd` runs the system ``sshd`` (Debian's openssh-server) in the
foreground (``-D``) as the current user, listening on a free loopback port, with
everything it needs made in a scratch directory: an ed25519 host key, an
``authorized_keys`` file, its own ``sshd_config`` (no PAM, no strict modes, pid file
and log in the scratch directory). Nothing outside that directory is touched,
except that a root sshd needs the privilege separation directory ``/run/sshd``,
which is created if missing.

Clients reach it through a generated client config (``ssh -F FILE``) that maps a
host alias per client key to 127.0.0.1:PORT with a private known-hosts file, so
URLs look like ``ssh://ALIAS/path`` and the same ``-F FILE`` works for annexsync,
git (``GIT_SSH_COMMAND``) and git-annex (``remote.NAME.annex-ssh-options``).
:meth:`SshServer.add_key` adds a client key with ``authorized_keys`` options (a
forced ``command=`` for instance); sshd re-reads that file on every login.

Sessions get a fixed environment through ``SetEnv``: ``PATH`` starting with the
directory of the running Python (the virtualenv's ``bin``, where ``git-annex-shell``
and ``annexsync-shell`` live, also in a fresh CI clone), and a hermetic git
configuration and identity, so the server side of a test is as hermetic as the
client side.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


class SshdUnavailable(RuntimeError):
    """sshd cannot be started here; the message says why (tests skip with it)."""


def find_sshd() -> str | None:
    """Absolute path of sshd (it must be run by absolute path), or None."""
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("sshd")
    return os.path.abspath(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote_config(value: str) -> str:
    if any(c in value for c in ' \t"'):
        if '"' in value:
            raise ValueError(f"cannot put a double quote in an ssh config value: {value!r}")
        return f'"{value}"'
    return value


@dataclass
class SshServer:
    """A running sshd and what a client needs to reach it."""

    dir: Path
    port: int
    user: str
    proc: subprocess.Popen[bytes]
    config_file: Path
    log_file: Path
    authorized_keys: Path
    known_hosts: Path
    session_env: dict[str, str]
    host: str = "127.0.0.1"
    aliases: dict[str, Path] = field(default_factory=dict)

    @property
    def alias(self) -> str:
        """The default host alias (unrestricted key)."""
        return "annexsync-test"

    def ssh_options(self) -> list[str]:
        """Options that make ``ssh`` reach this server under its aliases."""
        return ["-F", str(self.config_file)]

    def git_ssh_command(self) -> str:
        """A ``GIT_SSH_COMMAND`` for git and git-annex."""
        return f"ssh -F '{self.config_file}'"

    def url(self, path: Path | str, alias: str | None = None) -> str:
        """``ssh://ALIAS/abs/path`` for a path on this (local) machine."""
        return f"ssh://{alias or self.alias}{Path(path).absolute().as_posix()}"

    def add_key(self, name: str, options: str = "", alias: str | None = None) -> str:
        """Make a client key, authorize it with ``options``; return its host alias."""
        alias = alias or f"annexsync-test-{name}"
        if alias in self.aliases:
            raise ValueError(f"key {name} exists")
        key = self.dir / f"client_{name}"
        _keygen(key)
        pub = Path(f"{key}.pub").read_text()
        line = f"{options} {pub.strip()}" if options else pub.strip()
        with open(self.authorized_keys, "a") as f:
            f.write(line + "\n")
        self.aliases[alias] = key
        self._write_client_config()
        return alias

    def accepted_logins(self) -> int:
        """How many logins sshd accepted so far (one per ssh connection)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return text.count("Accepted publickey")

    def _write_client_config(self) -> None:
        blocks = []
        for alias, key in self.aliases.items():
            blocks.append(
                f"Host {alias}\n"
                f"  HostName {self.host}\n"
                f"  Port {self.port}\n"
                f"  User {self.user}\n"
                f"  IdentityFile {_quote_config(str(key))}\n"
                f"  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {_quote_config(str(self.known_hosts))}\n"
                f"  StrictHostKeyChecking no\n"
                f"  BatchMode yes\n"
                f"  LogLevel ERROR\n"
            )
        tmp = self.config_file.with_name(self.config_file.name + ".tmp")
        tmp.write_text("".join(blocks))
        os.replace(tmp, self.config_file)

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (they outlive the listener unless stopped)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            # "pid (comm) state ppid ...": comm may contain spaces, so split after ")".
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) > 1 and int(fields[1]) == self.proc.pid:
                pids.append(int(entry))
        return pids

    def stop(self) -> None:
        """Stop sshd and every session it still serves (cached masters then exit too)."""
        if self.proc.poll() is None:
            for pid in self.session_pids():
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop sshd and all its sessions (as a crash or reboot would), then start it
        again on the same port with the same keys: clients must reconnect."""
        self.stop()
        sshd = find_sshd()
        assert sshd is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = subprocess.Popen(
                [sshd, "-D", "-f", str(self.dir / "sshd_config"), "-E", str(self.log_file)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True)
            while time.monotonic() < deadline and proc.poll() is None:
                if _banner(self.port):
                    self.proc = proc
                    return
                time.sleep(0.02)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            time.sleep(0.1)  # the port may still be held by the old listener
        raise SshdUnavailable(f"sshd did not come back on port {self.port}")

    def __enter__(self) -> SshServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _keygen(path: Path) -> None:
    for stale in (path, Path(f"{path}.pub")):
        stale.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "annexsync-test", "-f", str(path)],
        check=True, capture_output=True, stdin=subprocess.DEVNULL,
    )


def session_environment(dir: Path, bin_dirs: list[str] | None = None) -> dict[str, str]:
    """The environment sshd gives every session: PATH with the venv first, hermetic git."""
    home = dir / "home"
    home.mkdir(exist_ok=True)
    gitconfig = home / "gitconfig-empty"
    gitconfig.write_text("[gc]\n\tautoDetach = false\n")  # as testing.gitenv
    path = [*(bin_dirs or []), str(Path(sys.executable).parent),
            "/usr/local/bin", "/usr/bin", "/bin"]
    return {
        "PATH": ":".join(dict.fromkeys(path)),
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Server",
        "GIT_AUTHOR_EMAIL": "server@example.com",
        "GIT_COMMITTER_NAME": "Server",
        "GIT_COMMITTER_EMAIL": "server@example.com",
        "LC_ALL": "C.UTF-8",
    }


def start_sshd(dir: Path, *, bin_dirs: list[str] | None = None,
               timeout: float = 15.0) -> SshServer:
    """Start sshd on a free loopback port with its files in ``dir``.

    Raises :class:`SshdUnavailable` (with the reason) when it cannot be started.
    """
    sshd = find_sshd()
    if sshd is None:
        raise SshdUnavailable("sshd not installed (apt-get install openssh-server)")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        raise SshdUnavailable("ssh client not installed (apt-get install openssh-client)")
    dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        # A root sshd refuses to start without its privilege separation directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key = dir / "host_ed25519"
    if not host_key.exists():
        _keygen(host_key)
    authorized = dir / "authorized_keys"
    authorized.touch()
    env = session_environment(dir, bin_dirs)
    try:
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
    except (KeyError, ImportError):
        raise SshdUnavailable("the current user has no passwd entry; sshd cannot log in")
    last_error = ""
    for _attempt in range(3):
        port = _free_port()
        log = dir / "sshd.log"
        log.unlink(missing_ok=True)
        config = dir / "sshd_config"
        setenv = " ".join(f'"{k}={v}"' for k, v in env.items())
        config.write_text(
            f"Port {port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {host_key}\n"
            f"PidFile {dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {authorized}\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "PermitUserRC no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "UseDNS no\n"
            "MaxSessions 100\n"
            "MaxStartups 100\n"
            "LogLevel VERBOSE\n"
            f"SetEnv {setenv}\n"
        )
        proc = subprocess.Popen(
            [sshd, "-D", "-f", str(config), "-E", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _banner(port):
                server = SshServer(
                    dir=dir, port=port, user=user, proc=proc,
                    config_file=dir / "ssh_config", log_file=log,
                    authorized_keys=authorized, known_hosts=dir / "known_hosts",
                    session_env=env,
                )
                try:
                    server.add_key("default", alias=server.alias)
                except BaseException:
                    server.stop()
                    raise
                return server
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        logtext = log.read_text(errors="replace") if log.exists() else ""
        lines = (stderr + logtext).strip().splitlines()
        last_error = lines[-1] if lines else f"exit status {proc.returncode}"
    raise SshdUnavailable(f"sshd did not start: {last_error}")


def _banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


_shared: SshServer | None = None
_shared_error: SshdUnavailable | None = None
_shared_lock = threading.Lock()


def shared_sshd() -> SshServer:
    """One sshd per process, started on first use and stopped at exit.

    Test fixtures and contract-suite builders (which get no fixtures) share it.
    Raises :class:`SshdUnavailable` (every time) if it could not start.
    """
    global _shared, _shared_error
    with _shared_lock:
        if _shared is not None and _shared.proc.poll() is None:
            return _shared
        if _shared_error is not None:
            raise _shared_error
        base = Path(tempfile.mkdtemp(prefix="annexsync-sshd-"))
        try:
            _shared = start_sshd(base)
        except SshdUnavailable as e:
            _shared_error = e
            shutil.rmtree(base, ignore_errors=True)
            raise
        server = _shared

        def stop() -> None:
            server.stop()
            shutil.rmtree(base, ignore_errors=True)

        atexit.register(stop)
        return server
