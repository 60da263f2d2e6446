"""sync --content: content follows preferred content to every clone."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import run_cli


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


annexsync = run_cli


@pytest.fixture
def ab(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    annexsync(a, "init", "A")
    sh(tmp_path, "git", "clone", "-q", str(a), "b")
    b = tmp_path / "b"
    annexsync(b, "init", "B")
    sh(a, "git", "remote", "add", "b", str(b))
    return a, b


def test_content_reaches_the_other_clone(ab: tuple[Path, Path]) -> None:
    a, b = ab
    (a / "photo.jpg").write_bytes(b"\xff\xd8 jpeg bytes")
    (a / "notes.txt").write_text("notes\n")
    code, _, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    code, _, err = annexsync(b, "sync", "--content")
    assert code == 0, err
    assert (b / "photo.jpg").read_bytes() == b"\xff\xd8 jpeg bytes"
    assert (b / "notes.txt").read_text() == "notes\n"
    code, out, _ = annexsync(a, "whereis", "--json", "photo.jpg")
    assert {w["description"] for w in json.loads(out)["whereis"]} == {"A", "B"}


def test_content_flows_from_the_clone_that_has_it(ab: tuple[Path, Path]) -> None:
    a, b = ab
    (b / "fromb.bin").write_bytes(b"b's data")
    sh(b, "git", "remote", "add", "a", str(a))
    assert annexsync(b, "sync")[0] == 0  # git only: a learns of the file, not the content
    code, _, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    assert (a / "fromb.bin").read_bytes() == b"b's data"


def _object(repo: Path, name: str, head_of: Path | None = None) -> Path:
    """Where ``name`` (of ``head_of``'s HEAD) has its content in ``repo``'s store."""
    target = sh(head_of or repo, "git", "cat-file", "-p", f"HEAD:{name}").strip()
    return Path(os.path.normpath(repo / Path(name).parent / target))


def test_a_transfer_remote_is_emptied_once_the_content_is_here(ab: tuple[Path, Path]) -> None:
    # b gets the content in this round (a small key: staged, then committed), and a,
    # which wants it only while no client has it, is dropped from in the same round:
    # the drop's proof is the copy just made here.
    a, b = ab
    (a / "f.txt").write_text("hello\n")
    assert annexsync(a, "sync")[0] == 0
    assert annexsync(b, "group", "here", "client")[0] == 0
    assert annexsync(b, "wanted", "origin", "not inallgroup=client")[0] == 0
    code, out, err = annexsync(b, "sync", "--content")
    assert code == 0, err
    assert "get f.txt (from origin...) ok" in out.splitlines()
    assert "drop f.txt (from origin...) ok" in out.splitlines()
    assert (b / "f.txt").read_text() == "hello\n"
    assert not _object(a, "f.txt").exists()
    code, out, _ = annexsync(b, "whereis", "--json", "f.txt")
    assert {w["description"] for w in json.loads(out)["whereis"]} == {"B"}


def test_a_source_repository_drops_what_it_has_sent(ab: tuple[Path, Path]) -> None:
    # a keeps content only until it is copied elsewhere (the standard source group):
    # its small upload to b is committed there before a's copy is dropped.
    a, b = ab
    for i in range(3):
        (a / f"photo{i}.jpg").write_bytes(b"\xff\xd8 jpeg %d" % i)
    assert annexsync(a, "group", "here", "source")[0] == 0
    assert annexsync(a, "wanted", "here", "standard")[0] == 0
    code, out, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    lines = out.splitlines()
    for i in range(3):
        assert f"copy photo{i}.jpg (to b...) ok" in lines
        assert f"drop photo{i}.jpg ok" in lines
        assert lines.index(f"copy photo{i}.jpg (to b...) ok") < lines.index(
            f"drop photo{i}.jpg ok")
        assert not _object(a, f"photo{i}.jpg").exists()
        assert _object(b, f"photo{i}.jpg", a).read_bytes() == b"\xff\xd8 jpeg %d" % i
    code, out, err = annexsync(b, "fsck")
    assert code == 0, out + err


def test_a_drop_that_cannot_be_proven_is_reported_with_its_reason(
        ab: tuple[Path, Path]) -> None:
    # The location log says b has a copy, but b cannot be reached to lock it: a keeps
    # its copy, and says why (as git-annex, a failure to drop does not fail the sync).
    a, b = ab
    (a / "f.txt").write_text("hello\n")
    assert annexsync(a, "sync", "--content")[0] == 0  # b gets it; the log says so
    assert annexsync(a, "group", "here", "source")[0] == 0
    assert annexsync(a, "wanted", "here", "standard")[0] == 0
    b.rename(b.with_name("b-away"))
    code, out, err = annexsync(a, "sync", "--content", "--no-pull", "--no-push")
    assert code == 0
    assert out.splitlines()[-2:] == ["drop f.txt ", "failed"]
    assert "Could not verify the existence of the 1 necessary copy" in err, err
    assert _object(a, "f.txt").read_text() == "hello\n"
    code, out, _ = annexsync(a, "sync", "--content", "--no-pull", "--no-push", "--json")
    assert code == 0
    drop = [r for r in map(json.loads, out.splitlines()) if r["note"] == "drop"]
    assert [(r["file"], r["remote"], r["success"]) for r in drop] == [("f.txt", "here", False)]
    assert any("necessary copy" in m for m in drop[0]["error-messages"])


def test_json_records_say_whether_each_move_succeeded(ab: tuple[Path, Path]) -> None:
    a, b = ab
    (a / "f.txt").write_text("hello\n")
    code, out, err = annexsync(a, "sync", "--content", "--json")
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    puts = [r for r in recs if r["note"] == "put"]
    assert [(r["file"], r["remote"], r["success"]) for r in puts] == [("f.txt", "b", True)]


def test_gitattributes_numcopies_keeps_a_file_where_the_others_are_dropped(
        ab: tuple[Path, Path]) -> None:
    a, b = ab
    (a / ".gitattributes").write_text("*.raw annex.numcopies=2\n")
    (a / "keep.raw").write_bytes(b"raw sensor data")
    (a / "send.jpg").write_bytes(b"\xff\xd8 jpeg")
    assert annexsync(a, "group", "here", "source")[0] == 0
    assert annexsync(a, "wanted", "here", "standard")[0] == 0
    code, out, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    assert "drop send.jpg ok" in out.splitlines()
    assert not _object(a, "send.jpg").exists()
    # b has a copy too, but 2 are needed: a keeps its own, and that is no failure.
    assert _object(b, "keep.raw", a).read_bytes() == b"raw sensor data"
    assert _object(a, "keep.raw").read_bytes() == b"raw sensor data"
    assert "keep.raw" not in " ".join(line for line in out.splitlines()
                                      if line.startswith("drop"))


def test_a_get_that_fails_from_one_remote_and_succeeds_from_the_next_is_no_failure(
        ab: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = ab
    (a / "f.txt").write_text("hello\n")
    assert annexsync(a, "sync", "--content")[0] == 0  # b has it too
    sh(tmp_path, "git", "clone", "-q", str(a), "c")
    c = tmp_path / "c"
    assert annexsync(c, "init", "C")[0] == 0
    sh(c, "git", "remote", "add", "b", str(b))
    sh(c, "git", "config", "remote.b.annex-cost", "200")  # origin (a) is tried first
    obj = _object(a, "f.txt")
    obj.parent.chmod(0o755)
    obj.chmod(0o644)
    obj.write_text("HELLO\n")  # a's copy went bad (same size)
    code, out, err = annexsync(c, "sync", "--content")
    assert code == 0, out + err
    assert "get f.txt (from b...) ok" in out.splitlines()
    assert "failed" not in out.splitlines()
    assert (c / "f.txt").read_text() == "hello\n"


def test_content_is_kept_while_any_of_its_files_is_wanted(ab: tuple[Path, Path]) -> None:
    a, b = ab
    for d in ("keep", "old"):  # (keep/ comes first in the index)
        (a / d).mkdir()
        (a / d / "x.dat").write_bytes(b"the same bytes in two places")
    (a / "keep" / "z.dat").write_bytes(b"only under keep/")
    assert annexsync(a, "sync", "--content")[0] == 0  # b has both keys now
    assert annexsync(a, "wanted", "here", "include=old/*")[0] == 0
    code, out, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    drops = [line for line in out.splitlines() if line.startswith("drop")]
    assert drops == ["drop keep/z.dat ok"]  # old/x.dat still wants x.dat's content
    assert _object(a, "old/x.dat").read_bytes() == b"the same bytes in two places"
    assert not _object(a, "keep/z.dat").exists()
