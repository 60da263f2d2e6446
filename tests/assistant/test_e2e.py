"""End to end: assistants on clones keep them in sync, with content, by themselves."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from annexsync.testing.daemons import Daemon, wait_for
from conftest import annexsync, conflicting_edits_keep_both, make_clones, sh


def content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def arrives(path: Path, data: bytes, timeout: float = 30.0) -> None:
    wait_for(lambda: content(path) == data, timeout, what=f"{path} with the right content")


def gone(path: Path, timeout: float = 30.0) -> None:
    wait_for(lambda: not os.path.lexists(path), timeout, what=f"{path} to disappear")


def test_create_modify_rename_delete_propagate(two: tuple[Path, Path]) -> None:
    a, b = two
    (a / "doc.txt").write_bytes(b"first version\n")
    arrives(b / "doc.txt", b"first version\n")
    # modify: replace the (locked) file with a new one, as editors do
    tmp = a / ".doc.txt.swp"
    tmp.write_bytes(b"second version\n")
    os.replace(tmp, a / "doc.txt")
    arrives(b / "doc.txt", b"second version\n")
    # rename and directories
    (b / "folder" / "sub").mkdir(parents=True)
    os.rename(b / "doc.txt", b / "folder" / "sub" / "moved.txt")
    arrives(a / "folder" / "sub" / "moved.txt", b"second version\n")
    gone(a / "doc.txt")
    # delete a whole directory
    sh(b, "rm", "-rf", "folder")
    gone(a / "folder" / "sub" / "moved.txt")
    wait_for(lambda: sh(a, "git", "ls-files").split() == ["seed.txt"], what="a's index")


def test_slowly_written_file_is_committed_once_with_final_content(
        two: tuple[Path, Path]) -> None:
    a, b = two
    done = threading.Event()
    parts = [os.urandom(20000) for _ in range(5)]
    started = threading.Event()

    def writer() -> None:
        with open(a / "slow.bin", "wb") as f:
            for p in parts:
                f.write(p)
                f.flush()
                started.set()
                done.wait(0.4)  # a slow writer (the test waits on the result)
    t = threading.Thread(target=writer)
    t.start()
    started.wait(5)
    t.join()
    arrives(b / "slow.bin", b"".join(parts))
    log = sh(a, "git", "log", "--format=%H", "--", "slow.bin").split()
    assert len(log) == 1, "a file still being written must not be committed"


def test_burst_into_new_directory_all_arrive(two: tuple[Path, Path]) -> None:
    a, b = two
    (a / "burst").mkdir()
    datas = {}
    for i in range(300):
        d = os.urandom(1000)
        (a / "burst" / f"f{i}.bin").write_bytes(d)
        datas[f"f{i}.bin"] = d

    def all_there() -> bool:
        return all(content(b / "burst" / n) == d for n, d in datas.items())

    wait_for(all_there, 60, what="the burst in b")
    assert sh(a, "git", "status", "--porcelain") == ""


def test_conflicting_edits_on_both_clones_keep_both(tmp_path: Path) -> None:
    conflicting_edits_keep_both(*make_clones(tmp_path, 2))


def test_three_clones_in_a_chain(tmp_path: Path) -> None:
    clones = make_clones(tmp_path, 3, chain=True)
    daemons = [Daemon(c).start() for c in clones]
    try:
        (clones[0] / "hop.txt").write_bytes(b"travels two hops\n")
        arrives(clones[2] / "hop.txt", b"travels two hops\n", 60)
        (clones[2] / "back.txt").write_bytes(b"and back\n")
        arrives(clones[0] / "back.txt", b"and back\n", 60)
    finally:
        for d in daemons:
            d.stop()


def test_content_held_only_out_of_reach_arrives_once_a_remote_gets_it(tmp_path: Path) -> None:
    c0, c1, c2 = make_clones(tmp_path, 3, chain=True)  # c2 reaches c0 only through c1
    d2 = Daemon(c2).start()
    try:
        (c0 / "hop.txt").write_bytes(b"first only in c0\n")
        annexsync(c0, "add", "hop.txt")
        sh(c0, "git", "commit", "-q", "-m", "hop")
        annexsync(c0, "sync", "-q")  # git only: c1 learns of hop.txt, not its content
        wait_for(lambda: os.path.lexists(c2 / "hop.txt"), 30, what="the merge in c2")
        assert content(c2 / "hop.txt") is None  # only c0, out of c2's reach, has it
        sh(c1, "git", "merge", "-q", "synced/main")
        annexsync(c1, "get", "hop.txt")  # c1 records that it has it now
        arrives(c2 / "hop.txt", b"first only in c0\n")
    finally:
        d2.stop()


def test_second_assistant_refuses_and_stop_works(two: tuple[Path, Path]) -> None:
    a, _ = two
    import sys

    p = subprocess.run([sys.executable, "-m", "annexsync", "assistant", "--foreground",
                        str(a)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "already running" in p.stderr
    out = annexsync(a, "status", "--json")
    assert '"running": true' in out


def test_unlocked_files_arrive_as_regular_files_with_content(tmp_path: Path) -> None:
    a, b = make_clones(tmp_path, 2)
    for r in (a, b):
        sh(r, "git", "config", "annex.addunlocked", "true")
    da, db = Daemon(a).start(), Daemon(b).start()
    try:
        (a / "notes.txt").write_bytes(b"unlocked in both clones\n")
        arrives(b / "notes.txt", b"unlocked in both clones\n")
        assert not (b / "notes.txt").is_symlink()
        wait_for(lambda: sh(b, "git", "status", "--porcelain") == "",
                 what="b's work tree to be clean")
    finally:
        da.stop()
        db.stop()
