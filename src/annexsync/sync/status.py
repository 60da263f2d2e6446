"""The one ``git status`` of a sync round, startable before the rest is imported.

On a large work tree the status pass is the longest step of a sync and is spent in
the kernel (an ``lstat`` per file, in git's threads); the ``sync`` command starts it
as soon as the repository is open, so that importing the rest of annexsync (~40 ms)
happens meanwhile. This module imports nothing beyond :mod:`annexsync.git.runner`
for that reason. Parsing is :func:`annexsync.sync.gitsync.local_changes`.

Untracked files are found through git's untracked cache (turned on for this command
unless ``core.untrackedCache`` is configured): only directories whose mtime changed
are read again (100,000 files in 200 directories: ~8 ms instead of ~70 ms). git keeps
one cache for one untracked-files mode, the configured one
(``status.showUntrackedFiles``), and bypasses it for any other mode, so this command
runs with ``all`` configured. (``normal`` with new directories listed apart is not the
same: git does not show a new directory that replaced a tracked file in that mode.)
"""

from __future__ import annotations

import subprocess

from annexsync.git.runner import GitError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from annexsync.annex.repo import AnnexRepo

STATUS_ARGS = ("status", "--porcelain=v2", "-z", "--branch", "--no-ahead-behind",
               "--untracked-files=all", "--no-renames", "--ignore-submodules=all",
               "--ignored=no")


def status_args(repo: AnnexRepo) -> list[str]:
    """The status command line (after ``git``'s own options)."""
    opts = ["-c", "status.showUntrackedFiles=all"]
    if repo.config.get("core.untrackedcache") is None:
        opts += ["-c", "core.untrackedCache=true"]
    return [*opts, *STATUS_ARGS]


class PendingStatus:
    """A ``git status`` started now, its output collected by :meth:`output`."""

    def __init__(self, repo: AnnexRepo) -> None:
        self.args = status_args(repo)
        self.proc = repo.git.popen(*self.args, stdin=subprocess.DEVNULL)

    def output(self) -> bytes:
        """status's stdout; raises :class:`GitError` when it failed."""
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            raise GitError(self.args, self.proc.returncode, err)
        return out

    def discard(self) -> None:
        """Not needed after all: let it finish (it may be writing the index)."""
        self.proc.communicate()


def merge_in_progress(repo: AnnexRepo) -> bool:
    """Is a merge waiting to be concluded? (:func:`annexsync.sync.merge.merge_in_progress`,
    without importing that module.)"""
    return (repo.git_dir / "MERGE_HEAD").exists()
