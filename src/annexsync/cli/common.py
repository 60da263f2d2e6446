"""Helpers shared by command modules: opening the repository, resolving paths."""

from __future__ import annotations

import os
from collections.abc import Sequence

from annexsync.annex.repo import AnnexRepo
from annexsync.errors import AnnexError


def open_repo() -> AnnexRepo:
    """The initialised repository containing the current directory."""
    repo = AnnexRepo.find(".")
    _ = repo.uuid  # raises NotInitializedError with the fix
    return repo


def relpaths(repo: AnnexRepo, paths: Sequence[str]) -> list[str]:
    """Paths relative to the top, with a clear error for missing or outside paths."""
    out: list[str] = []
    for p in paths:
        if not os.path.lexists(p):
            raise AnnexError(f"{p} not found")
        out.append(repo.relpath(p) or ".")
    return out


def display_path(repo: AnnexRepo, rel: str) -> str:
    """A top-relative path as the user should see it (relative to the cwd), like git."""
    try:
        if os.getcwd() == str(repo.top):
            return rel  # the usual case, asked per file: no path arithmetic
        return os.path.relpath(repo.top / rel)
    except (ValueError, OSError):
        return rel
