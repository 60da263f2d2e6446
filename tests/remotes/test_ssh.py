"""ssh URLs, argv building, socket naming, the GIT_SSH wrapper, and connection caching
against a real sshd (one master for many operations, shared with git)."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from annexsync.annex.keys import Key
from annexsync.remotes.base import RemoteInfo, RemoteUnavailable
from annexsync.remotes.p2p import ssh_git_remote
from annexsync.remotes.ssh import (
    SshConnections,
    SshLocation,
    _parse_git_ssh_args,
    is_ssh_url,
    parse_ssh_url,
    shell_quote_command,
)
from annexsync.testing.sshd import SshServer


@pytest.mark.parametrize(("url", "loc", "shell_dir"), [
    ("ssh://u@h:2222/~/r", SshLocation("h", "~/r", "u", 2222), "/~/r"),
    ("ssh://h/srv/r.git", SshLocation("h", "/srv/r.git"), "/srv/r.git"),
    ("ssh://h/~bob/r", SshLocation("h", "~bob/r"), "/~bob/r"),
    ("git+ssh://h/x", SshLocation("h", "/x"), "/x"),
    ("host:r", SshLocation("host", "r"), "/~/r"),
    ("host:~/r", SshLocation("host", "~/r"), "/~/r"),
    ("u@host:/abs/p", SshLocation("host", "/abs/p", "u"), "/abs/p"),
    ("ssh://[::1]:22/x", SshLocation("[::1]", "/x", None, 22), "/x"),
])
def test_parse_ssh_urls(url: str, loc: SshLocation, shell_dir: str) -> None:
    assert is_ssh_url(url)
    assert parse_ssh_url(url) == loc
    assert loc.annex_shell_dir == shell_dir


@pytest.mark.parametrize("url", ["/local/path", "./a:b", "a/b:c", "file:///x", "~/r",
                                 "https://h/r"])
def test_local_and_other_urls_are_not_ssh(url: str) -> None:
    assert not is_ssh_url(url)
    with pytest.raises(ValueError):
        parse_ssh_url(url)


@pytest.mark.parametrize("url", [
    "ssh://-oProxyCommand=touch%20x/r", "-oProxyCommand=x:r", "ssh://h:0/x", "ssh://h:70000/x",
    "ssh://h/x\ny", "ssh://h", "ssh://u;rm@h/x", "h:",
])
def test_hostile_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_ssh_url(url)


def test_argv_and_quoting(tmp_path: Path) -> None:
    conns = SshConnections(tmp_path / "ssh", options=["-F", "/cfg"])
    argv = conns.ssh_argv(parse_ssh_url("ssh://u@h:2222/~/r"), ["git-annex-shell", "p2pstdio",
                                                                "/~/it's", "u"])
    sock = tmp_path / "ssh" / "u@h!2222"
    assert argv == ["ssh", "-S", str(sock), "-o", "ControlMaster=auto",
                    "-o", "ControlPersist=600", "-F", "/cfg", "-p", "2222", "-T", "u@h",
                    "'git-annex-shell' 'p2pstdio' '/~/it'\\''s' 'u'"]
    assert shlex.split(argv[-1]) == ["git-annex-shell", "p2pstdio", "/~/it's", "u"]
    assert (tmp_path / "ssh" / "u@h!2222.lock").exists()
    with pytest.raises(ValueError):
        conns.ssh_argv("-oProxyCommand=x", "true")
    assert shell_quote_command(["a b", "$x"]) == "'a b' '$x'"
    conns.release()


def test_socket_names_like_git_annex_and_short_fallback(tmp_path: Path) -> None:
    conns = SshConnections(tmp_path / "s")
    assert conns.socket_path("host") == tmp_path / "s" / "host"
    long_host = "a-rather-long-host-name.example.org"
    name = conns.socket_path(long_host, 22)
    assert name is not None and len(name.name) == 32  # md5, as git-annex names it
    deep = tmp_path / ("d" * 90) / ".git" / "annex" / "ssh"
    conns = SshConnections(deep)
    sock = conns.socket_path("host", 22)
    assert sock is not None and len(os.fsencode(sock)) < 90
    assert sock.parent.name == f"annexsync-ssh-{os.getuid()}"
    assert oct(sock.parent.stat().st_mode & 0o777) == "0o700"
    conns.caching_options("host", 22)
    # The lock stays in the repository, so cleanup finds the moved socket.
    assert (deep / "host!22.lock").exists()
    conns.release()
    off = SshConnections(tmp_path / "s", caching=False)
    assert off.socket_path("host") is None
    assert off.ssh_argv("host", "true") == ["ssh", "-T", "host", "true"]


def test_settings_from_config_and_environment(tmp_path: Path) -> None:
    cfg = {"remote.r.annex-ssh-options": "-F '/a b/cfg' -i key", "annex.sshcaching": "false"}
    conns = SshConnections.for_repo(tmp_path, cfg, remote="r", environ={})
    assert conns.options == ["-F", "/a b/cfg", "-i", "key"]
    assert conns.socket_dir is None
    conns = SshConnections.for_repo(tmp_path, {}, environ={"GIT_SSH_COMMAND": "ssh -4"})
    assert conns.program == ["ssh", "-4"] and conns.socket_dir == tmp_path / "annex" / "ssh"
    env = conns.git_env()
    again = SshConnections.from_wrapper_env(env)
    assert (again.socket_dir, again.program, again.options) == (
        conns.socket_dir.absolute(), ["ssh", "-4"], [])
    assert env["GIT_SSH_VARIANT"] == "ssh"


def test_wrapper_parses_what_git_passes() -> None:
    assert _parse_git_ssh_args(
        ["-o", "SendEnv=GIT_PROTOCOL", "-p", "2222", "-4", "u@h", "git-upload-pack '/r'"]
    ) == (["-o", "SendEnv=GIT_PROTOCOL", "-4"], 2222, "u@h", ["git-upload-pack '/r'"])
    assert _parse_git_ssh_args(["-p2222", "h", "cmd"]) == ([], 2222, "h", ["cmd"])
    with pytest.raises(ValueError):
        _parse_git_ssh_args(["-p", "x", "h"])
    with pytest.raises(ValueError):
        _parse_git_ssh_args(["--", "-oProxyCommand=x", "cmd"])


# -- against sshd -------------------------------------------------------------------------


def test_one_master_for_many_operations_shared_with_git(
    sshd: SshServer, ssh_conns: Callable[[Path], SshConnections], tmp_path: Path,
    git_annex: str,
) -> None:
    server = tmp_path / "server"
    server.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=server, check=True)
    subprocess.run([git_annex, "init", "-q", "srv"], cwd=server, check=True)
    (server / "f").write_text("content\n")
    subprocess.run([git_annex, "add", "-q", "f"], cwd=server, check=True)
    subprocess.run(["git", "commit", "-qm", "f"], cwd=server, check=True)
    key = Key.parse(subprocess.run([git_annex, "lookupkey", "f"], cwd=server, check=True,
                                   capture_output=True, text=True).stdout.strip())
    srv_uuid = subprocess.run(["git", "config", "annex.uuid"], cwd=server,
                              capture_output=True, text=True).stdout.strip()
    conns = ssh_conns(tmp_path / "client" / ".git")
    logins = sshd.accepted_logins()
    remotes = [ssh_git_remote(RemoteInfo(f"r{i}", srv_uuid, "git", url=sshd.url(server)),
                              str(uuid.uuid4()), conns, shell="annexsync-shell")
               for i in range(2)]
    master = None
    for _round in range(5):
        for r in remotes:
            assert r.check_present(key)
            sink = io.BytesIO()
            r.retrieve(key, sink, 0, lambda n: None)
            assert sink.getvalue() == b"content\n"
            with r.lock_content(key) as locked:
                assert locked
        pid = conns.master_pid("annexsync-test")
        assert pid is not None and (master is None or pid == master)
        master = pid
    # git uses the same master through the wrapper.
    env = {**os.environ, **conns.git_env()}
    out = subprocess.run(["git", "ls-remote", sshd.url(server)], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "refs/heads/main" in out
    subprocess.run(["git", "clone", "-q", sshd.url(server), str(tmp_path / "clone")], env=env,
                   check=True, capture_output=True)
    assert sshd.accepted_logins() - logins == 1
    assert conns.master_pid("annexsync-test") == master
    for r in remotes:
        r.close()

    # cleanup does not stop a master another process is using, then does.
    other = SshConnections(conns.socket_dir, options=sshd.ssh_options())
    other.caching_options("annexsync-test", None)
    assert conns.cleanup() == []
    assert conns.master_pid("annexsync-test") == master
    other.release()
    assert conns.cleanup() == ["annexsync-test"]
    assert conns.master_pid("annexsync-test") is None


def test_unreachable_host_is_unavailable(tmp_path: Path, sshd: SshServer) -> None:
    conns = SshConnections(tmp_path / "s", options=[*sshd.ssh_options(), "-o", "Port=1",
                                                    "-o", "ConnectTimeout=5"])
    with pytest.raises(RemoteUnavailable, match="ssh to annexsync-test failed"):
        conns.ensure_master("annexsync-test")
    conns.cleanup()


def test_masters_get_keepalives_unless_the_user_configured_them(tmp_path: Path) -> None:
    if shutil.which("ssh") is None:
        pytest.skip("ssh client not installed")
    plain, own = tmp_path / "plain.cfg", tmp_path / "own.cfg"
    plain.write_text("Host *\n  BatchMode yes\n")
    own.write_text("Host *\n  ServerAliveInterval 7\n")
    argv = SshConnections(tmp_path / "a", options=["-F", str(plain)]).ssh_argv("h", "true")
    assert argv.index("ServerAliveInterval=15") < argv.index("-T")
    argv = SshConnections(tmp_path / "b", options=["-F", str(own)]).ssh_argv("h", "true")
    assert not [a for a in argv if a.startswith("ServerAlive")]  # the user's 7 s stands
