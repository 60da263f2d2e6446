"""Shared helpers for benchmarks: hermetic scratch repositories and timing."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from annexsync.testing.gitenv import git_annex_binary, hermetic_env

VENV_BIN = Path(sys.executable).parent


def setup_env() -> dict[str, str]:
    """Pin a hermetic environment for this process (and its children)."""
    home = Path(tempfile.mkdtemp(prefix="annexsync-bench-home."))
    atexit.register(shutil.rmtree, home, True)  # (172 of them had piled up in /tmp)
    env = hermetic_env(home)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    # Like a normal installation: compiled bytecode is cached (some environments set
    # PYTHONDONTWRITEBYTECODE, which makes every annexsync process recompile ~0.15 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "annexsync-bench-pycache")
    os.environ.clear()
    os.environ.update(env)
    subprocess.run([sys.executable, "-c", "import annexsync.cli.main as m; m.build_parser()"],
                   check=True)
    return env


def git_annex() -> str:
    ga = git_annex_binary()
    if ga is None:
        sys.exit("real git-annex is needed: pip install git-annex")
    return ga


def annexsync_bin() -> str:
    return str(VENV_BIN / "annexsync")


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def new_repo(parent: Path, name: str, init_cmd: list[str]) -> Path:
    r = parent / name
    r.mkdir(parents=True)
    sh(r, "git", "init", "-q", "-b", "main")
    sh(r, *init_cmd)
    return r


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def scratch(prefix: str) -> Path:
    base = os.environ.get("ANNEXSYNC_BENCH_DIR")
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def cleanup(path: Path) -> None:
    subprocess.run(["chmod", "-R", "u+w", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def objects_in(repo: Path) -> int:
    """How many keys ``repo``'s object store holds (content lock files aside)."""
    n = 0
    for _, _, names in os.walk(repo / ".git" / "annex" / "objects"):
        n += sum(1 for name in names if not name.endswith(".lck"))
    return n
