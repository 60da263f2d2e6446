"""Helpers for the sync tests that look at whole repositories (imported, not collected)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from annexsync.testing.annexrepos import run_cli

FIX_MESSAGE = "git-annex automatic merge conflict fix"


def sh(cwd: Path, *args: str, check: bool = True) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(args)} in {cwd} failed ({p.returncode}):\n"
                             f"{p.stdout}{p.stderr}")
    return p.stdout


annexsync = run_cli


def ok(cwd: Path, *args: str) -> str:
    """An annexsync command that must succeed; its stdout."""
    code, out, err = annexsync(cwd, *args)
    assert code == 0, f"annexsync {' '.join(args)} in {cwd.name}: exit {code}\n{out}{err}"
    return out


def ga(cwd: Path, *args: str, check: bool = True) -> str:
    """Real git-annex (the wheel's, on PATH through the hermetic env)."""
    return sh(cwd, "git", "annex", *args, check=check)


def replace(repo: Path, path: str, text: str | None) -> None:
    """Write ``text`` at ``path`` (replacing a file, link or directory); None deletes."""
    p = repo / path
    if p.is_symlink() or p.is_file():
        p.unlink()
    elif p.is_dir():
        shutil.rmtree(p)
    if text is not None:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def head_tree(repo: Path) -> str:
    return sh(repo, "git", "rev-parse", "HEAD^{tree}").strip()


def staged(repo: Path) -> dict[str, tuple[str, str, int]]:
    """path -> (mode, blob id, stage) of every index entry."""
    out: dict[str, tuple[str, str, int]] = {}
    for rec in sh(repo, "git", "ls-files", "-s", "-z").split("\0"):
        if rec:
            meta, path = rec.split("\t", 1)
            mode, oid, stage = meta.split(" ")
            out[path] = (mode, oid, int(stage))
    return out


def content(repo: Path, path: str) -> str | None:
    """What a work-tree file reads as (following an annex link); None when absent."""
    p = repo / path
    try:
        text = p.read_text()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if text.startswith("/annex/objects/"):
        return None  # an unlocked file whose content is not here
    return text


def key_of(repo: Path, path: str) -> str:
    """The annex key a locked file links to."""
    return os.path.basename(os.readlink(repo / path))


def variant(path: str, key: str) -> str:
    """git-annex's variant name: ``.variant-`` + 4 hex digits of md5(key), before the
    last extension (a dotfile's whole name is its extension)."""
    directory, base = os.path.split(path)
    dot = base.rfind(".")
    stem, ext = (base, "") if dot == -1 else (base[:dot], base[dot:])
    tag = hashlib.md5(key.encode()).hexdigest()[:4]
    return os.path.join(directory, f"{stem}.variant-{tag}{ext}")


def whereis(repo: Path, tool: str) -> dict[str, set[str]]:
    """file -> uuids holding its content, as ``whereis --json`` of either tool says."""
    if tool == "git-annex":
        out = ga(repo, "whereis", "--json")
    else:
        out = ok(repo, "whereis", "--json")
    return {rec["file"]: {w["uuid"] for w in rec["whereis"]}
            for rec in map(json.loads, out.splitlines())}


def find_in(repo: Path, tool: str, where: str) -> set[str]:
    """Files ``find --in WHERE`` lists."""
    out = ga(repo, "find", "--in", where) if tool == "git-annex" else ok(repo, "find", "--in",
                                                                         where)
    return set(out.splitlines())


def uuid_of(repo: Path) -> str:
    return sh(repo, "git", "config", "annex.uuid").strip()


def fix_commits(repo: Path) -> int:
    """How many automatic conflict-fix commits HEAD's history has."""
    return sh(repo, "git", "log", "--format=%s", "HEAD").splitlines().count(FIX_MESSAGE)


def assert_clean(repo: Path) -> None:
    assert not (repo / ".git" / "MERGE_HEAD").exists(), f"{repo.name}: merge left unfinished"
    assert sh(repo, "git", "status", "--porcelain") == "", f"{repo.name}: work tree not clean"
