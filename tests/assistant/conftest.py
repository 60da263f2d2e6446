"""Fixtures: clones of one repository, each with an assistant running on it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from annexsync.testing.daemons import Daemon, make_clones


def sh(cwd: Path, *args: str) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise AssertionError(f"{args} failed: {p.stdout}{p.stderr}")
    return p.stdout


def annexsync(cwd: Path, *args: str) -> str:
    import sys

    return sh(cwd, sys.executable, "-m", "annexsync", *args)


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    a, b = make_clones(tmp_path, 2)
    da, db = Daemon(a).start(), Daemon(b).start()
    try:
        yield a, b
    finally:
        da.stop()
        db.stop()
