"""The filter and the unlocked-file operations against hostile or racing input."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from unlockedkit import ANNEXSYNC, Sh, commit, status

import annexsync.annex.unlocked as unlocked_mod
from annexsync.annex.backends import Backend, hash_file
from annexsync.annex.keys import Key, pointer_content
from annexsync.annex.keysdb import LAST_INDEX_REF, InodeCache, KeysDb
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.restage import pending, restage
from annexsync.annex.smudge import AnnexFilter
from annexsync.annex.unlocked import UnlockedContent, depopulate_unlocked, populate_unlocked


def sha256_key(data: bytes, ext: str = ".bin") -> Key:
    return Key.parse(f"SHA256E-s{len(data)}--{hashlib.sha256(data).hexdigest()}{ext}")


def chunks(data: bytes, n: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(data), n):
        yield data[i:i + n]


def annexed_repo(repo: AnnexRepo, sh: Sh) -> AnnexRepo:
    sh(repo.top, "git", "config", "annex.largefiles", "anything")
    return AnnexRepo.find(repo.top)


def test_file_modified_while_cleaned_is_never_stored_under_a_wrong_key(
        repo: AnnexRepo, sh: Sh) -> None:
    r = annexed_repo(repo, sh)
    path = r.top / "race.bin"
    original = b"o" * 50_000
    path.write_bytes(original)
    filt = AnnexFilter(r, long_running=True)
    filt._prev_done_ns = 0  # as if an earlier request finished long ago

    def racing() -> Iterator[bytes]:
        for i, c in enumerate(chunks(original, 10_000)):
            if i == 2:
                path.write_bytes(b"MODIFIED" * 10)  # the user saves mid-stream
            yield c

    try:
        out = b"".join(filt.clean("race.bin", racing()))
    finally:
        filt.close()
    key = sha256_key(original)
    assert out == pointer_content(key)  # the pointer names the bytes git streamed
    obj = ObjectStore(r.annex_dir).find(key)
    assert obj is not None and obj.read_bytes() == original
    with KeysDb(r) as db:  # the changed file's stat is not vouched for
        assert not db.is_unmodified_cheap(key, InodeCache.of_path(path))
    assert path.read_bytes() == b"MODIFIED" * 10  # and the user's edit is untouched


def test_stat_cache_answers_without_hashing(repo: AnnexRepo, sh: Sh,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    r = annexed_repo(repo, sh)
    data = os.urandom(20_000)
    (r.top / "s.bin").write_bytes(data)
    monkeypatch.setattr(unlocked_mod, "SETTLE_NS", 0)
    filt = AnnexFilter(r, long_running=True)
    filt._prev_done_ns = 2**62  # the file is older than "git started reading it"
    try:
        first = b"".join(filt.clean("s.bin", chunks(data)))
        filt.request_done()
        filt._prev_done_ns = 2**62

        def no_hashing(self: Backend) -> object:
            raise AssertionError("hashed an unchanged file")

        monkeypatch.setattr(Backend, "new_hasher", no_hashing)
        second = b"".join(filt.clean("s.bin", chunks(data)))
    finally:
        filt.close()
    assert first == second == pointer_content(sha256_key(data))


def test_pointer_edited_into_garbage_is_kept_as_content(repo: AnnexRepo, sh: Sh) -> None:
    r = annexed_repo(repo, sh)
    top = r.top
    (top / "p.bin").write_bytes(b"payload" * 100)
    sh(top, "git", "add", "p.bin")
    commit(sh, top)
    garbage = b"/annex/objects/SHA256E-s5--notakey\n"
    (top / "p.bin").write_bytes(garbage)
    out = sh(top, "git", "add", "p.bin", stderr=True)
    assert "not valid; treating it as ordinary content" in out
    staged = sh(top, "git", "cat-file", "-p", ":p.bin").encode()
    key = sha256_key(garbage)
    assert staged == pointer_content(key)  # annexed (the index version was annexed)
    assert ObjectStore(r.annex_dir).find(key).read_bytes() == garbage  # type: ignore[union-attr]
    # the old content is still in the annex
    assert ObjectStore(r.annex_dir).has(sha256_key(b"payload" * 100))


def test_hostile_pointer_in_git_is_never_followed(repo: AnnexRepo, sh: Sh,
                                                  tmp_path: Path) -> None:
    top = repo.top
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    rel = os.path.relpath(victim, repo.annex_dir / "objects")
    hostile = f"/annex/objects/{rel}\n".encode()
    blob = sh(top, "git", "hash-object", "-w", "--stdin", "--no-filters",
              input=hostile).strip()
    sh(top, "git", "update-index", "--add", "--cacheinfo", f"100644,{blob},h.bin")
    commit(sh, top)
    sh(top, "git", "checkout", "-q", "--", "h.bin")  # smudge it into the work tree
    assert (top / "h.bin").read_bytes() == hostile
    assert sh(top, ANNEXSYNC, "fsck") == ""  # not an annexed file at all
    assert sh(top, ANNEXSYNC, "unlock", "h.bin") == ""
    assert sh(top, ANNEXSYNC, "lock", "h.bin") == ""
    assert victim.read_text() == "precious\n"
    dbpath = repo.annex_path("keysdb", "db")
    if dbpath.exists():  # nothing was ever associated with such a "key"
        db = sqlite3.connect(dbpath)
        assert db.execute("SELECT count(*) FROM associated").fetchone()[0] == 0
        db.close()


def test_file_replaced_by_a_directory(repo: AnnexRepo, sh: Sh) -> None:
    r = annexed_repo(repo, sh)
    top = r.top
    data = b"d" * 3000
    (top / "d.bin").write_bytes(data)
    sh(top, "git", "add", "d.bin")
    commit(sh, top)
    key = sha256_key(data)
    os.unlink(top / "d.bin")
    (top / "d.bin").mkdir()
    (top / "d.bin" / "inner").write_text("inside\n")
    assert populate_unlocked(r, key) == []
    res = depopulate_unlocked(r, key)
    assert res.emptied == [] and res.modified == []
    out = sh(top, ANNEXSYNC, "lock", "d.bin", check=False, stderr=True)
    assert "lock d.bin failed: not a regular file" in out
    assert (top / "d.bin" / "inner").read_text() == "inside\n"
    assert ObjectStore(r.annex_dir).find(key).read_bytes() == data  # type: ignore[union-attr]
    sh(top, "git", "add", "-A")
    commit(sh, top, "dir now")
    assert status(sh, top) == ""


def test_restage_waits_for_a_locked_index_and_keeps_its_log(repo: AnnexRepo, sh: Sh) -> None:
    r = annexed_repo(repo, sh)
    top = r.top
    data = b"r" * 1000
    (top / "r.bin").write_bytes(data)
    sh(top, "git", "add", "r.bin")
    commit(sh, top)
    key = sha256_key(data)
    store = ObjectStore(r.annex_dir)
    with store.lock_exclusive(key) as lk:  # dropped (else the filter would refill it)
        store.remove(key, lk)
    with UnlockedContent(r, restage=False) as uc:
        assert uc.depopulate_file(key, "r.bin") is True
    assert pending(r)
    lock = r.git_dir / "index.lock"
    lock.write_text("")
    try:
        res = restage(r, attempts=2)
        assert res.warning is not None and "annexsync restage" in res.warning
        assert pending(r)
    finally:
        lock.unlink()
    assert sh(top, ANNEXSYNC, "restage") == "restage ok\n"
    assert not pending(r)
    assert status(sh, top) == ""
    assert (top / "r.bin").read_bytes() == pointer_content(key)


def test_reconcile_tracks_the_index(repo: AnnexRepo, sh: Sh) -> None:
    r = annexed_repo(repo, sh)
    top = r.top
    (top / "one.bin").write_bytes(b"1" * 100)
    (top / "two.bin").write_bytes(b"2" * 100)
    sh(top, ANNEXSYNC, "add", "one.bin")
    sh(top, "git", "add", "two.bin")
    k1, k2 = hash_file(top / "one.bin")[0], hash_file(top / "two.bin")[0]
    with KeysDb(r) as db:
        added = db.reconcile_staged()
        assert {(c.file, c.unlocked) for c in added} == {("one.bin", False), ("two.bin", True)}
        assert db.associated_files(k1) == ["one.bin"]
        tree = sh(top, "git", "rev-parse", LAST_INDEX_REF).strip()
        assert tree == sh(top, "git", "write-tree").strip()
        sh(top, "git", "mv", "two.bin", "three.bin")
        db.reconcile_staged()
        assert db.associated_files(k2) == ["three.bin"]
        assert db.reconcile_staged() == []  # nothing new
        db.invalidate()
    assert sh(top, "git", "rev-parse", "--verify", "-q", LAST_INDEX_REF, check=False) == ""
    with KeysDb(r) as db:  # rebuilt from scratch, complete
        db.reconcile_staged()
        assert db.associated_files(k1) == ["one.bin"] and db.associated_files(k2) == ["three.bin"]


def test_thin_mode_hard_links_and_drops_the_modified_object(repo: AnnexRepo, sh: Sh) -> None:
    r = annexed_repo(repo, sh)
    top = r.top
    sh(top, "git", "config", "annex.thin", "true")
    r = AnnexRepo.find(top)
    data = b"thin" * 500
    (top / "t.bin").write_bytes(data)
    sh(top, ANNEXSYNC, "add", "--unlocked", "t.bin")
    key = sha256_key(data)
    obj = ObjectStore(r.annex_dir).find(key)
    assert obj is not None and obj.stat().st_ino == (top / "t.bin").stat().st_ino
    commit(sh, top)
    with open(top / "t.bin", "r+b") as fh:  # edit in place: the object changes too
        fh.write(b"THIN")
    sh(top, "git", "add", "t.bin")
    assert ObjectStore(r.annex_dir).find(key) is None  # no longer key's content
    new = sha256_key(b"THIN" + data[4:])
    assert ObjectStore(r.annex_dir).find(new).read_bytes() == b"THIN" + data[4:]  # type: ignore[union-attr]
    assert (top / "t.bin").read_bytes() == b"THIN" + data[4:]
