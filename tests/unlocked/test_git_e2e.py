"""Real git with only annexsync configured (git-annex is not on PATH)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from unlockedkit import ANNEXSYNC, Sh, commit, status

from annexsync.annex.backends import hash_file
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key, pointer_content
from annexsync.annex.location import locations
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo


def staged_blob(sh: Sh, top: Path, path: str) -> bytes:
    return sh(top, "git", "cat-file", "-p", f":{path}").encode("utf-8", "surrogateescape")


def key_of(path: Path) -> Key:
    return hash_file(path)[0]


def assoc(repo: AnnexRepo) -> set[tuple[str, str]]:
    c = sqlite3.connect(repo.annex_path("keysdb", "db"))
    try:
        return {(bytes(k).decode(), bytes(f).decode())
                for k, f in c.execute("SELECT key, file FROM associated")}
    finally:
        c.close()


def test_init_configures_filter_and_hooks(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    cfg = sh(top, "git", "config", "--get-regexp", "^filter[.]annex[.]")
    assert f"filter.annex.process {ANNEXSYNC} filter-process" in cfg
    assert f"filter.annex.clean {ANNEXSYNC} smudge --clean -- %f" in cfg
    assert f"filter.annex.smudge {ANNEXSYNC} smudge -- %f" in cfg
    assert "* filter=annex" in (repo.git_dir / "info" / "attributes").read_text()
    for hook, cmd in (("post-checkout", "smudge --update"), ("post-merge", "smudge --update"),
                      ("pre-commit", "pre-commit .")):
        p = repo.git_dir / "hooks" / hook
        assert os.access(p, os.X_OK) and p.read_text().endswith(f"{ANNEXSYNC} {cmd}\n")
    assert repo.annex_path("sentinal").exists() and repo.annex_path("sentinal.cache").exists()
    # again: nothing changes, no warnings; a foreign hook is kept and reported
    (repo.git_dir / "hooks" / "post-merge").write_text("#!/bin/sh\necho mine\n")
    from annexsync.annex.init import init
    res = init(repo)
    assert len(res.warnings) == 1 and "post-merge" in res.warnings[0]
    assert (repo.git_dir / "hooks" / "post-merge").read_text() == "#!/bin/sh\necho mine\n"


def test_add_commit_status_diff(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    sh(top, "git", "config", "annex.largefiles", "largerthan=100b")
    (top / "small.txt").write_text("small\n")
    (top / "big.dat").write_bytes(os.urandom(5000))
    (top / ".hidden").write_bytes(b"h" * 500)
    sh(top, "git", "add", "small.txt", "big.dat", ".hidden")
    key = key_of(top / "big.dat")
    assert staged_blob(sh, top, "big.dat") == pointer_content(key)
    assert staged_blob(sh, top, "small.txt") == b"small\n"
    assert staged_blob(sh, top, ".hidden") == b"h" * 500  # dotfiles stay in git
    store = ObjectStore(repo.annex_dir)
    obj = store.find(key)
    assert obj is not None and obj.read_bytes() == (top / "big.dat").read_bytes()
    assert (top / "big.dat").stat().st_ino != obj.stat().st_ino  # a copy, not a link
    assert (key.__str__(), "big.dat") in assoc(repo)
    assert locations(AnnexBranch(repo), key) == {repo.uuid}
    commit(sh, top)
    assert status(sh, top) == ""
    # modify and commit -a: new content annexed, old kept
    (top / "big.dat").write_bytes(b"new content " * 100)
    assert sh(top, "git", "status", "--porcelain") == " M big.dat\n"
    diff = sh(top, "git", "diff")
    new = key_of(top / "big.dat")
    assert f"-/annex/objects/{key}" in diff and f"+/annex/objects/{new}" in diff
    sh(top, "git", "commit", "-q", "-a", "-m", "mod")
    assert status(sh, top) == "" and sh(top, "git", "diff", "HEAD") == ""
    assert store.has(new) and store.has(key)
    assert staged_blob(sh, top, "big.dat") == pointer_content(new)


def test_largefiles_not_configured_follows_the_index(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    (top / "doc.txt").write_text("a text file\n")
    sh(top, "git", "add", "doc.txt")
    assert staged_blob(sh, top, "doc.txt") == b"a text file\n"  # new file: git
    (top / "data.bin").write_bytes(b"\0" * 3000)
    sh(top, "git", "-c", "annex.largefiles=anything", "add", "data.bin")
    k = key_of(top / "data.bin")
    assert staged_blob(sh, top, "data.bin") == pointer_content(k)
    commit(sh, top)
    (top / "data.bin").write_bytes(b"\1" * 10)  # small now, but annexed in the index
    sh(top, "git", "add", "data.bin")
    assert staged_blob(sh, top, "data.bin") == pointer_content(key_of(top / "data.bin"))


def test_checkout_between_branches(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    sh(top, "git", "config", "annex.largefiles", "anything")
    (top / "f.bin").write_bytes(b"one " * 1000)
    (top / "sub").mkdir()
    (top / "sub" / "g.bin").write_bytes(b"gee " * 1000)
    sh(top, "git", "add", ".")
    commit(sh, top, "one")
    sh(top, "git", "checkout", "-q", "-b", "other")
    (top / "f.bin").write_bytes(b"two " * 2000)
    (top / "h.bin").write_bytes(b"aitch" * 100)
    sh(top, "git", "add", ".")
    commit(sh, top, "two")
    for branch, f_content in (("main", b"one " * 1000), ("other", b"two " * 2000),
                              ("main", b"one " * 1000)):
        sh(top, "git", "checkout", "-q", branch)
        assert (top / "f.bin").read_bytes() == f_content
        assert (top / "sub" / "g.bin").read_bytes() == b"gee " * 1000
        assert (top / "h.bin").exists() == (branch == "other")
        assert status(sh, top) == ""
    assert repo.annex_path("smudge.log").read_bytes() == b""
    # content not present: checkout leaves the pointer file, status still clean
    k = key_of(top / "f.bin")
    sh(top, "git", "checkout", "-q", "other")
    store = ObjectStore(repo.annex_dir)
    obj = store.find(k)
    assert obj is not None
    os.chmod(obj.parent, 0o755)
    moved = repo.top.parent / "saved"
    os.rename(obj, moved)
    sh(top, "git", "checkout", "-q", "main")
    assert (top / "f.bin").read_bytes() == pointer_content(k)
    assert status(sh, top) == ""
    # content comes back: populate_unlocked fills it and keeps status clean
    from annexsync.annex.unlocked import populate_unlocked
    os.chmod(moved, 0o444)
    store.move_in(k, moved)
    assert populate_unlocked(AnnexRepo.find(top), k) == ["f.bin"]
    assert (top / "f.bin").read_bytes() == b"one " * 1000
    assert status(sh, top) == ""


def test_stash_and_pre_commit_fill_pointers(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    sh(top, "git", "config", "annex.largefiles", "anything")
    (top / "a.bin").write_bytes(b"A" * 100)
    sh(top, "git", "add", "a.bin")
    commit(sh, top)
    (top / "a.bin").write_bytes(b"B" * 100)
    sh(top, "git", "stash", "-q")  # no post-checkout hook: a.bin is left a pointer
    assert (top / "a.bin").read_bytes() == b"A" * 100 or \
        (top / "a.bin").read_bytes().startswith(b"/annex/objects/")
    (top / "other.bin").write_bytes(b"x" * 10)
    sh(top, "git", "add", "other.bin")
    commit(sh, top, "pre-commit fills a.bin")
    assert (top / "a.bin").read_bytes() == b"A" * 100
    sh(top, ANNEXSYNC, "restage")
    assert status(sh, top) == ""


def test_unlock_lock_and_add_unlocked(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    (top / "x.bin").write_bytes(b"x" * 2000)
    (top / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n" * 50)
    os.chmod(top / "run.sh", 0o755)
    sh(top, ANNEXSYNC, "add", "x.bin", "run.sh")
    assert (top / "x.bin").is_symlink()
    commit(sh, top)
    out = sh(top, ANNEXSYNC, "unlock", "x.bin", "run.sh")
    assert out == "unlock run.sh ok\nunlock x.bin ok\n"
    assert not (top / "x.bin").is_symlink() and (top / "x.bin").read_bytes() == b"x" * 2000
    assert os.access(top / "run.sh", os.X_OK)
    ls = sh(top, "git", "ls-files", "-s", "x.bin", "run.sh")
    assert ls.startswith("100755") and "\n100644" in ls
    assert status(sh, top) == "T  run.sh\nT  x.bin\n"
    assert sh(top, "git", "diff") == ""  # index fresh: nothing unstaged
    commit(sh, top, "unlocked")
    (top / "x.bin").write_bytes(b"changed")
    r = json.loads(sh(top, ANNEXSYNC, "lock", "--json", "x.bin", check=False))
    assert not r["success"] and "discard" in r["error-messages"][0]
    assert (top / "x.bin").read_bytes() == b"changed"
    sh(top, "git", "checkout", "--", "x.bin")
    assert (top / "x.bin").read_bytes() == b"x" * 2000  # filled back by the hook
    assert sh(top, ANNEXSYNC, "lock", "x.bin") == "lock x.bin ok\n"
    assert (top / "x.bin").is_symlink() and (top / "x.bin").read_bytes() == b"x" * 2000
    # add --unlocked and annex.addunlocked
    (top / "u1.bin").write_bytes(b"u1" * 500)
    (top / "u2.bin").write_bytes(b"u2" * 500)
    sh(top, ANNEXSYNC, "add", "--unlocked", "u1.bin")
    sh(top, "git", "config", "annex.addunlocked", "include=u2*")
    sh(top, ANNEXSYNC, "add", "u2.bin")
    for f in ("u1.bin", "u2.bin"):
        assert not (top / f).is_symlink()
        assert staged_blob(sh, top, f) == pointer_content(key_of(top / f))
    assert sh(top, "git", "diff") == ""
    assert {("u1.bin"), ("u2.bin")} <= {f for _, f in assoc(repo)}
    # a modified unlocked file stays unlocked when added again
    commit(sh, top, "u")
    (top / "u1.bin").write_bytes(b"u1 changed")
    sh(top, ANNEXSYNC, "add", "u1.bin")
    assert not (top / "u1.bin").is_symlink()
    assert staged_blob(sh, top, "u1.bin") == pointer_content(key_of(top / "u1.bin"))
    assert status(sh, top) == "M  u1.bin\n"


def test_unlock_without_content_gives_pointer_file(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    (top / "gone.bin").write_bytes(b"g" * 300)
    sh(top, ANNEXSYNC, "add", "gone.bin")
    k = key_of(top / "gone.bin")
    commit(sh, top)
    obj = ObjectStore(repo.annex_dir).find(k)
    assert obj is not None
    os.chmod(obj.parent, 0o755)
    os.rename(obj, top.parent / "kept")
    sh(top, ANNEXSYNC, "unlock", "gone.bin")
    assert (top / "gone.bin").read_bytes() == pointer_content(k)
    assert status(sh, top) == "T  gone.bin\n"
    sh(top, ANNEXSYNC, "lock", "gone.bin")
    assert os.readlink(top / "gone.bin").endswith(k.key_file)


def test_fsck(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    sh(top, "git", "config", "annex.largefiles", "anything")
    (top / "u.bin").write_bytes(b"unlocked " * 100)
    (top / "l.bin").write_bytes(b"locked " * 100)
    sh(top, "git", "add", "u.bin")
    sh(top, ANNEXSYNC, "add", "l.bin")
    commit(sh, top)
    assert sh(top, ANNEXSYNC, "fsck") == \
        "fsck l.bin (checksum...) ok\nfsck u.bin (checksum...) ok\n"
    store = ObjectStore(repo.annex_dir)
    ku, kl = key_of(top / "u.bin"), key_of(top / "l.bin")
    # corrupt both objects
    for k in (ku, kl):
        obj = store.find(k)
        assert obj is not None
        os.chmod(obj, 0o644)
        obj.write_bytes(b"garbage")
    out = [json.loads(line) for line in
           sh(top, ANNEXSYNC, "fsck", "--json", check=False).splitlines()]
    by = {r["file"]: r for r in out}
    assert not by["l.bin"]["success"]
    assert any("Bad file content; moved to .git/annex/bad/" + kl.key_file in m
               for m in by["l.bin"]["error-messages"])
    assert (repo.annex_path("bad") / kl.key_file).read_bytes() == b"garbage"
    assert (repo.annex_path("bad") / ku.key_file).read_bytes() == b"garbage"
    # the unlocked file still had good content: it went back into the annex (the
    # file still fails: corruption was found, as git-annex reports it)
    assert by["u.bin"]["note"] == "content restored from u.bin" and store.find(ku) is not None
    assert store.find(ku).read_bytes() == (top / "u.bin").read_bytes()  # type: ignore[union-attr]
    branch = AnnexBranch(repo)
    assert repo.uuid not in locations(branch, kl) and locations(branch, ku) == {repo.uuid}
    # a second corruption of the same key never overwrites the first bad copy
    obj = store.find(ku)
    assert obj is not None
    os.chmod(obj, 0o644)
    obj.write_bytes(b"garbage 2")
    sh(top, ANNEXSYNC, "fsck", "u.bin", check=False)
    assert (repo.annex_path("bad") / (ku.key_file + ".1")).read_bytes() == b"garbage 2"
    # present but not in the location log: fixed
    from annexsync.annex.location import log_presence
    log_presence(branch, ku, repo.uuid, False)
    branch.commit()
    assert sh(top, ANNEXSYNC, "fsck", "--fast", "u.bin") == \
        "fsck u.bin (fixing location log) ok\n"
    assert locations(AnnexBranch(repo), ku) == {repo.uuid}
    failed = sh(top, ANNEXSYNC, "fsck", "l.bin", check=False)
    assert "** No known copies exist of l.bin" in failed and failed.endswith("failed\n")


def test_one_shot_filter_forms(repo: AnnexRepo, sh: Sh) -> None:
    top = repo.top
    sh(top, "git", "config", "--unset", "filter.annex.process")  # git uses smudge/clean
    sh(top, "git", "config", "annex.largefiles", "anything")
    (top / "o.bin").write_bytes(b"one-shot " * 50)
    sh(top, "git", "add", "o.bin")
    k = key_of(top / "o.bin")
    assert staged_blob(sh, top, "o.bin") == pointer_content(k)
    commit(sh, top)
    os.unlink(top / "o.bin")
    sh(top, "git", "checkout", "--", "o.bin")  # smudge -> pointer, hook -> content
    assert (top / "o.bin").read_bytes() == b"one-shot " * 50
    assert status(sh, top) == ""
    # the one-shot clean leaves its location log in the journal; fsck agrees
    assert sh(top, ANNEXSYNC, "fsck", "o.bin") == "fsck o.bin (checksum...) ok\n"


def test_fsck_from_a_remote(repo: AnnexRepo, sh: Sh, tmp_path: Path) -> None:
    top = repo.top
    (top / "r.bin").write_bytes(b"remote copy " * 20)
    sh(top, ANNEXSYNC, "add", "r.bin")
    commit(sh, top)
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(top), str(clone))
    sh(clone, ANNEXSYNC, "init", "clone")
    assert sh(clone, ANNEXSYNC, "fsck", "--from", "origin") == "fsck r.bin (checksum...) ok\n"
    k = key_of(top / "r.bin")
    obj = ObjectStore(repo.annex_dir).find(k)
    assert obj is not None
    os.chmod(obj, 0o644)
    obj.write_bytes(b"x" * 240)
    out = sh(clone, ANNEXSYNC, "fsck", "--from", "origin", check=False)
    assert "Bad file content on origin" in out and out.endswith("failed\n")
    assert obj.read_bytes() == b"x" * 240  # the remote's copy is never deleted
    assert (clone / ".git/annex/bad" / k.key_file).read_bytes() == b"x" * 240
    assert repo.uuid not in locations(AnnexBranch(AnnexRepo.find(clone)), k)
    bad = sh(clone, ANNEXSYNC, "fsck", "--from", "nosuch", check=False, stderr=True)
    assert 'there is no available git remote named "nosuch"' in bad
