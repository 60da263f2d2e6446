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


def conflicting_edits_keep_both(a: Path, b: Path) -> None:
    """Different content for one name on clones a and b, then their assistants start:
    both versions end up, as variants, in both clones."""
    from annexsync.testing.daemons import wait_for

    (a / "same.txt").write_bytes(b"from a\n")
    (b / "same.txt").write_bytes(b"from b, different\n")
    da, db = Daemon(a).start(), Daemon(b).start()
    try:
        def variants(repo: Path) -> dict[str, bytes | None]:
            return {p.name: p.read_bytes() if p.exists() else None
                    for p in repo.glob("same.variant-*.txt")}

        want = {b"from a\n", b"from b, different\n"}
        wait_for(lambda: set(variants(a).values()) == want
                 and set(variants(b).values()) == want, 60, what="both variants everywhere")
        assert not (a / "same.txt").exists()
        assert variants(a).keys() == variants(b).keys()
    finally:
        da.stop()
        db.stop()

