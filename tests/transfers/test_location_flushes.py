"""A get of many files records their locations in several batch commits, each built
from contents read once: git-annex then agrees on where everything is, also with a
change of its own left in the journal and with another writer moving the branch
between our batches."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import locations_many, log_presence_many
from annexsync.annex.logs import Timestamp
from annexsync.annex.repo import AnnexRepo
from annexsync.testing.annexrepos import clone, make_repo, run_cli
from annexsync.transfers import locationlog, runner

FILES = {f"d{i % 5}/f{i}.txt": f"small file {i}\n".encode() for i in range(120)}
OTHER = "33333333-2222-3333-4444-555555555555"


def whereis(top: Path) -> dict[str, set[str]]:
    """git-annex's view: key -> UUIDs with the content."""
    out = subprocess.run(["git", "annex", "whereis", "--json"], cwd=top, check=True,
                         capture_output=True, text=True).stdout
    return {r["key"]: {w["uuid"] for w in r["whereis"]}
            for r in map(json.loads, out.splitlines())}


@pytest.mark.interop
def test_get_in_batches_git_annex_agrees(tmp_path: Path, git_annex: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_repo(tmp_path / "src", "src", FILES)
    dst = clone(src.top, tmp_path / "dst", "dst")
    keys = [Key.parse(os.path.basename(os.readlink(dst.top / n))) for n in FILES]
    # git-annex has a change of its own in the journal when the get starts.
    subprocess.run(["git", "-c", "annex.alwayscommit=false", "annex", "setpresentkey",
                    str(keys[0]), OTHER, "1"], cwd=dst.top, check=True, capture_output=True)
    # Small batches: several commits, the branch moving between them.
    monkeypatch.setattr(runner, "LocationRecorder",
                        functools.partial(locationlog.LocationRecorder, max_pending=25))
    flushes = 0
    real_flush = locationlog.LocationRecorder._flush_commit

    def flush_and_interfere(self: locationlog.LocationRecorder,
                            pending: list[tuple[Key, str, str, Timestamp]]) -> None:
        nonlocal flushes
        flushes += 1
        if flushes == 2:
            # Another writer (its own process: its own repository object) commits
            # between our batches, to logs of keys we are about to record.
            log_presence_many(AnnexBranch(AnnexRepo.find(dst.top)), keys[-10:], OTHER, True)
        real_flush(self, pending)

    monkeypatch.setattr(locationlog.LocationRecorder, "_flush_commit", flush_and_interfere)
    code, _out, err = run_cli(dst.top, "get")
    assert code == 0, err
    assert flushes >= 4
    seen = whereis(dst.top)
    for i, k in enumerate(keys):
        extra = {OTHER} if i == 0 or i >= len(keys) - 10 else set()
        assert seen[str(k)] == {src.uuid, dst.uuid} | extra, k
    assert locations_many(AnnexBranch(AnnexRepo.find(dst.top)), keys) == {
        k: seen[str(k)] for k in keys}
    assert not any((dst.git_dir / "annex" / "journal").iterdir())
    fsck = subprocess.run(["git", "annex", "fsck", "--fast"], cwd=dst.top, capture_output=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


@pytest.mark.interop
def test_a_clone_we_record_in_keeps_no_journal_a_push_could_be_shadowed_by(
        tmp_path: Path, git_annex: str) -> None:
    # We log in a clone on this machine what we did there (here: dropped its copy).
    # Left in its journal, that whole-file log would hide what our push then brings
    # into its git-annex branch (that we have the content), and git-annex's next
    # commit there would drop those lines: it is committed to its branch at once.
    origin = make_repo(tmp_path / "origin", "origin", {"f.txt": b"content\n"})
    ours = clone(origin.top, tmp_path / "ours", "ours")
    key = Key.parse(os.path.basename(os.readlink(ours.top / "f.txt")))
    for args in (("get", "f.txt"), ("drop", "--from", "origin", "f.txt"), ("sync",)):
        code, _, err = run_cli(ours.top, *args)
        assert code == 0, (args, err)
    journal = origin.git_dir / "annex" / "journal"
    assert not journal.exists() or not any(journal.iterdir())
    assert origin.uuid not in locations_many(AnnexBranch(AnnexRepo.find(origin.top)),
                                             [key])[key]
    assert whereis(origin.top)[str(key)] == {ours.uuid}  # git-annex, run there
