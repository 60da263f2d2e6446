"""An open git-annex repository: paths, identity, and the long-lived git helpers.

:class:`AnnexRepo` is deliberately small. It knows where things are (top of the work
tree, ``.git/annex``), who this repository is (``annex.uuid``) and owns the git batch
processes that several parts share (one ``cat-file``). The behaviour lives elsewhere:
:mod:`annexsync.annex.objects` (content), :mod:`annexsync.annex.branch` (git-annex
branch), :mod:`annexsync.annex.location` (who has what).
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from annexsync.errors import AnnexError, NotInitializedError
from annexsync.git.catfile import CatFile
from annexsync.git.config import GitConfig
from annexsync.git.runner import Git, discover


class AnnexRepo:
    """A git repository that is (or is about to become) a git-annex repository."""

    def __init__(self, git: Git) -> None:
        self.git = git
        self.catfile = CatFile(git)
        self._config: GitConfig | None = None

    @classmethod
    def find(cls, path: Path | str = ".") -> AnnexRepo:
        """Open the repository containing ``path``."""
        return cls(discover(path))

    # -- locations ---------------------------------------------------------------
    @property
    def bare(self) -> bool:
        return self.git.bare

    @property
    def top(self) -> Path:
        """The work tree (non-bare) or the git dir (bare)."""
        return self.git.work_tree if self.git.work_tree is not None else self.git.git_dir

    @property
    def git_dir(self) -> Path:
        return self.git.git_dir

    @cached_property
    def annex_dir(self) -> Path:
        return self.git.git_dir / "annex"

    def annex_path(self, *parts: str) -> Path:
        return self.annex_dir.joinpath(*parts)

    # -- configuration -----------------------------------------------------------
    @property
    def config(self) -> GitConfig:
        if self._config is None:
            self._config = GitConfig.read(self.git)
        return self._config

    def reload_config(self) -> GitConfig:
        self._config = None
        return self.config

    @property
    def uuid(self) -> str:
        """This repository's annex UUID; raises if the repository is not initialised."""
        u = self.config.get("annex.uuid")
        if not u:
            raise NotInitializedError(
                f"{self.top} is not a git-annex repository yet (run 'annexsync init')"
            )
        return u

    @property
    def initialized(self) -> bool:
        return bool(self.config.get("annex.uuid"))

    # -- paths in the work tree ----------------------------------------------------
    def relpath(self, path: Path | str) -> str:
        """Path relative to the top of the work tree, refusing paths outside it."""
        if self.git.work_tree is None:
            raise AnnexError("this is a bare repository: it has no work tree")
        p = Path(path)
        absolute = Path(os.path.abspath(p if p.is_absolute() else Path.cwd() / p))
        top = Path(os.path.abspath(self.git.work_tree))
        try:
            rel = absolute.relative_to(top)
        except ValueError:
            try:
                rel = absolute.resolve().relative_to(top.resolve())
            except ValueError:
                raise AnnexError(f"{path}: is outside the repository ({top})") from None
        parts = rel.parts
        if parts and parts[0] == ".git":
            raise AnnexError(f"{path}: is inside .git")
        return rel.as_posix() if parts else ""

    def close(self) -> None:
        self.catfile.close()

    def __enter__(self) -> AnnexRepo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
