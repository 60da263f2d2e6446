"""annexsync init/add/whereis/find/info as a user runs them, checked against git-annex."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import run_cli

TRICKY = [
    "plain.txt", "with space.txt", "ünïcödé.txt", "-leading-dash.bin", "new\nline.dat",
    "archive.tar.gz", "noext", "x.12345", "empty.txt", "deep/er/file.md",
]


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, check=check, capture_output=True, text=True)


annexsync = run_cli  # the CLI in-process: fast, output captured


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    sh(r, "git", "init", "-q", "-b", "main")
    code, out, err = annexsync(r, "init", "my repo")
    assert code == 0, err
    assert out == "init my repo ok\n"
    return r


def populate(r: Path) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    for i, name in enumerate(TRICKY):
        p = r / name
        p.parent.mkdir(parents=True, exist_ok=True)
        data = b"" if name == "empty.txt" else f"content {i} of {name}\n".encode()
        p.write_bytes(data)
        contents[name] = data
    return contents


def test_add_makes_symlinks_into_store_and_stages_them(repo: Path) -> None:
    contents = populate(repo)
    (repo / ".gitignore").write_text("ignored.*\n")
    (repo / "ignored.bin").write_bytes(b"ignore me")
    os.symlink("plain.txt", repo / "link-to-plain")
    code, out, err = annexsync(repo, "add", "--json")
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    by_file = {r["file"]: r for r in recs}
    assert "ignored.bin" not in by_file
    assert by_file[".gitignore"]["note"].startswith("dotfile")
    for name, data in contents.items():
        p = repo / name
        assert p.is_symlink(), name
        assert p.read_bytes() == data
        assert by_file[name]["success"] and by_file[name]["key"].startswith("SHA256E-")
        assert not os.access(os.path.realpath(p), os.W_OK) or os.geteuid() == 0
    assert os.readlink(repo / "link-to-plain") == "plain.txt"
    staged = sh(repo, "git", "ls-files", "-s", "-z").stdout.split("\0")
    modes = {e.split("\t", 1)[1]: e.split()[0] for e in staged if e}
    assert modes["plain.txt"] == "120000" and modes["link-to-plain"] == "120000"
    assert modes[".gitignore"] == "100644"
    # adding again finds nothing to do
    code, out, _ = annexsync(repo, "add")
    assert code == 0 and out == ""


def test_largefiles_sends_small_files_to_git(repo: Path) -> None:
    sh(repo, "git", "config", "annex.largefiles", "largerthan=100b")
    (repo / "small.txt").write_bytes(b"tiny")
    (repo / "big.bin").write_bytes(b"x" * 500)
    code, out, _ = annexsync(repo, "add")
    assert code == 0
    assert not (repo / "small.txt").is_symlink()
    assert (repo / "big.bin").is_symlink()
    assert "add small.txt (non-large file; adding content to git repository) ok" in out


def test_whereis_and_find(repo: Path) -> None:
    populate(repo)
    annexsync(repo, "add")
    code, out, _ = annexsync(repo, "whereis", "plain.txt")
    assert code == 0
    uuid = sh(repo, "git", "config", "annex.uuid").stdout.strip()
    assert out == f"whereis plain.txt (1 copy) \n  \t{uuid} -- my repo [here]\nok\n"
    code, out, _ = annexsync(repo, "find")
    assert set(out.splitlines()) >= {"plain.txt", "deep/er/file.md", "with space.txt"}
    code, out, _ = annexsync(repo, "find", "--not", "--in", "here")
    assert out == ""
    code, out, _ = annexsync(repo, "find", "--include", "*.md", "--json")
    rec = json.loads(out)
    assert rec["file"] == "deep/er/file.md" and rec["backend"] == "SHA256E"


def test_bad_input_is_one_clear_line(tmp_path: Path, repo: Path) -> None:
    plain = tmp_path / "notgit"
    plain.mkdir()
    code, _, err = annexsync(plain, "add")
    assert code == 1 and err.count("\n") == 1 and "not in a git repository" in err
    sh(plain, "git", "init", "-q")
    code, _, err = annexsync(plain, "whereis")
    assert code == 1 and "annexsync init" in err
    code, _, err = annexsync(repo, "add", str(tmp_path / "notgit"))
    assert code == 1 and "outside the repository" in err
    code, _, err = annexsync(repo, "add", "does-not-exist")
    assert code == 1 and "not found" in err
    code, _, err = annexsync(repo, "examinekey", "SHA256E-s1--../../etc/passwd")
    assert code == 1


def test_unreadable_file_stays_and_others_are_added(repo: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    (repo / "ok.txt").write_text("fine")
    secret = repo / "secret.txt"
    secret.write_text("no")
    secret.chmod(0)
    code, out, err = annexsync(repo, "add")
    assert code == 1 and "secret.txt" in err
    assert (repo / "ok.txt").is_symlink() and not secret.is_symlink()


@pytest.mark.interop
def test_git_annex_accepts_what_annexsync_built(repo: Path, git_annex: str) -> None:
    contents = populate(repo)
    annexsync(repo, "add")
    sh(repo, "git", "commit", "-q", "-m", "add")
    fsck = sh(repo, git_annex, "fsck", "--json", check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    recs = [json.loads(line) for line in fsck.stdout.splitlines()]
    assert {r["file"] for r in recs} == set(contents)
    assert all(r["success"] for r in recs)
    # whereis answers agree
    theirs = {json.loads(line)["file"]: json.loads(line) for line in
              sh(repo, git_annex, "whereis", "--json").stdout.splitlines()}
    code, out, _ = annexsync(repo, "whereis", "--json")
    ours = {json.loads(line)["file"]: json.loads(line) for line in out.splitlines()}
    assert set(ours) == set(theirs)
    for f in ours:
        assert ours[f]["key"] == theirs[f]["key"]
        assert ours[f]["whereis"] == theirs[f]["whereis"]
        assert ours[f]["note"] == theirs[f]["note"]


@pytest.mark.interop
def test_annexsync_reads_a_git_annex_repository(tmp_path: Path, git_annex: str) -> None:
    r = tmp_path / "ga"
    r.mkdir()
    sh(r, "git", "init", "-q", "-b", "main")
    sh(r, git_annex, "init", "made by git-annex")
    populate(r)
    sh(r, git_annex, "add", ".")
    sh(r, "git", "commit", "-q", "-m", "x")
    code, out, err = annexsync(r, "init")
    assert code == 0 and out == "init made by git-annex ok\n", err
    theirs = sh(r, git_annex, "find").stdout.splitlines()
    code, out, _ = annexsync(r, "find")
    assert sorted(out.splitlines()) == sorted(theirs)
    code, out, _ = annexsync(r, "whereis", "--json")
    ga = sh(r, git_annex, "whereis", "--json").stdout.splitlines()
    assert [json.loads(x)["whereis"] for x in out.splitlines()] == \
        [json.loads(x)["whereis"] for x in ga]
    code, out, _ = annexsync(r, "info", "--json")
    info = json.loads(out)
    gainfo = json.loads(sh(r, git_annex, "info", "--json").stdout)
    for field in ("local annex keys", "annexed files in working tree",
                  "semitrusted repositories"):
        assert info[field] == gainfo[field], field


@pytest.mark.interop
def test_concurrent_add_with_git_annex_corrupts_nothing(repo: Path, git_annex: str) -> None:
    for i in range(300):
        d = repo / ("ours" if i % 2 else "theirs")
        d.mkdir(exist_ok=True)
        (d / f"f{i}.dat").write_text(f"file {i}\n")
    proc = subprocess.Popen([git_annex, "add", "theirs"], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    code, _, err = annexsync(repo, "add", "ours")
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    sh(repo, "git", "commit", "-q", "-m", "both")
    fsck = sh(repo, git_annex, "fsck", "--json", check=False)
    recs = [json.loads(line) for line in fsck.stdout.splitlines()]
    assert len(recs) == 300 and all(r["success"] for r in recs), fsck.stderr
    assert sh(repo, "git", "status", "--porcelain").stdout == ""
