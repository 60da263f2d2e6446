"""Helpers for the unlocked-file tests (a uniquely named module: no conftest imports)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ANNEXSYNC = Path(sys.executable).parent / "annexsync"

Sh = Callable[..., str]


def make_sh(env: dict[str, str]) -> Sh:
    def sh(cwd: Path, *args: str | os.PathLike[str], input: bytes | None = None,
           check: bool = True, stderr: bool = False) -> str:
        """Run a command; its stdout (plus stderr with ``stderr``)."""
        proc = subprocess.run([str(a) for a in args], cwd=cwd, input=input,
                              capture_output=True, env=env, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                f"{proc.stdout.decode(errors='replace')}\n{proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode("utf-8", "surrogateescape") + (
            proc.stderr.decode("utf-8", "replace") if stderr else "")
    return sh


def commit(sh: Sh, top: Path, msg: str = "c") -> None:
    sh(top, "git", "commit", "-q", "-m", msg)


def status(sh: Sh, top: Path) -> str:
    return sh(top, "git", "status", "--porcelain")
