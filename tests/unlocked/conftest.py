"""Fixtures for unlocked-file tests: repositories where only annexsync is configured."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from unlockedkit import ANNEXSYNC, Sh, make_sh

from annexsync.annex.init import init
from annexsync.annex.repo import AnnexRepo


def _system_path() -> str:
    """PATH entries with git but without any git-annex (the venv's bin is left out)."""
    git = shutil.which("git")
    assert git is not None
    dirs = [os.path.dirname(os.path.realpath(git)), "/usr/bin", "/bin"]
    return os.pathsep.join(dict.fromkeys(d for d in dirs if shutil.which("git-annex", path=d)
                                         is None))


@pytest.fixture
def env(tmp_path_factory: pytest.TempPathFactory, hermetic: dict[str, str]) -> dict[str, str]:
    """The hermetic environment with a PATH holding git and annexsync, not git-annex."""
    bindir = tmp_path_factory.mktemp("bin")
    (bindir / "annexsync").symlink_to(ANNEXSYNC)
    e = dict(os.environ)
    e["PATH"] = os.pathsep.join([str(bindir), _system_path()])
    assert shutil.which("git-annex", path=e["PATH"]) is None
    assert shutil.which("annexsync", path=e["PATH"]) is not None
    return e


@pytest.fixture
def sh(env: dict[str, str]) -> Sh:
    return make_sh(env)


@pytest.fixture
def repo(tmp_path: Path, sh: Sh) -> AnnexRepo:
    """A git-annex repository initialised by annexsync (filter + hooks -> annexsync)."""
    top = tmp_path / "repo"
    top.mkdir()
    sh(top, "git", "init", "-q", "-b", "main")
    r = AnnexRepo.find(top)
    res = init(r, "test repo")
    assert not res.warnings
    r.reload_config()
    return r
