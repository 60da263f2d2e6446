"""P2P over real ssh on loopback: our client against git-annex-shell and annexsync-shell,
git-annex's client against annexsync-shell, connection loss mid-transfer."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from annexsync.annex.backends import hash_file
from annexsync.annex.keys import Key
from annexsync.remotes.base import RemoteError, RemoteInfo, RemoteUnavailable
from annexsync.remotes.p2p import P2PRemote, SshP2PConnector, ssh_configlist, ssh_git_remote
from annexsync.remotes.ssh import SshConnections, parse_ssh_url
from annexsync.testing.sshd import SshServer

pytestmark = pytest.mark.interop


def sh(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
       ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def add_file(repo: Path, git_annex: str, name: str, data: bytes) -> Key:
    (repo / name).write_bytes(data)
    sh(repo, git_annex, "add", "-q", name)
    sh(repo, "git", "commit", "-q", "-m", f"add {name}")
    return Key.parse(sh(repo, git_annex, "lookupkey", name).stdout.strip())


def uuid_of(repo: Path) -> str:
    return sh(repo, "git", "config", "annex.uuid").stdout.strip()


def whereis_here(repo: Path, git_annex: str, key: Key) -> bool:
    out = sh(repo, git_annex, "whereis", "--key", str(key), check=False).stdout
    return "[here]" in out or "-- here" in out or "(here)" in out


@pytest.fixture
def server(annex_repo: Callable[[Path, str], Path], tmp_path: Path, git_annex: str) -> Path:
    repo = annex_repo(tmp_path / "server", "server")
    add_file(repo, git_annex, "hello.txt", b"hello world\n")
    return repo


def remote(sshd: SshServer, conns: SshConnections, repo: Path, shell: str | None,
           client_uuid: str) -> P2PRemote:
    info = RemoteInfo("origin", uuid_of(repo), "git", url=sshd.url(repo), supports_locking=True)
    return ssh_git_remote(info, client_uuid, conns, shell=shell)


@pytest.mark.parametrize("shell", ["git-annex-shell", "annexsync-shell"])
def test_client_against_a_p2pstdio_server(
    shell: str, sshd: SshServer, ssh_conns: Callable[[Path], SshConnections], server: Path,
    tmp_path: Path, git_annex: str,
) -> None:
    conns = ssh_conns(tmp_path / "client" / ".git")
    client_uuid = str(uuid.uuid4())
    r = remote(sshd, conns, server, shell, client_uuid)
    key = Key.parse(sh(server, git_annex, "lookupkey", "hello.txt").stdout.strip())
    assert r.check_present(key)
    sink = io.BytesIO()
    r.retrieve(key, sink, 6, lambda n: None)
    assert sink.getvalue() == b"world\n"

    new = tmp_path / "new.bin"
    new.write_bytes(os.urandom(300_000))
    new_key, _ = hash_file(new)
    moved: list[int] = []
    r.store(new_key, new, moved.append)
    assert sum(moved) == 300_000
    assert r.check_present(new_key)

    with r.lock_content(new_key) as locked:
        assert locked
        with pytest.raises(RemoteError):
            r.remove(new_key)  # a locked copy is never dropped
    r.remove(new_key)
    assert not r.check_present(new_key)
    r.close()
    # The server logged its own location changes, readable by git-annex there.
    assert whereis_here(server, git_annex, key)
    assert not whereis_here(server, git_annex, new_key)
    log = sh(server, "git", "show", f"git-annex:{new_key.hashdir_lower}{new_key}.log").stdout
    assert f"0 {uuid_of(server)}" in log
    assert sh(server, git_annex, "fsck", "-q", "--fast").returncode == 0


def test_configlist_over_ssh(sshd: SshServer, ssh_conns: Callable[[Path], SshConnections],
                             server: Path, tmp_path: Path) -> None:
    conns = ssh_conns(tmp_path / "c" / ".git")
    loc = parse_ssh_url(sshd.url(server))
    for shell in ("annexsync-shell", "git-annex-shell"):
        assert ssh_configlist(conns, loc, shell)["annex.uuid"] == uuid_of(server)


def test_missing_shell_falls_back_to_git_annex_shell(
    sshd: SshServer, ssh_conns: Callable[[Path], SshConnections], server: Path, tmp_path: Path
) -> None:
    conns = ssh_conns(tmp_path / "c" / ".git")
    connector = SshP2PConnector(parse_ssh_url(sshd.url(server)), conns, str(uuid.uuid4()),
                                uuid_of(server), "origin")
    connector.shells = ["annexsync-shell-not-installed", "git-annex-shell"]
    r = P2PRemote(RemoteInfo("origin", uuid_of(server), "git"), connector)
    assert r.available()
    assert connector.shells == ["git-annex-shell"]
    r.close()


def test_wrong_remote_uuid_is_refused(sshd: SshServer,
                                      ssh_conns: Callable[[Path], SshConnections],
                                      server: Path, tmp_path: Path) -> None:
    conns = ssh_conns(tmp_path / "c" / ".git")
    info = RemoteInfo("origin", str(uuid.uuid4()), "git", url=sshd.url(server))
    r = ssh_git_remote(info, str(uuid.uuid4()), conns, shell="annexsync-shell")
    with pytest.raises(RemoteError, match="expected repository UUID"):
        r.check_present(Key.parse("SHA256-s1--" + "0" * 64))
    r.close()


def test_killed_master_mid_transfer_is_a_clear_error_and_resumes(
    sshd: SshServer, ssh_conns: Callable[[Path], SshConnections], server: Path,
    tmp_path: Path, git_annex: str,
) -> None:
    data = os.urandom(24 << 20)
    key = add_file(server, git_annex, "big.bin", data)
    conns = ssh_conns(tmp_path / "c" / ".git")
    r = remote(sshd, conns, server, "annexsync-shell", str(uuid.uuid4()))
    assert r.check_present(key)
    master = conns.master_pid("annexsync-test")
    assert master is not None
    got = bytearray()

    class KillingSink:
        def write(self, chunk: bytes) -> None:
            if not got:
                os.kill(master, signal.SIGKILL)
            got.extend(chunk)

    with pytest.raises(RemoteUnavailable, match="connection to origin lost"):
        r.retrieve(key, KillingSink(), 0, lambda n: None)
    assert 0 < len(got) < len(data)
    assert bytes(got) == data[: len(got)]  # partial data is good data, kept for resume

    class Sink:
        def write(self, chunk: bytes) -> None:
            got.extend(chunk)

    r.retrieve(key, Sink(), len(got), lambda n: None)  # a new master, resumed
    assert bytes(got) == data
    assert conns.master_pid("annexsync-test") not in (None, master)
    r.close()


def git_annex_clone(sshd: SshServer, server: Path, dest: Path, git_annex: str,
                    shell: str) -> Path:
    env = {"GIT_SSH_COMMAND": sshd.git_ssh_command()}
    sh(dest.parent, "git", "clone", "-q", sshd.url(server), str(dest), env=env)
    sh(dest, "git", "config", "remote.origin.annex-ssh-options", f"-F {sshd.config_file}")
    sh(dest, "git", "config", "remote.origin.annex-shell", shell)
    sh(dest, git_annex, "init", "-q", "client", env=env)
    return dest


def test_git_annex_client_against_annexsync_shell(
    sshd: SshServer, server: Path, tmp_path: Path, git_annex: str
) -> None:
    client = git_annex_clone(sshd, server, tmp_path / "gaclient", git_annex, "annexsync-shell")
    env = {"GIT_SSH_COMMAND": sshd.git_ssh_command()}
    # get: annexsync-shell serves a GET to git-annex
    sh(client, git_annex, "get", "-q", "hello.txt", env=env)
    assert (client / "hello.txt").read_bytes() == b"hello world\n"
    # copy --to: annexsync-shell receives a PUT from git-annex
    key = add_file(client, git_annex, "up.bin", os.urandom(200_000))
    sh(client, git_annex, "copy", "-q", "--to", "origin", "up.bin", env=env)
    assert whereis_here(server, git_annex, key)
    # drop here: git-annex locks the content on annexsync-shell as its proof
    sh(client, git_annex, "drop", "-q", "up.bin", env=env)
    assert not (client / "up.bin").exists()
    # get it back, then drop it from the server (REMOVE)
    sh(client, git_annex, "get", "-q", "up.bin", env=env)
    sh(client, git_annex, "drop", "-q", "--from", "origin", "up.bin", env=env)
    assert not whereis_here(server, git_annex, key)
    assert sh(server, git_annex, "fsck", "-q").returncode == 0


def test_annexsync_client_and_git_annex_over_a_forced_command(
    sshd: SshServer, server: Path, tmp_path: Path, annex_repo: Callable[[Path, str], Path],
    git_annex: str,
) -> None:
    """A key restricted to one repository with annexsync-shell as forced command."""
    other = annex_repo(tmp_path / "other", "other")
    alias = sshd.add_key(
        f"forced-{uuid.uuid4().hex[:8]}",
        f'command="ANNEXSYNC_SHELL_DIRECTORY={server} annexsync-shell",no-pty')
    conns = SshConnections(tmp_path / "c" / ".git" / "annex" / "ssh",
                           options=sshd.ssh_options())
    try:
        client_uuid = str(uuid.uuid4())
        # Whatever the client asks for (git-annex-shell here), annexsync-shell serves it.
        info = RemoteInfo("origin", uuid_of(server), "git", url=sshd.url(server, alias))
        r = ssh_git_remote(info, client_uuid, conns, shell="git-annex-shell")
        key = Key.parse(sh(server, git_annex, "lookupkey", "hello.txt").stdout.strip())
        assert r.check_present(key)
        r.close()
        info = RemoteInfo("other", uuid_of(other), "git", url=sshd.url(other, alias))
        r = ssh_git_remote(info, client_uuid, conns, shell="annexsync-shell")
        with pytest.raises(RemoteUnavailable, match="only allowed to access"):
            r.check_present(key)
        r.close()
        # git itself goes through the forced command as well, sharing the master.
        env = conns.git_env()
        dest = tmp_path / "gitclone"
        sh(tmp_path, "git", "clone", "-q", sshd.url(server, alias), str(dest), env=env)
        assert (dest / "hello.txt").is_symlink()
        bad = sh(tmp_path, "git", "clone", "-q", sshd.url(other, alias),
                 str(tmp_path / "nope"), env=env, check=False)
        assert bad.returncode != 0 and "only allowed to access" in bad.stderr
    finally:
        conns.cleanup()


def test_registry_builds_ssh_remotes_and_close_stops_the_master(
    sshd: SshServer, server: Path, tmp_path: Path, git_annex: str
) -> None:
    from annexsync.remotes.registry import find_remote, load_remotes
    from annexsync.testing.annexrepos import make_repo

    ours = make_repo(tmp_path / "ours", "ours")
    for name, value in (("url", sshd.url(server)), ("annex-uuid", uuid_of(server)),
                        ("annex-ssh-options", f"-F {sshd.config_file}")):
        sh(ours.top, "git", "config", f"remote.origin.{name}", value)
    ours.reload_config()
    r = find_remote(load_remotes(ours), "origin")
    assert (r.info.kind, r.info.cost, r.info.supports_locking) == ("git", 200, True)
    key = Key.parse(sh(server, git_annex, "lookupkey", "hello.txt").stdout.strip())
    assert r.check_present(key)
    probe = SshConnections(ours.git_dir / "annex" / "ssh", options=sshd.ssh_options())
    assert probe.master_pid("annexsync-test") is not None
    r.close()
    assert probe.master_pid("annexsync-test") is None
    ours.close()
