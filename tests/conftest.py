"""Shared fixtures: every test runs in a hermetic git environment."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from annexsync.testing.gitenv import git_annex_binary, hermetic_env


@pytest.fixture(autouse=True)
def hermetic(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """Pin HOME, git config, identity and dates for every test (in os.environ too)."""
    home = tmp_path_factory.mktemp("home")
    env = hermetic_env(home)
    # git-annex's hooks run "git annex ..."; the wheel's binary lives beside our Python.
    ga = git_annex_binary()
    if ga is not None:
        env["PATH"] = os.path.dirname(ga) + os.pathsep + env.get("PATH", "")
    for name in list(os.environ):
        if name not in env:
            monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


@pytest.fixture
def git_annex() -> str:
    """Path of real git-annex; the test is skipped (with the reason) if it is missing."""
    path = git_annex_binary()
    if path is None:
        pytest.skip("real git-annex not installed (scripts/test.sh installs the PyPI wheel)")
    return path


def run(*args: str | os.PathLike[str], cwd: Path | None = None, input: bytes | None = None,
        check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a command, capturing output; raise with its stderr on failure."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, input=input, capture_output=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
            f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}"
        )
    return proc
