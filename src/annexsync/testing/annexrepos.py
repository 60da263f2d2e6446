"""Building small annexsync/git-annex repositories for tests and benchmarks."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from annexsync.annex.add import Adder
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.init import init
from annexsync.annex.repo import AnnexRepo


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; raise with its stderr on failure."""
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {p.stderr}")
    return p.stdout


def make_repo(path: Path, description: str, files: Mapping[str, bytes] | None = None,
              *, commit: bool = True) -> AnnexRepo:
    """``git init`` + ``annexsync init`` + add ``files`` (annexed) + commit."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "master")
    repo = AnnexRepo.find(path)
    init(repo, description)
    if files:
        add_files(repo, files, commit=commit)
    return repo


def add_files(repo: AnnexRepo, files: Mapping[str, bytes], *, commit: bool = True) -> None:
    """Write and annex ``files`` (always large), then commit."""
    for name, data in files.items():
        p = repo.top / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    results = list(Adder(repo, AnnexBranch(repo), force_large=True).add(list(files)))
    bad = [r for r in results if not r.success]
    if bad:
        raise AssertionError(f"add failed: {bad}")
    if commit:
        git(repo.top, "commit", "--no-verify", "-q", "-m", "add")


def clone(src: Path, dst: Path, description: str, *, bare: bool = False) -> AnnexRepo:
    """``git clone`` (optionally bare) and ``annexsync init`` it."""
    args = ["clone", "-q"] + (["--bare"] if bare else []) + [str(src), str(dst)]
    git(dst.parent, *args)
    repo = AnnexRepo.find(dst)
    init(repo, description)
    return repo


def run_cli(cwd: Path, *args: str) -> tuple[int, str, str]:
    """Run the annexsync CLI in-process in ``cwd``; (status, stdout, stderr)."""
    from annexsync.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(old)
    return code, out.getvalue(), err.getvalue()
