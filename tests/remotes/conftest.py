"""Fixtures for the remote contract suite: one parameter per remote type."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contract import BUILDERS, Harness

from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.ssh import SshConnections
from annexsync.testing.annexrepos import make_repo
from annexsync.testing.sshd import SshdUnavailable, SshServer, shared_sshd

SMALL = b"small content\n"
BIG = bytes(range(256)) * 6000  # 1.5 MiB: takes the copy_file_range path


@pytest.fixture
def ours(tmp_path: Path) -> AnnexRepo:
    """Our repository with two annexed files present."""
    return make_repo(tmp_path / "ours", "ours", {"small.txt": SMALL, "big.bin": BIG})


@pytest.fixture(params=sorted(BUILDERS))
def harness(request: pytest.FixtureRequest, tmp_path: Path, ours: AnnexRepo) -> Harness:
    return BUILDERS[request.param](tmp_path, ours)


# -- ssh fixtures (remotes over ssh, annexsync-shell, rsync) ---------------------------------
# A real sshd on loopback, shared by the whole session (and by the ssh builders of the
# contract suite, which get no fixtures): see annexsync.testing.sshd.


@pytest.fixture(scope="session")
def sshd() -> SshServer:
    """The session's sshd on 127.0.0.1 (skipped, with the reason, if it cannot start)."""
    try:
        return shared_sshd()
    except SshdUnavailable as e:
        pytest.skip(f"no sshd for ssh tests: {e} (scripts/test.sh installs openssh-server)")


@pytest.fixture
def ssh_conns(sshd: SshServer) -> Iterator[Callable[[Path], SshConnections]]:
    """Make SshConnections for a repository's git dir; their masters stop after the test."""
    made: list[SshConnections] = []

    def make(git_dir: Path) -> SshConnections:
        c = SshConnections(git_dir / "annex" / "ssh", options=sshd.ssh_options())
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup()


@pytest.fixture
def annex_repo(git_annex: str) -> Callable[[Path, str], Path]:
    """Make a repository with real git-annex (``git init`` + ``git annex init DESC``)."""

    def make(path: Path, description: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
        subprocess.run([git_annex, "init", "-q", description], cwd=path, check=True,
                       capture_output=True)
        return path

    return make
