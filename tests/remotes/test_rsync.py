"""The rsync special remote: git-annex's layout both ways, over ssh, limits and aborts."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from annexsync.annex.backends import hash_file
from annexsync.annex.keys import Key
from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.base import KeyNotPresent, RemoteError, RemoteInfo, TransferAborted
from annexsync.remotes.rsync import RsyncRemote, bwlimit_bytes, rsync_remote
from annexsync.remotes.ssh import SshConnections
from annexsync.testing.sshd import SshServer

pytestmark = pytest.mark.interop


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def add(repo: Path, git_annex: str, name: str, data: bytes) -> Key:
    (repo / name).write_bytes(data)
    sh(repo, git_annex, "add", "-q", name)
    sh(repo, "git", "commit", "-qm", name)
    return Key.parse(sh(repo, git_annex, "lookupkey", name).stdout.strip())


def ours(repo_path: Path, name: str, conns: SshConnections | None = None) -> RsyncRemote:
    repo = AnnexRepo.find(repo_path)
    u = repo.config.get(f"remote.{name}.annex-uuid") or ""
    return rsync_remote(RemoteInfo(name, u, "rsync"), repo.config, repo.annex_dir, conns)


def present_per_git_annex(repo: Path, git_annex: str, key: Key, remote: str) -> bool:
    return sh(repo, git_annex, "checkpresentkey", str(key), remote, check=False).returncode == 0


def test_layout_is_git_annexs_both_ways(annex_repo: Callable[[Path, str], Path],
                                        tmp_path: Path, git_annex: str) -> None:
    repo = annex_repo(tmp_path / "repo", "repo")
    store = tmp_path / "rsync store"  # a space: paths are passed, never shell-parsed
    store.mkdir()
    sh(repo, git_annex, "initremote", "-q", "r", "type=rsync", f"rsyncurl={store}",
       "encryption=none")
    theirs = add(repo, git_annex, "theirs.txt", b"stored by git-annex\n")
    sh(repo, git_annex, "copy", "-q", "--to", "r", "theirs.txt")
    r = ours(repo, "r")
    assert r.check_present(theirs)
    sink = io.BytesIO()
    r.retrieve(theirs, sink, 7, lambda n: None)
    assert sink.getvalue() == b"stored by git-annex\n"[7:]

    data = os.urandom(500_000)
    src = tmp_path / "mine.bin"
    src.write_bytes(data)
    mine, _ = hash_file(src)
    moved: list[int] = []
    r.store(mine, src, moved.append)
    assert 0 < sum(moved) <= len(data)
    obj = store / mine.hashdir_lower / mine.key_file / mine.key_file
    assert obj.read_bytes() == data and (obj.stat().st_mode & 0o777) == 0o444
    assert present_per_git_annex(repo, git_annex, mine, "r")
    r.remove(mine)
    assert not obj.exists() and not r.check_present(mine)
    assert not present_per_git_annex(repo, git_annex, mine, "r")
    assert present_per_git_annex(repo, git_annex, theirs, "r")  # its neighbour is untouched
    # git-annex gets what we stored.
    (repo / "mine.bin").write_bytes(data)
    sh(repo, git_annex, "add", "-q", "mine.bin")
    r.store(mine, src, lambda n: None)
    sh(repo, git_annex, "drop", "-q", "--force", "mine.bin")
    # git-annex learns where it is by checking the remote (our layout), then gets it.
    sh(repo, git_annex, "fsck", "-q", "--fast", "--from", "r", "mine.bin")
    sh(repo, git_annex, "get", "-q", "--from", "r", "mine.bin")
    assert (repo / "mine.bin").read_bytes() == data
    assert not list((repo / ".git" / "annex" / "tmp").glob("rsynctmp.*"))


def test_missing_keys_and_unsafe_names(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    r = RsyncRemote(RemoteInfo("r", "u", "rsync"), str(store), work_dir=tmp_path / "work")
    missing = Key.parse("SHA256E-s5--" + "1" * 64 + ".txt")
    assert not r.check_present(missing)
    with pytest.raises(KeyNotPresent):
        r.retrieve(missing, io.BytesIO(), 0, lambda n: None)
    r.remove(missing)  # removing what is not there is fine
    for bad in ("WORM-s1-m1--a*b", "WORM-s1-m1--x[ab]", "URL--http&c%%h%a$(reboot)"):
        with pytest.raises(RemoteError, match="characters rsync"):
            r.check_present(Key.parse(bad))
    assert not any(store.iterdir())


def test_bwlimit_and_abort(tmp_path: Path) -> None:
    assert bwlimit_bytes({"annex.bwlimit": "1MiB"}, "r") == 1024 * 1024
    assert bwlimit_bytes({"remote.r.annex-bwlimit": "100KiB", "annex.bwlimit": "1GiB"},
                         "r") == 100 * 1024
    assert bwlimit_bytes({}, "r") is None
    store = tmp_path / "store"
    store.mkdir()
    r = RsyncRemote(RemoteInfo("r", "u", "rsync"), str(store), work_dir=tmp_path / "work",
                    bwlimit=2 * 1024 * 1024)
    assert "--bwlimit=2048" in r._base_argv()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(8 << 20))
    key, _ = hash_file(src)
    seen: list[int] = []

    def meter(n: int) -> None:
        seen.append(n)
        raise TransferAborted("stalled")

    with pytest.raises(TransferAborted):
        r.store(key, src, meter)  # at 2 MiB/s this would take 4 s; it stops at once
    assert seen and not r.check_present(key)


def test_rsync_over_ssh_uses_the_cached_connection(
    sshd: SshServer, ssh_conns: Callable[[Path], SshConnections], tmp_path: Path
) -> None:
    store = tmp_path / "remote store"
    store.mkdir()
    conns = ssh_conns(tmp_path / "client" / ".git")
    r = RsyncRemote(RemoteInfo("r", "u", "rsync"), f"{sshd.alias}:{store}",
                    work_dir=tmp_path / "work", conns=conns)
    logins = sshd.accepted_logins()
    keys = []
    for i in range(3):
        src = tmp_path / f"f{i}"
        src.write_bytes(os.urandom(100_000) + bytes([i]))
        key, _ = hash_file(src)
        r.store(key, src, lambda n: None)
        keys.append((key, src.read_bytes()))
    for key, data in keys:
        assert r.check_present(key)
        sink = io.BytesIO()
        r.retrieve(key, sink, 1000, lambda n: None)
        assert sink.getvalue() == data[1000:]
        assert (store / key.hashdir_lower / key.key_file / key.key_file).read_bytes() == data
    r.remove(keys[0][0])
    assert not r.check_present(keys[0][0])
    assert sshd.accepted_logins() - logins == 1
