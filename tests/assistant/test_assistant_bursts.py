"""What keeps bursts cheap: our own writes recognised, streamed scans, held uploads.

These drive the services' methods directly on real clones (no daemon processes);
the end-to-end burst is in test_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from annexsync.annex.keys import Key, symlink_target
from annexsync.annex.locks import lock_file
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.worktree import annexed_files, iter_annexed_chunks
from annexsync.assistant.committer import Committer
from annexsync.assistant.events import EventLog
from annexsync.assistant.hub import Hub, Settings
from annexsync.assistant.merger import relevant_ref
from annexsync.assistant.transferrer import Job, Transferrer
from annexsync.testing.daemons import make_clones, wait_for


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def hub_for(path: Path, **settings: object) -> Hub:
    repo = AnnexRepo.find(path)
    repo.git.env["GIT_LITERAL_PATHSPECS"] = "1"
    return Hub(repo, EventLog(), Settings(**settings))  # type: ignore[arg-type]


def cli(repo: Path, *args: str) -> str:
    """Run an annexsync command in ``repo``; its standard output."""
    return subprocess.run([sys.executable, "-m", "annexsync", *args], cwd=repo, check=True,
                          capture_output=True, text=True).stdout


@contextmanager
def serving(hub: Hub) -> Iterator[Transferrer]:
    """A transferrer running (its slots too) on ``hub`` for the ``with`` block."""
    tr = Transferrer(hub)
    stop = threading.Event()
    t = threading.Thread(target=tr.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield tr
    finally:
        stop.set()
        t.join(10)


def fake_key(i: int, size: int = 1000) -> Key:
    digest = hashlib.sha256(b"%d" % i).hexdigest()
    return Key.parse(f"SHA256E-s{size}--{digest}.bin")


def test_only_refs_other_clones_move_wake_the_merger() -> None:
    assert relevant_ref("refs/heads/synced/main")
    assert relevant_ref("refs/heads/synced/git-annex")
    assert relevant_ref("refs/remotes/origin/main")
    assert relevant_ref("refs/synced/uuid/git-annex")
    assert relevant_ref("packed-refs")
    assert not relevant_ref("refs/heads/main")  # our own commit
    assert not relevant_ref("refs/heads/git-annex")
    assert not relevant_ref("refs/tags/v1")
    assert not relevant_ref("HEAD")


def test_our_own_symlinks_cost_nothing_but_user_changes_are_committed(tmp_path: Path) -> None:
    (a,) = make_clones(tmp_path, 1)
    hub = hub_for(a, content=False, git_sync=False)
    c = Committer(hub)
    (a / "one.bin").write_bytes(os.urandom(3000))
    first = c.commit_batch({"one.bin"}, set())
    assert first is not None and os.path.islink(a / "one.bin")
    # the watcher's note for the symlink that replaced the file: nothing to commit
    assert c.commit_batch({"one.bin"}, set()) is None
    # the user replaces it with another file: committed, whatever was expected
    target = os.readlink(a / "one.bin")
    c.expect({"one.bin": target})
    os.unlink(a / "one.bin")
    (a / "one.bin").write_bytes(b"new content, much larger than before " * 100)
    second = c.commit_batch({"one.bin"}, set())
    assert second is not None and second != first
    assert os.readlink(a / "one.bin") != target
    # an expected removal is not a change; an unexpected one is
    c.expect({"gone.txt": None})
    assert c.commit_batch({"gone.txt"}, set()) is None
    os.unlink(a / "seed.txt")
    assert c.commit_batch({"seed.txt"}, set()) is not None
    assert "seed.txt" not in git(a, "ls-files").split()
    assert git(a, "status", "--porcelain") == ""


def test_an_expectation_never_hides_a_different_symlink(tmp_path: Path) -> None:
    (a,) = make_clones(tmp_path, 1)
    hub = hub_for(a, content=False, git_sync=False)
    c = Committer(hub)
    key = fake_key(1)
    c.expect({"link.bin": symlink_target(fake_key(2), "link.bin")})
    os.symlink(symlink_target(key, "link.bin"), a / "link.bin")
    assert c.commit_batch({"link.bin"}, set()) is not None
    assert git(a, "ls-files", "link.bin").strip() == "link.bin"


def test_streamed_scan_matches_the_whole_listing(tmp_path: Path) -> None:
    (a,) = make_clones(tmp_path, 1)
    (a / "d").mkdir()
    for i in range(7):
        (a / "d" / f"f{i}.bin").write_bytes(os.urandom(100 + i))
    (a / "small.txt").write_text("git file\n")
    subprocess.run([sys.executable, "-m", "annexsync", "add", "--quiet", "d"], cwd=a,
                   check=True)
    repo = AnnexRepo.find(a)
    chunks = list(iter_annexed_chunks(repo, chunk=3))
    assert len(chunks) >= 3
    streamed = [f for ch in chunks for f in ch]
    assert streamed == annexed_files(repo)
    assert sorted(f.file for f in streamed if f.file.startswith("d/")) == sorted(
        f"d/f{i}.bin" for i in range(7))
    assert [f.file for f in annexed_files(repo, ["d/f3.bin"])] == ["d/f3.bin"]


def test_a_burst_waits_for_a_peer_whose_assistant_fetches_it(tmp_path: Path) -> None:
    a, b = make_clones(tmp_path, 2)
    hub = hub_for(a, peer_grace=60.0)
    tr = Transferrer(hub)
    few = [(f"few{i}.bin", fake_key(i)) for i in range(3)]
    burst = [(f"burst{i}.bin", fake_key(100 + i)) for i in range(40)]
    tr.upload_new(few)
    tr.upload_new(burst)  # nobody runs in b: everything goes out at once
    assert len(tr.queue) == 43 and tr.snapshot()["held"] == 0
    tr.queue.clear()
    tr.known.clear()
    tr._peer_seen.clear()
    lock = lock_file(b / ".git" / "annex" / "daemon.pid", exclusive=True, blocking=False)
    try:
        tr.upload_new(few)  # a few files: at once, so they land before the push
        tr.upload_new(burst)  # a burst: b's assistant fetches it itself
        assert len(tr.queue) == 3 and tr.snapshot()["held"] == 40
        tr.retry_now()  # a trigger retrying failures does not release the hold
        assert tr.snapshot()["held"] == 40
        for r in tr.later:
            r.at = 0.0
        with tr.cond:
            tr._promote_retries()
        assert len(tr.queue) == 43 and tr.snapshot()["held"] == 0
        assert tr.queue[0].file == "burst39.bin"  # uploads go backwards, downloads forwards
    finally:
        lock.release()


def test_small_jobs_are_taken_in_fair_runs(tmp_path: Path) -> None:
    (a,) = make_clones(tmp_path, 1)
    tr = Transferrer(hub_for(a, slots=4))
    for i in range(10):
        tr.enqueue(Job("download", fake_key(i), f"f{i}"))
    big = Job("download", fake_key(99, size=50 << 20), "big")
    tr.enqueue(big)
    with tr.cond:
        first = tr._take()
    assert [j.file for j in first] == ["f0", "f1", "f2"]  # ceil(11 / 4)
    runs = [first]
    while tr.queue:
        with tr.cond:
            share = -(-len(tr.queue) // 4)
            runs.append(tr._take())
        assert 1 <= len(runs[-1]) <= share  # never more than a fair share: slots stay busy
    assert [j for r in runs for j in r] == [Job("download", fake_key(i), f"f{i}")
                                            for i in range(10)] + [big]
    assert runs[-1] == [big]  # a big key is never part of a run


def test_a_batch_that_fails_is_committed_by_the_next_one(tmp_path: Path) -> None:
    (a,) = make_clones(tmp_path, 1)
    c = Committer(hub_for(a, content=False, git_sync=False))
    (a / "late.bin").write_bytes(os.urandom(2000))
    lock = a / ".git" / "index.lock"
    lock.write_bytes(b"")  # a killed daemon's git process still holds the index
    try:
        c.commit_batch({"late.bin"}, set())
    except Exception:  # noqa: BLE001 - the failure itself is not the point
        pass
    else:
        raise AssertionError("the commit should have failed while index.lock is held")
    lock.unlink()
    assert len(c.agg) == 1  # the batch went back
    batch, _ = c.agg.decide(1e12)
    assert batch == {"late.bin"}
    assert c.commit_batch(batch, set()) is not None
    assert "late.bin" in git(a, "ls-files").split()
    assert git(a, "status", "--porcelain") == ""


def test_a_download_that_fails_when_its_batch_is_committed_is_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from annexsync.transfers import runner

    a, b = make_clones(tmp_path, 2)
    (a / "new.bin").write_bytes(b"content that fails to enter the store once\n")
    for repo in (a, b):
        cli(repo, "sync", "-q")
    key = Key.parse(os.path.basename(os.readlink(b / "new.bin")))
    real_move = runner.Transfers._move_one
    failures: list[Key] = []

    def move_once_failing(self: runner.Transfers, rel: str, s: Any) -> bool:
        if not failures:  # the first time: as if the rename into the store failed
            failures.append(s.key)
            self._late_failure(s.result, "injected failure")
            return False
        return real_move(self, rel, s)

    monkeypatch.setattr(runner.Transfers, "_move_one", move_once_failing)
    hub = hub_for(b)
    with serving(hub) as tr:
        tr.enqueue(Job("download", key, "new.bin"))
        wait_for(lambda: ObjectStore(b / ".git" / "annex").has(key), 30,
                 what="the content, after the failed first attempt")
    assert failures == [key]
    kinds = [(e.kind, e.data.get("ok")) for e in hub.events.since(0)
             if e.kind == "download"]
    assert ("download", False) in kinds  # the late failure was reported
    assert (b / "new.bin").read_bytes() == b"content that fails to enter the store once\n"


def test_small_uploads_whose_commit_fails_are_tried_again(tmp_path: Path) -> None:
    # A run of small uploads to a clone on this machine is staged in its tmp directory
    # and committed at the run's end. Here the clone's object directory is a symlink
    # out of it: the commit refuses (nothing is written outside), the failure is
    # reported, and once the clone is repaired the retried jobs store everything.
    a, b = make_clones(tmp_path, 2)
    for i in range(6):
        (a / f"up{i}.bin").write_bytes(b"upload %d\n" % i)
    cli(a, "sync", "-q")
    keys = {f"up{i}.bin": Key.parse(os.path.basename(os.readlink(a / f"up{i}.bin")))
            for i in range(6)}
    outside = tmp_path / "outside"
    outside.mkdir()
    objects = b / ".git" / "annex" / "objects"
    if objects.exists():
        objects.rename(b / ".git" / "annex" / "objects.aside")
    objects.symlink_to(outside)
    hub = hub_for(a)
    uuid_b = git(a, "config", "remote.c1.annex-uuid").strip()
    store_b = ObjectStore(b / ".git" / "annex")
    with serving(hub) as tr:
        for f, k in keys.items():
            tr.enqueue(Job("upload", k, f, uuid_b))
        wait_for(lambda: any(e.kind == "upload" and e.data.get("ok") is False
                             for e in hub.events.since(0)), 30, what="a failed upload")
        objects.unlink()  # repaired
        wait_for(lambda: all(store_b.has(k) for k in keys.values()), 30,
                 what="every key in b, after the retries")
    assert list(outside.iterdir()) == []
    for f, k in keys.items():
        assert store_b.find(k) is not None
        assert Path(store_b.find(k)).read_bytes() == (a / f).read_bytes()  # type: ignore[arg-type]
    assert [n for n in os.listdir(b / ".git" / "annex" / "tmp")
            if ".annexsync-" in n] == []  # the staged files of the failed commit are gone
    assert uuid_b in cli(a, "whereis", "--json", "up0.bin")  # recorded where it is


def test_a_transfer_remote_is_emptied_once_the_content_arrived_here(tmp_path: Path) -> None:
    # As git-annex's assistant: c0 only carries content until a client has it. Once
    # c1's assistant has downloaded it (and committed it), c0's copy is dropped, the
    # drop proven by the copy here; a file c0 still wants stays.
    a, b = make_clones(tmp_path, 2)
    (a / "photo.jpg").write_bytes(b"\xff\xd8 jpeg bytes")
    (a / "keep.txt").write_bytes(b"kept in c0\n")
    for repo in (a, b):
        cli(repo, "sync", "-q")
    cli(b, "group", "here", "client")
    cli(b, "wanted", "c0", "exclude=*.jpg or not inallgroup=client")
    keys = {f: Key.parse(os.path.basename(os.readlink(b / f))) for f in ("photo.jpg",
                                                                         "keep.txt")}
    hub = hub_for(b)
    store_a, store_b = ObjectStore(a / ".git" / "annex"), ObjectStore(b / ".git" / "annex")
    with serving(hub) as tr:
        for f, k in keys.items():
            tr.enqueue(Job("download", k, f))
        wait_for(lambda: not store_a.has(keys["photo.jpg"]), 30, what="c0's copy dropped")
        wait_for(lambda: any(e.kind == "queue-drained" for e in hub.events.since(0)), 30)
    assert (b / "photo.jpg").read_bytes() == b"\xff\xd8 jpeg bytes"
    assert store_a.has(keys["keep.txt"]) and store_b.has(keys["keep.txt"])
    drops = [(e.data.get("file"), e.data.get("remote"), e.data.get("ok"))
             for e in hub.events.since(0) if e.kind == "drop"]
    assert drops == [("photo.jpg", "c0", True)]
    out = cli(b, "whereis", "--json", "photo.jpg")
    assert [w["description"] for w in json.loads(out)["whereis"]] == ["c1"]


def test_the_start_up_scan_drops_what_a_transfer_remote_no_longer_needs(
        tmp_path: Path) -> None:
    # Both clones have the content when c1's assistant starts: its scan hands the key
    # to the drop pass, which drops c0's copy (c0 carries content only for clients).
    from annexsync.assistant.scanner import TransferScanner

    a, b = make_clones(tmp_path, 2)
    (a / "photo.jpg").write_bytes(b"\xff\xd8 jpeg bytes")
    for repo in (a, b):
        cli(repo, "sync", "-q")
    cli(b, "get", "-q", "photo.jpg")
    for args in (("group", "here", "client"), ("wanted", "c0", "not inallgroup=client")):
        cli(b, *args)
    key = Key.parse(os.path.basename(os.readlink(b / "photo.jpg")))
    store_a = ObjectStore(a / ".git" / "annex")
    assert store_a.has(key)
    hub = hub_for(b)
    with serving(hub) as tr:
        hub.transfers = tr
        TransferScanner(hub).check([("photo.jpg", key)])
        wait_for(lambda: not store_a.has(key), 30, what="c0's copy dropped")
    assert (b / "photo.jpg").read_bytes() == b"\xff\xd8 jpeg bytes"
    assert [(e.data.get("remote"), e.data.get("ok")) for e in hub.events.since(0)
            if e.kind == "drop"] == [("c0", True)]


def test_the_drop_pass_honours_the_numcopies_of_every_file_of_a_key(tmp_path: Path) -> None:
    # A source repository drops what it has sent, but x.dat's content is also
    # important/x.dat, which needs 2 copies: sent as scratch/x.dat, it is kept.
    a, b = make_clones(tmp_path, 2)
    (a / ".gitattributes").write_text("important/** annex.numcopies=2\n")
    for d in ("important", "scratch"):
        (a / d).mkdir()
        (a / d / "x.dat").write_bytes(b"the same bytes in two places")
    (a / "scratch" / "only.dat").write_bytes(b"only in scratch")
    cli(a, "sync", "-q")
    for args in (("group", "here", "source"), ("wanted", "here", "standard")):
        cli(a, *args)
    key_x = Key.parse(os.path.basename(os.readlink(a / "scratch" / "x.dat")))
    key_only = Key.parse(os.path.basename(os.readlink(a / "scratch" / "only.dat")))
    uuid_b = git(a, "config", "remote.c1.annex-uuid").strip()
    hub = hub_for(a)
    store_a, store_b = ObjectStore(a / ".git" / "annex"), ObjectStore(b / ".git" / "annex")
    with serving(hub) as tr:
        tr.enqueue(Job("upload", key_x, "scratch/x.dat", uuid_b))
        tr.enqueue(Job("upload", key_only, "scratch/only.dat", uuid_b))
        wait_for(lambda: not store_a.has(key_only), 30, what="only.dat dropped here")
    assert store_b.has(key_x) and store_b.has(key_only)
    assert store_a.has(key_x)  # 2 copies needed, 2 there: nothing may go
    assert [e.data.get("file") for e in hub.events.since(0)
            if e.kind == "drop" and e.data.get("ok")] == ["scratch/only.dat"]


def test_the_slots_end_with_the_transferrer_however_it_ends(tmp_path: Path) -> None:
    # The supervisor restarts a service that raised: the old slots must not live on.
    (a,) = make_clones(tmp_path, 1)
    hub = hub_for(a, slots=3)
    tr = Transferrer(hub)

    def broken_commit(*args: object, **kwargs: object) -> None:
        raise OSError("disk gone")

    hub.branch.commit = broken_commit  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def run() -> None:
        try:
            tr.run(threading.Event())
        except OSError as e:
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_for(lambda: tr.tr is not None, 10, what="the transferrer started")
    tr.consider_drop(fake_key(1), "x.bin")  # the queue "drains": flush and commit
    t.join(15)
    assert not t.is_alive() and errors
    assert not [th for th in threading.enumerate()
                if th.name.startswith("transfer-slot") and th.is_alive()]
