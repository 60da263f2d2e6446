"""Committing the index to the current branch with plumbing (no hooks, no editor)."""

from __future__ import annotations

from annexsync.annex.repo import AnnexRepo
from annexsync.git.refs import commit_tree, rev_parse, update_ref, write_tree


def commit_index(repo: AnnexRepo, message: str) -> str | None:
    """Commit the index if its tree differs from HEAD's; return the new commit.

    ``write-tree``/``commit-tree``/``update-ref`` with HEAD's old value as a
    compare-and-swap, like git-annex's assistant (the user's hooks do not run).
    ``synced/BRANCH`` is moved along so other clones can merge it.
    """
    git = repo.git
    tree = write_tree(git)
    head = rev_parse(git, "HEAD")
    if head is not None and rev_parse(git, "HEAD^{tree}") == tree:
        return None
    commit = commit_tree(git, tree, [head] if head else [], message)
    proc = git.run_status("symbolic-ref", "-q", "HEAD")
    ref = proc.stdout.decode().strip() or "HEAD"
    update_ref(git, ref, commit, head or "0" * 40, "annexsync: commit")
    if ref.startswith("refs/heads/"):
        update_ref(git, "refs/heads/synced/" + ref[len("refs/heads/"):], commit)
    return commit
