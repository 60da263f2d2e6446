"""Fixtures: clones of one repository, each with an assistant running on it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from annexsync.testing.daemons import Daemon


def sh(cwd: Path, *args: str) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise AssertionError(f"{args} failed: {p.stdout}{p.stderr}")
    return p.stdout


def annexsync(cwd: Path, *args: str) -> str:
    import sys

    return sh(cwd, sys.executable, "-m", "annexsync", *args)


def make_clones(base: Path, n: int, *, chain: bool = False) -> list[Path]:
    """n clones of a new repository; each has the others as remotes (or a chain)."""
    first = base / "c0"
    first.mkdir(parents=True)
    sh(first, "git", "init", "-q", "-b", "main")
    annexsync(first, "init", "c0")
    (first / "seed.txt").write_text("seed\n")
    annexsync(first, "sync", "-q")
    clones = [first]
    for i in range(1, n):
        sh(base, "git", "clone", "-q", str(first), f"c{i}")
        annexsync(base / f"c{i}", "init", f"c{i}")
        clones.append(base / f"c{i}")
    for i, c in enumerate(clones):
        existing = sh(c, "git", "remote").split()
        for j, other in enumerate(clones):
            if i == j or f"c{j}" in existing:
                continue
            if chain and abs(i - j) != 1:
                continue
            sh(c, "git", "remote", "add", f"c{j}", str(other))
        if "origin" in existing and (chain or n > 1):
            sh(c, "git", "remote", "remove", "origin")
    return clones


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    a, b = make_clones(tmp_path, 2)
    da, db = Daemon(a).start(), Daemon(b).start()
    try:
        yield a, b
    finally:
        da.stop()
        db.stop()
