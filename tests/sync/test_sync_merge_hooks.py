"""The assistant's merges: with only annexsync's own hooks installed, git runs none and
unlocked files are filled in-process; a hook of the user's own is always run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from annexsync.annex.repo import AnnexRepo
from annexsync.sync.gitsync import GitSync
from annexsync.testing.daemons import make_clones


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def annexsync(cwd: Path, *args: str) -> str:
    import sys

    return sh(cwd, sys.executable, "-m", "annexsync", *args)


def unlocked_file_from_b(tmp_path: Path) -> tuple[Path, Path]:
    """b commits an unlocked annexed file; a has its content already, not the commit."""
    a, b = make_clones(tmp_path, 2)
    (b / "notes.txt").write_text("unlocked content\n")
    annexsync(b, "add", "--unlocked", "notes.txt")
    sh(b, "git", "commit", "-q", "-m", "unlocked")
    sh(a, "git", "fetch", "-q", "c1")
    # the content reached a already (the assistant downloads while git checks out)
    objects = b / ".git" / "annex" / "objects"
    for f in objects.rglob("*.txt"):
        if f.is_file():
            dest = a / ".git" / "annex" / "objects" / f.relative_to(objects)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    return a, b


def test_merge_fills_unlocked_files_without_running_hooks(tmp_path: Path) -> None:
    a, _ = unlocked_file_from_b(tmp_path)
    events: list[tuple[str, dict[str, object]]] = []
    sync = GitSync(AnnexRepo.find(a), on_event=lambda k, d: events.append((k, d)),
                   fill_in_process=True)
    merged, conflicts = sync.merge_from(["c1"], "main")
    assert merged and not conflicts
    assert (a / "notes.txt").read_text() == "unlocked content\n"  # filled, not a pointer
    assert ("filled", {"files": 1, "failed": 0}) in events  # by us, not by the hook
    assert sh(a, "git", "status", "--porcelain") == ""


def test_a_users_own_hook_is_never_skipped(tmp_path: Path) -> None:
    a, _ = unlocked_file_from_b(tmp_path)
    marker = tmp_path / "hook-ran"
    hook = a / ".git" / "hooks" / "post-merge"
    hook.write_text(hook.read_text() + f"touch {marker}\n")  # the user's addition
    sync = GitSync(AnnexRepo.find(a), fill_in_process=True)
    sync.merge_from(["c1"], "main")
    assert marker.exists()
    assert (a / "notes.txt").read_text() == "unlocked content\n"  # by the hook itself
