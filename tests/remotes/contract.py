"""The remote contract: one suite that every remote type must pass.

Each remote type has a *builder*: ``builder(tmp_path, ours) -> Harness`` that sets
up an empty remote of that type for our repository ``ours`` (registered in its git
config as remote ``r``) and returns it. To add a type, write a builder and add one
line to :data:`BUILDERS`; every contract test then runs against it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.base import Remote
from annexsync.remotes.registry import find_remote, load_remotes
from annexsync.testing.annexrepos import clone, git, run_cli


@dataclass
class Harness:
    """A remote under test, and how to make it unreachable (and back)."""

    remote: Remote
    make_unavailable: Callable[[], None]
    restore: Callable[[], None]


def _hide(path: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    hidden = path.with_name(path.name + ".unplugged")
    return (lambda: os.rename(path, hidden)), (lambda: os.rename(hidden, path))


def _load(ours: AnnexRepo, name: str = "r") -> Remote:
    ours.reload_config()
    return find_remote(load_remotes(ours), name)


def build_local(tmp_path: Path, ours: AnnexRepo) -> Harness:
    """A non-bare clone on a local path (a git remote)."""
    path = tmp_path / "remote-clone"
    clone(ours.top, path, "remote clone")
    git(ours.top, "remote", "add", "r", str(path))
    return Harness(_load(ours), *_hide(path))


def build_bare(tmp_path: Path, ours: AnnexRepo) -> Harness:
    """A bare clone on a local path (objects in hashdirlower)."""
    path = tmp_path / "remote-bare.git"
    clone(ours.top, path, "bare clone", bare=True)
    git(ours.top, "remote", "add", "r", str(path))
    return Harness(_load(ours), *_hide(path))


def build_directory(tmp_path: Path, ours: AnnexRepo) -> Harness:
    """A directory special remote made with ``annexsync initremote``."""
    d = tmp_path / "special-dir"
    d.mkdir()
    code, out, err = run_cli(ours.top, "initremote", "r", "type=directory",
                             f"directory={d}", "encryption=none")
    assert code == 0, err
    return Harness(_load(ours), *_hide(d))


#: remote type -> builder. The ssh engineer adds e.g. ``"ssh": build_ssh`` here.
BUILDERS: dict[str, Callable[[Path, AnnexRepo], Harness]] = {
    "local": build_local,
    "bare": build_bare,
    "directory": build_directory,
}


def remove_tree(path: Path) -> None:
    """Remove a tree that git-annex made read-only."""
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path)


# The ssh git remote (annexsync-shell, git-annex-shell) and rsync remote builders.
from contract_ssh import BUILDERS as _SSH_BUILDERS  # noqa: E402

BUILDERS.update(_SSH_BUILDERS)
