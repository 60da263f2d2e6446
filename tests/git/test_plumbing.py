"""The git plumbing layer against real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from annexsync.errors import NotARepositoryError
from annexsync.git.attributes import CheckAttr
from annexsync.git.catfile import CatFile, check_many
from annexsync.git.config import GitConfig, set_config
from annexsync.git.index import IndexEntry, ls_files_staged, private_index, update_index
from annexsync.git.objects import BlobWriter, blob_oid, hash_paths
from annexsync.git.refs import commit_tree, ls_tree, rev_parse, update_ref, write_tree
from annexsync.git.runner import GitError, discover


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q", "-b", "main")
    return tmp_path


def test_blob_oid_matches_git(repo: Path) -> None:
    for data in (b"", b"hello\n", bytes(range(256)) * 3):
        (repo / "f").write_bytes(data)
        assert blob_oid(data) == git(repo, "hash-object", "f").strip()


def test_blob_writer_and_catfile_round_trip(repo: Path) -> None:
    g = discover(repo)
    blobs = [f"blob {i}\n".encode() * i for i in range(200)]
    with BlobWriter(g) as w:
        oids = [w.add(b) for b in blobs]
    with CatFile(g) as cf:
        got = cf.get_many(oids)
        assert [o.data for _, o in got if o] == blobs
        assert cf.get("0" * 40) is None
        assert cf.get_blob(oids[5]) == blobs[5]
    sizes = check_many(g, oids[:3])
    assert sizes[oids[2]] == ("blob", len(blobs[2]))


def test_private_index_builds_commit_without_touching_user_index(repo: Path) -> None:
    g = discover(repo)
    w = BlobWriter(g)
    oid = w.add(b"content\n")
    w.flush()
    with private_index(g) as idx:
        update_index(g, [IndexEntry("100644", oid, "dir/with space/é.txt")], idx)
        tree = write_tree(g, idx)
    commit = commit_tree(g, tree, [], "msg")
    update_ref(g, "refs/heads/side", commit, "0" * 40)
    assert rev_parse(g, "refs/heads/side") == commit
    assert [e.path for e in ls_tree(g, commit)] == ["dir/with space/é.txt"]
    assert list(ls_files_staged(g)) == []  # the real index is untouched
    # compare-and-swap refuses a stale old value
    with pytest.raises(GitError):
        update_ref(g, "refs/heads/side", commit, "1" * 40)


def test_hash_paths_writes_objects(repo: Path) -> None:
    g = discover(repo)
    (repo / "a").write_bytes(b"aaa")
    (repo / "b c").write_bytes(b"bbb")
    oids = hash_paths(g, ["a", "b c"])
    assert oids == [blob_oid(b"aaa"), blob_oid(b"bbb")]
    assert git(repo, "cat-file", "-p", oids[1]) == "bbb"


def test_config_read_and_case_rules(repo: Path) -> None:
    g = discover(repo)
    set_config(g, "annex.largefiles", "largerthan=1kb")
    set_config(g, "remote.MyRemote.annex-uuid", "u-1")
    set_config(g, "remote.MyRemote.url", "/x")
    cfg = GitConfig.read(g)
    assert cfg.get("Annex.LargeFiles") == "largerthan=1kb"
    assert cfg.get("remote.MyRemote.annex-uuid") == "u-1"
    assert cfg.remotes() == ["MyRemote"]
    assert cfg.get_bool("annex.nothing", True) is True


def test_check_attr_batch(repo: Path) -> None:
    (repo / ".gitattributes").write_text("*.bin annex.largefiles=anything\n")
    g = discover(repo)
    ca = CheckAttr(g, ["annex.largefiles"])
    got = ca.get_many(["x.bin", "y.txt", "dir/z.bin"])
    assert [d["annex.largefiles"] for d in got] == ["anything", None, "anything"]
    assert ca.get("q.bin") == {"annex.largefiles": "anything"}
    ca.close()


def test_discover_errors_and_bare(tmp_path: Path) -> None:
    with pytest.raises(NotARepositoryError, match="not in a git repository"):
        discover(tmp_path)
    git(tmp_path, "init", "-q", "--bare", "b.git")
    g = discover(tmp_path / "b.git")
    assert g.bare and g.git_dir == (tmp_path / "b.git").resolve()


def test_check_attr_answers_the_same_for_a_few_paths_and_for_a_batch(tmp_path: Path) -> None:
    # A few paths go through the long-lived process, many through one one-shot run.

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitattributes").write_text("*.raw annex.numcopies=3\nsub/** annex.numcopies=2\n")
    paths = [f"f{i}.raw" if i % 3 == 0 else f"sub/f{i}.txt" if i % 3 == 1 else f"f{i}.txt"
             for i in range(100)]
    want = [{"annex.numcopies": "3" if p.endswith(".raw") else
             "2" if p.startswith("sub/") else None} for p in paths]
    attrs = CheckAttr(discover(tmp_path), ["annex.numcopies"], keep_alive=True)
    try:
        assert attrs.get_many(paths) == want
        assert attrs.get_many(paths[:5]) == want[:5]
        assert [attrs.get_many([p])[0] for p in paths[:40]] == want[:40]
    finally:
        attrs.close()


def _child_commands() -> list[str]:
    """Command lines of this process's live children (every thread's)."""
    out = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                           .decode(errors="replace"))
            except OSError:
                pass
    return out


def test_check_attr_leaves_no_process_behind_unless_kept_alive(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitattributes").write_text("*.raw annex.numcopies=3\n")
    once = CheckAttr(discover(tmp_path), ["annex.numcopies"])
    assert once.get_many(["a.raw", "b.txt"]) == [{"annex.numcopies": "3"},
                                                 {"annex.numcopies": None}]
    assert not [c for c in _child_commands() if "check-attr" in c]
    kept = CheckAttr(discover(tmp_path), ["annex.numcopies"], keep_alive=True)
    assert kept.get_many(["a.raw"]) == [{"annex.numcopies": "3"}]
    assert [c for c in _child_commands() if "check-attr" in c]
    kept.close()
    assert not [c for c in _child_commands() if "check-attr" in c]


def test_refs_are_read_from_loose_files_and_packed_refs(tmp_path: Path) -> None:
    from annexsync.git.refs import read_ref_file

    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    g = discover(tmp_path)

    def commit(msg: str) -> str:
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", msg], cwd=tmp_path,
                       check=True)
        return rev_parse(g, "HEAD") or ""

    first = commit("one")
    git_dir = g.git_dir
    assert read_ref_file(git_dir, "refs/heads/main") == first  # loose
    subprocess.run(["git", "pack-refs", "--all"], cwd=tmp_path, check=True)
    assert not (git_dir / "refs/heads/main").exists()
    assert read_ref_file(git_dir, "refs/heads/main") == first  # packed
    assert read_ref_file(git_dir, "refs/heads/nothing") is None
    second = commit("two")  # loose again, and wins over the packed value
    assert read_ref_file(git_dir, "refs/heads/main") == second
    subprocess.run(["git", "pack-refs", "--all"], cwd=tmp_path, check=True)
    assert read_ref_file(git_dir, "refs/heads/main") == second  # packed-refs re-read
    with pytest.raises(LookupError):
        read_ref_file(git_dir, "HEAD")  # symbolic: git answers that
