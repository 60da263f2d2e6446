"""Transfers: records and locks, verification, resume, retries, limits, faults."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from transferkit import download_running_elsewhere

from annexsync.annex.backends import get_backend
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import locations
from annexsync.annex.locks import lock_holder
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.git.config import set_config
from annexsync.remotes.base import KeyNotPresent, Meter, RemoteError, RemoteInfo, Sink
from annexsync.remotes.gitlocal import GitLocalRemote
from annexsync.testing.annexrepos import clone, make_repo
from annexsync.testing.clock import FakeClock
from annexsync.transfers.info import (
    Direction,
    Transfer,
    TransferAlreadyRunning,
    TransferRecord,
    failed_transfers,
    parse_transfer_info,
    transfers_in_progress,
)
from annexsync.transfers.runner import Transfers

DATA = os.urandom(300_000)
UUID = "11111111-2222-3333-4444-555555555555"


def key_for(data: bytes) -> Key:
    b = get_backend("SHA256E")
    h = b.new_hasher()
    h.update(data)
    return b.key_from_digest(h.hexdigest(), len(data), "f.bin")


class FakeRemote:
    """An in-memory remote whose retrieve can misbehave on purpose."""

    def __init__(self, data: bytes, *, chunk: int = 10_000,
                 hook: Callable[[int, int], None] | None = None) -> None:
        self.info = RemoteInfo(name="fake", uuid=UUID, kind="fake")
        self.data = data
        self.chunk = chunk
        self.hook = hook  # (attempt, offset) -> may raise
        self.offsets: list[int] = []
        self.stored: dict[Key, bytes] = {}

    def available(self) -> bool:
        return True

    def check_present(self, key: Key) -> bool:
        return True

    def retrieve(self, key: Key, sink: Sink, offset: int, meter: Meter) -> None:
        self.offsets.append(offset)
        pos = offset
        while pos < len(self.data):
            if self.hook is not None:
                self.hook(len(self.offsets), pos)
            piece = self.data[pos:pos + self.chunk]
            sink.write(piece)
            pos += len(piece)
            meter(len(piece))

    def store(self, key: Key, src: Path, meter: Meter) -> None:
        self.stored[key] = src.read_bytes()
        meter(len(self.stored[key]))

    def remove(self, key: Key) -> None:
        self.stored.pop(key, None)

    @contextmanager
    def lock_content(self, key: Key) -> Iterator[bool]:
        yield False

    def close(self) -> None:
        return None


@pytest.fixture
def repo(tmp_path: Path) -> AnnexRepo:
    return make_repo(tmp_path / "r", "r")


def test_verified_download_enters_store_and_is_logged(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    clock = FakeClock()
    with Transfers(repo, clock=clock) as t:
        res = t.download(FakeRemote(DATA), key, "f.bin")
    assert res.success and not res.error
    assert ObjectStore(repo.annex_dir).find(key).read_bytes() == DATA  # type: ignore[union-attr]
    assert repo.uuid in locations(AnnexBranch(repo), key)
    assert list((repo.annex_dir / "transfer" / "download" / UUID).iterdir()) == []
    assert failed_transfers(repo.annex_dir) == []


def test_wrong_bytes_are_rejected_and_never_stored(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    evil = DATA[:-1] + bytes([DATA[-1] ^ 1])
    with Transfers(repo) as t:
        res = t.download(FakeRemote(evil), key, "f.bin")
    assert not res.success and res.error == "verification of content failed"
    store = ObjectStore(repo.annex_dir)
    assert not store.has(key)
    assert not store.tmp_path(key).exists()
    [(tr, info)] = failed_transfers(repo.annex_dir)
    assert tr == Transfer(Direction.DOWNLOAD, UUID, key) and info.associated_file == "f.bin"
    assert repo.uuid not in locations(AnnexBranch(repo), key)


def test_wrong_size_from_a_local_remote_is_rejected(tmp_path: Path, repo: AnnexRepo) -> None:
    from annexsync.testing.annexrepos import clone

    other = make_repo(tmp_path / "o", "o", {"f.bin": DATA})
    key = key_for(DATA)
    obj = ObjectStore(other.annex_dir).find(key)
    assert obj is not None
    os.chmod(obj.parent, 0o755)
    os.chmod(obj, 0o644)
    obj.write_bytes(DATA + b"tampered")  # the remote's copy went bad
    del clone
    r = GitLocalRemote(RemoteInfo(name="o", uuid=other.uuid, kind="git"), other.top)
    with Transfers(repo) as t:
        res = t.download(r, key, "f.bin")
    assert not res.success and "verification" in (res.error or "")
    assert not ObjectStore(repo.annex_dir).has(key)


def test_interrupted_download_resumes_from_the_partial_file(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    set_config(repo.git, "annex.forward-retry", "0")
    repo.reload_config()

    def cut(attempt: int, pos: int) -> None:
        if attempt == 1 and pos >= 120_000:
            raise RemoteError("connection cut")

    remote = FakeRemote(DATA, hook=cut)
    with Transfers(repo) as t:
        assert not t.download(remote, key).success
    partial = ObjectStore(repo.annex_dir).tmp_path(key)
    assert partial.stat().st_size == 120_000  # kept for resume
    with Transfers(repo) as t:
        assert t.download(remote, key).success
    assert remote.offsets == [0, 120_000]
    assert ObjectStore(repo.annex_dir).find(key).read_bytes() == DATA  # type: ignore[union-attr]


def test_forward_retry_continues_within_one_command(repo: AnnexRepo) -> None:
    key = key_for(DATA)

    def cut(attempt: int, pos: int) -> None:
        if pos >= 100_000 * attempt and attempt <= 2:
            raise RemoteError("connection cut")

    remote = FakeRemote(DATA, hook=cut)
    with Transfers(repo) as t:
        assert t.download(remote, key).success
    assert remote.offsets == [0, 100_000, 200_000]


def test_configured_retry_backs_off_on_the_clock(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    set_config(repo.git, "annex.retry", "3")
    set_config(repo.git, "annex.retry-delay", "2")
    repo.reload_config()

    def fail(attempt: int, pos: int) -> None:
        if attempt <= 2:
            raise RemoteError("host down")

    clock = FakeClock()
    with Transfers(repo, clock=clock) as t:
        assert t.download(FakeRemote(DATA, hook=fail), key).success
    assert clock.sleeps == [2.0, 4.0]


def test_bwlimit_throttles_on_the_fake_clock(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    set_config(repo.git, "remote.fake.annex-bwlimit", "100KiB")
    repo.reload_config()
    clock = FakeClock()
    with Transfers(repo, clock=clock) as t:
        assert t.download(FakeRemote(DATA), key).success
    waited = sum(clock.sleeps)
    assert (len(DATA) - 25_600) / 102_400 - 0.2 <= waited <= len(DATA) / 102_400


def test_stall_detection_aborts_a_crawling_transfer(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    set_config(repo.git, "annex.stalldetection", "10KiB/60s")
    set_config(repo.git, "annex.forward-retry", "0")
    repo.reload_config()
    clock = FakeClock()
    remote = FakeRemote(DATA, chunk=1000, hook=lambda a, p: clock.advance(30))
    with Transfers(repo, clock=clock) as t:
        res = t.download(remote, key)
    assert not res.success and res.error == "transfer stalled"
    assert 0 < ObjectStore(repo.annex_dir).tmp_path(key).stat().st_size < len(DATA)


def test_missing_key_is_a_clear_failure(repo: AnnexRepo) -> None:
    key = key_for(DATA)

    def gone(attempt: int, pos: int) -> None:
        raise KeyNotPresent("fake does not have it")

    with Transfers(repo) as t:
        res = t.download(FakeRemote(DATA, hook=gone), key)
    assert not res.success and res.error == "fake does not have it"


def test_record_lifecycle_and_observer(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    t = Transfer(Direction.DOWNLOAD, UUID, key)
    rec = TransferRecord.begin(repo.annex_dir, t, "f.bin", 1_795_594_252_380_087_129)
    info_path = t.info_path(repo.annex_dir)
    assert info_path.read_bytes() == b"1795594252.380087129s\nf.bin\n"
    assert lock_holder(t.lock_path(repo.annex_dir)) is not None
    assert lock_holder(t.key_lock_path(repo.annex_dir)) is not None
    [(seen, info)] = transfers_in_progress(repo.annex_dir)
    assert seen == t and info.associated_file == "f.bin"
    rec.progress(2000)  # < 1% of 300000: not rewritten
    assert parse_transfer_info(info_path.read_bytes()).bytes_complete is None  # type: ignore
    rec.progress(3000)
    assert info_path.read_bytes() == b"1795594252.380087129s 3000\nf.bin\n"
    with pytest.raises(TransferAlreadyRunning):
        TransferRecord.begin(repo.annex_dir, t, "f.bin", 0)
    rec.finish(False)
    assert not info_path.exists() and not t.lock_path(repo.annex_dir).exists()
    assert transfers_in_progress(repo.annex_dir) == []
    assert t.failed_path(repo.annex_dir).read_bytes() == \
        b"1795594252.380087129s 3000\nf.bin\n"
    TransferRecord.begin(repo.annex_dir, t, None, 0).finish(True)
    assert not t.failed_path(repo.annex_dir).exists()


def test_stale_records_are_cleaned_by_observers(repo: AnnexRepo) -> None:
    t = Transfer(Direction.UPLOAD, UUID, key_for(DATA))
    info = t.info_path(repo.annex_dir)
    info.parent.mkdir(parents=True)
    info.write_bytes(b"1795594252s\nf.bin\n")
    t.lock_path(repo.annex_dir).write_bytes(b"")
    assert transfers_in_progress(repo.annex_dir) == []
    assert not info.exists() and not t.lock_path(repo.annex_dir).exists()


def test_a_second_process_cannot_run_the_same_transfer(repo: AnnexRepo) -> None:
    key = key_for(DATA)
    with download_running_elsewhere(repo.annex_dir, UUID, key):
        with Transfers(repo) as t:
            res = t.download(FakeRemote(DATA), key, "f.bin")
        assert not res.success
        assert res.error is not None and "transfer already in progress" in res.error
        assert not ObjectStore(repo.annex_dir).has(key)
    with Transfers(repo) as t:
        assert t.download(FakeRemote(DATA), key, "f.bin").success


def local_remote(name: str, repo: AnnexRepo) -> GitLocalRemote:
    return GitLocalRemote(RemoteInfo(name=name, uuid=repo.uuid, kind="git",
                                     supports_locking=True), repo.top)


def repo_and_clone(tmp_path: Path) -> tuple[AnnexRepo, AnnexRepo]:
    """``a`` with f.bin (DATA), and ``b``, a clone of it without the content."""
    ours = make_repo(tmp_path / "a", "a", {"f.bin": DATA})
    return ours, clone(ours.top, tmp_path / "b", "b")


def test_upload_records_both_sides(tmp_path: Path) -> None:
    ours, other = repo_and_clone(tmp_path)
    key = key_for(DATA)
    r = local_remote("b", other)
    with Transfers(ours) as t:
        assert t.upload(r, key, "f.bin").success
    assert other.uuid in locations(AnnexBranch(ours), key)
    # the remote's own journal says it has the key (its next commit publishes it)
    other2 = AnnexRepo.find(other.top)
    assert other.uuid in locations(AnnexBranch(other2), key)
    assert ObjectStore(other.annex_dir).find(key).read_bytes() == DATA  # type: ignore


def test_upload_to_a_local_repository_that_has_it_only_records_it(tmp_path: Path) -> None:
    ours, other = repo_and_clone(tmp_path)
    key = key_for(DATA)
    with Transfers(other) as t:  # b fetched it itself (its assistant, say)
        assert t.download(local_remote("a", ours), key, "f.bin").success
    assert other.uuid not in locations(AnnexBranch(ours), key)
    r = local_remote("b", other)
    with Transfers(ours) as t:
        res = t.upload(r, key, "f.bin")
    assert res.success and res.skipped and res.bytes == 0
    assert other.uuid in locations(AnnexBranch(ours), key)  # what we learnt is kept
    assert not [p for p in (other.annex_dir / "transfer").rglob("*") if p.is_file()]
