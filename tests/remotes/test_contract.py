"""The remote contract, run against every remote type in contract.BUILDERS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from contract import Harness

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.location import locations
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.worktree import annexed_files
from annexsync.remotes.base import KeyNotPresent, RemoteError, RemoteUnavailable
from annexsync.transfers.runner import Transfers
from conftest import BIG, SMALL


def keys(repo: AnnexRepo) -> dict[str, Key]:
    return {af.file: af.key for af in annexed_files(repo)}


class Collect:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> int:
        self.data += b
        return len(b)


def store(repo: AnnexRepo, h: Harness, key: Key) -> None:
    src = ObjectStore(repo.annex_dir).find(key)
    assert src is not None
    h.remote.store(key, src, lambda n: None)


def test_available_and_empty(ours: AnnexRepo, harness: Harness) -> None:
    r = harness.remote
    assert r.available()
    assert r.info.uuid
    for k in keys(ours).values():
        assert not r.check_present(k)


def test_store_then_retrieve_whole_and_from_offset(ours: AnnexRepo, harness: Harness) -> None:
    r = harness.remote
    for name, data in (("small.txt", SMALL), ("big.bin", BIG)):
        k = keys(ours)[name]
        store(ours, harness, k)
        assert r.check_present(k)
        whole, tail = Collect(), Collect()
        seen: list[int] = []
        r.retrieve(k, whole, 0, seen.append)
        r.retrieve(k, tail, 5, lambda n: None)
        assert bytes(whole.data) == data
        assert sum(seen) == len(data)
        assert bytes(tail.data) == data[5:]


def test_store_is_idempotent_and_remove_is_too(ours: AnnexRepo, harness: Harness) -> None:
    r = harness.remote
    k = keys(ours)["small.txt"]
    store(ours, harness, k)
    store(ours, harness, k)
    assert r.check_present(k)
    r.remove(k)
    assert not r.check_present(k)
    r.remove(k)


def test_missing_key_is_key_not_present(ours: AnnexRepo, harness: Harness) -> None:
    k = keys(ours)["small.txt"]
    with pytest.raises(KeyNotPresent):
        harness.remote.retrieve(k, Collect(), 0, lambda n: None)


def test_lock_content_is_a_real_proof(ours: AnnexRepo, harness: Harness) -> None:
    r = harness.remote
    k = keys(ours)["small.txt"]
    with r.lock_content(k) as locked:
        assert locked is False  # not there yet
    store(ours, harness, k)
    with r.lock_content(k) as locked:
        assert locked is r.info.supports_locking
        if locked:
            with pytest.raises(RemoteError):
                r.remove(k)  # someone counts on it: not removed
            assert r.check_present(k)
    r.remove(k)
    assert not r.check_present(k)


def test_unplugged_remote_is_unavailable_not_empty(ours: AnnexRepo, harness: Harness) -> None:
    k = keys(ours)["small.txt"]
    store(ours, harness, k)
    harness.make_unavailable()
    try:
        assert not harness.remote.available()
        with pytest.raises(RemoteUnavailable):
            harness.remote.check_present(k)
    finally:
        harness.restore()
    assert harness.remote.check_present(k)


def test_upload_and_download_through_transfers(tmp_path: Path, ours: AnnexRepo,
                                               harness: Harness) -> None:
    r = harness.remote
    ks = keys(ours)
    with Transfers(ours) as t:
        for k in ks.values():
            assert t.upload(r, k).success
    branch = AnnexBranch(ours)
    for k in ks.values():
        assert r.info.uuid in locations(branch, k)
    # Drop our copies and get them back, verified.
    store_ = ObjectStore(ours.annex_dir)
    for k in ks.values():
        with store_.lock_exclusive(k) as lk:
            store_.remove(k, lk)
    with Transfers(ours) as t:
        for k in ks.values():
            res = t.download(r, k)
            assert res.success, res.error
    for name, data in (("small.txt", SMALL), ("big.bin", BIG)):
        p = store_.find(ks[name])
        assert p is not None and p.read_bytes() == data
        assert not os.access(p, os.W_OK) or os.geteuid() == 0
    assert ours.uuid in locations(AnnexBranch(ours), ks["big.bin"])
