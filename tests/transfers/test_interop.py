"""annexsync and real git-annex moving content between each other's repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import clone, git, make_repo, run_cli

pytestmark = pytest.mark.interop
DATA = {"a.txt": b"hello\n", "sub/big.bin": os.urandom(1_500_000)}


def ga(cwd: Path, git_annex: str, *args: str,
       check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([git_annex, *args], cwd=cwd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"git annex {args} failed: {p.stdout}{p.stderr}")
    return p


def test_annexsync_gets_from_a_git_annex_repo_and_back(tmp_path: Path, git_annex: str) -> None:
    a = tmp_path / "a"
    a.mkdir()
    git(a, "init", "-q")
    ga(a, git_annex, "init", "ga")
    for name, data in DATA.items():
        (a / name).parent.mkdir(parents=True, exist_ok=True)
        (a / name).write_bytes(data)
    ga(a, git_annex, "add", ".")
    git(a, "commit", "-q", "--no-verify", "-m", "add")
    b = clone(a, tmp_path / "b", "annexsync clone").top
    code, out, err = run_cli(b, "get")
    assert code == 0, err
    assert "get a.txt (from origin...) ok" in out
    for name, data in DATA.items():
        assert (b / name).read_bytes() == data
    assert ga(b, git_annex, "fsck", "--fast").returncode == 0
    # and git-annex gets from the annexsync clone
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", str(b), str(c))
    ga(c, git_annex, "init", "c")
    ga(c, git_annex, "get", ".")
    for name, data in DATA.items():
        assert (c / name).read_bytes() == data


def test_git_annex_info_shows_an_annexsync_transfer(tmp_path: Path, git_annex: str) -> None:
    a = make_repo(tmp_path / "a", "a", {"slow.bin": os.urandom(400_000)})
    b = clone(a.top, tmp_path / "b", "b").top
    git(b, "config", "annex.bwlimit", "40KiB")
    proc = subprocess.Popen([sys.executable, "-m", "annexsync", "get", "slow.bin"], cwd=b,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        info_dir = b / ".git" / "annex" / "transfer" / "download" / a.uuid
        deadline = time.monotonic() + 30
        while not (info_dir.is_dir() and any(not p.name.startswith("lck.")
                                             for p in info_dir.iterdir())):
            assert time.monotonic() < deadline, "annexsync never started the transfer"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        info = json.loads(ga(b, git_annex, "info", "--json").stdout)
        [t] = info["transfers in progress"]
        assert t["file"] == "slow.bin" and t["transfer"] == "download"
        assert t["remote"] == a.uuid
        # and the other side shows it as an upload, as git-annex does it
        up = json.loads(ga(a.top, git_annex, "info", "--json").stdout)
        assert [x["transfer"] for x in up["transfers in progress"]] == ["upload"]
    finally:
        proc.kill()
        proc.wait()


def test_directory_remote_both_ways(tmp_path: Path, git_annex: str) -> None:
    a = make_repo(tmp_path / "a", "a", DATA)
    d = tmp_path / "dir"
    d.mkdir()
    assert run_cli(a.top, "initremote", "d", "type=directory", f"directory={d}",
                   "encryption=none")[0] == 0
    code, out, err = run_cli(a.top, "copy", "--to", "d")
    assert code == 0, err
    # git-annex reads what annexsync wrote
    c = tmp_path / "c"
    git(tmp_path, "clone", "-q", str(a.top), str(c))
    ga(c, git_annex, "init", "c")
    ga(c, git_annex, "enableremote", "d", f"directory={d}")
    # git-annex 10.2026 asks the user to vet special remote configs it did not create
    # (its prompt names the exact "--safe N" to confirm with)
    prompt = ga(c, git_annex, "verifyremote", "d", check=False).stdout
    safe = prompt.split("verifyremote d --safe", 1)[1].split()[0]
    ga(c, git_annex, "verifyremote", "d", "--safe", safe)
    ga(c, git_annex, "get", "--from", "d", ".")
    for name, data in DATA.items():
        assert (c / name).read_bytes() == data
    # annexsync reads what git-annex wrote
    (c / "new.txt").write_bytes(b"from git-annex\n")
    ga(c, git_annex, "add", "new.txt")
    git(c, "commit", "-q", "--no-verify", "-m", "new")
    ga(c, git_annex, "copy", "--to", "d", "new.txt")
    git(a.top, "-c", "core.hooksPath=/dev/null", "pull", "-q", "--no-rebase", str(c), "master")
    git(a.top, "fetch", "-q", str(c), "git-annex:refs/remotes/c/git-annex")
    from annexsync.annex.branch import AnnexBranch

    AnnexBranch(a).merge_siblings()
    code, out, err = run_cli(a.top, "get", "--from", "d", "new.txt")
    assert code == 0, out + err
    assert (a.top / "new.txt").read_bytes() == b"from git-annex\n"


def test_drop_safety_agrees_with_git_annex(tmp_path: Path, git_annex: str) -> None:
    a = make_repo(tmp_path / "a", "a", {"f.txt": b"precious\n"})
    b = clone(a.top, tmp_path / "b", "b").top
    assert run_cli(b, "get")[0] == 0
    ga(b, git_annex, "numcopies", "2")
    code, out, err = run_cli(b, "drop", "f.txt")
    assert code == 1
    assert "drop f.txt (unsafe)" in out
    assert "Could only verify the existence of 1 out of 2 necessary copies" in err
    p = ga(b, git_annex, "drop", "f.txt", check=False)
    assert p.returncode != 0
    assert "Could only verify the existence of 1 out of 2 necessary copies" in p.stdout + p.stderr
    assert (b / "f.txt").read_bytes() == b"precious\n"
    code, out, err = run_cli(b, "drop", "--force", "--json", "f.txt")
    assert code == 0 and json.loads(out)["success"] is True
