"""Start-up of the hot plumbing commands: fast dispatch, lazy imports, lazy repository."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from unlockedkit import Sh, commit

from annexsync.annex.filter import decode_packets, encode_content, encode_list, serve
from annexsync.annex.keys import Key, pointer_content
from annexsync.annex.keysdb import KeysDb
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.smudge import LazyFilter, update_smudged
from annexsync.cli import main as cli_main

KEY = Key.parse("SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt")
HANDSHAKE = encode_list(["git-filter-client", "version=2"]) + encode_list(
    ["capability=clean", "capability=smudge"])


def request(command: str, path: str, data: bytes) -> bytes:
    return (encode_list([f"command={command}", f"pathname={path}"])
            + b"".join(encode_content(data)) + b"0000")


# ------------------------------------------------------------------ fast dispatch


def _argparse_values(argv: list[str]) -> dict[str, object] | None:
    """What the full parser makes of argv (None if it refuses it)."""
    parser = cli_main.build_parser(cli_main._command_name(argv))
    try:
        ns = parser.parse_args(argv)
    except SystemExit:
        return None
    values = dict(vars(ns))
    values.pop("_run", None)
    return values


@pytest.mark.parametrize("argv", [
    ["filter-process"],
    ["-C", "sub", "filter-process"],
    ["-C", "a", "-C", "b", "filter-process"],
    ["smudge", "--update"],
    ["-C", "x", "smudge", "--update"],
    ["smudge", "--", "a file.txt"],
    ["smudge", "--clean", "--", "dir/f.bin"],
    ["smudge", "--clean", "--", "--update"],
    ["smudge", "--", "-dash"],
    ["smudge", "plain"],
    ["smudge", "--clean", "plain"],
    ["smudge", "--", ""],
    ["sync"],
    ["sync", "--quiet"],
    ["sync", "-q", "--content"],
    ["sync", "--content", "--no-content"],
    ["-C", "d", "sync", "--json", "--no-push"],
    ["sync", "--no-commit", "--no-pull", "--quiet", "-q"],
])
def test_fast_args_match_argparse(argv: list[str]) -> None:
    fast = cli_main.fast_args(argv)
    assert fast is not None
    assert vars(fast[1]) == _argparse_values(argv)


@pytest.mark.parametrize("argv", [
    [], ["--help"], ["--version"], ["filter-process", "--help"], ["filter-process", "x"],
    ["smudge"], ["smudge", "--help"], ["smudge", "--upd"], ["smudge", "--update", "f"],
    ["smudge", "--update", "--clean"], ["smudge", "-x"], ["smudge", "--"],
    ["smudge", "a", "b"], ["-C"], ["-C", "-x", "smudge", "--update"], ["-Cdir", "smudge"],
    ["add", "f"], ["status"],
    ["sync", "--help"], ["sync", "origin"], ["sync", "-m", "msg"], ["sync", "--quie"],
    ["sync", "-J", "2"], ["sync", "--jobs=2"], ["sync", "--", "--quiet"],
])
def test_everything_else_goes_through_argparse(argv: list[str]) -> None:
    assert cli_main.fast_args(argv) is None


def test_help_is_the_full_parsers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli_main.main(["smudge", "--help"])
    out = capsys.readouterr().out
    assert "--update" in out and "the one-shot" in out
    with pytest.raises(SystemExit):
        cli_main.main(["--help"])
    out = capsys.readouterr().out
    assert "filter-process" in out and "smudge" in out and "COMMAND" in out


# ------------------------------------------------------------------ imports


def _modules_after(code: str, cwd: Path, stdin: bytes = b"") -> set[str]:
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, input=stdin,
                          capture_output=True, env=env, timeout=60, check=True)
    return set(proc.stderr.decode().split())


SERVE_THEN_LIST = """\
import sys
from annexsync.cli import main as m
orig = m._load
def load(name):
    mod = orig(name)
    if name == "filter_process_cmd":
        import annexsync.annex.filter as f
        serve = f.serve
        def spy(*a, **k):
            try:
                return serve(*a, **k)
            finally:
                sys.stderr.write(" ".join(sorted(sys.modules)))
        f.serve = spy
    return mod
m._load = load
sys.exit(m.main(["filter-process"]))
"""

HEAVY = {"argparse", "pkgutil", "typing", "sqlite3", "subprocess", "dataclasses",
         "annexsync.annex.repo", "annexsync.annex.keys", "annexsync.annex.keysdb",
         "annexsync.annex.branch", "annexsync.annex.largefiles",
         "annexsync.policy.expression", "annexsync.annex.unlocked"}


def test_handshake_and_ordinary_smudges_import_nothing_heavy(repo: AnnexRepo) -> None:
    stdin = HANDSHAKE + request("smudge", "a.txt", b"hello\n") + request(
        "smudge", "b.txt", b"x" * 100_000)
    mods = _modules_after(SERVE_THEN_LIST, repo.top, stdin)
    assert "annexsync.annex.smudge" in mods
    assert not mods & HEAVY


def test_cli_main_imports_little(tmp_path: Path) -> None:
    mods = _modules_after(
        "import sys, annexsync.cli.main; sys.stderr.write(' '.join(sys.modules))", tmp_path)
    assert "annexsync.cli.main" in mods
    assert not mods & HEAVY


# ------------------------------------------------------------------ lazy repository


def _serve(handler: LazyFilter, stdin: bytes) -> bytes:
    out = io.BytesIO()
    try:
        assert serve(handler, io.BytesIO(stdin), out, io.BytesIO()) == 0
    finally:
        handler.close()
    return out.getvalue()


def test_handshake_and_ordinary_content_never_open_the_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*a: object, **k: object) -> AnnexRepo:
        raise AssertionError("opened the repository")

    monkeypatch.setattr(AnnexRepo, "find", no)
    data = b"y" * 70_000
    out = _serve(LazyFilter(str(tmp_path)), HANDSHAKE + request("smudge", "a", b"hi\n")
                 + request("smudge", "b", data) + request("clean", "../outside", b"o"))
    assert out.startswith(encode_list(["git-filter-server", "version=2"]))
    assert b"hi\n" in out and out.count(b"status=success") == 3
    packets, rest = decode_packets(out)
    assert not rest
    assert b"".join(p for p in packets if p and p.startswith(b"y")) == data


def test_opening_failure_fails_only_the_request(tmp_path: Path) -> None:
    # Not a repository: a pointer smudge needs it, so that request fails and the
    # process keeps answering (git falls back to the unfiltered blob).
    out = _serve(LazyFilter(str(tmp_path)), HANDSHAKE
                 + request("smudge", "p", pointer_content(KEY))
                 + request("smudge", "a", b"fine\n"))
    assert out.count(b"status=error") == 1 and out.count(b"status=success") == 1


def test_pointer_smudge_is_noted_like_before(repo: AnnexRepo) -> None:
    out = _serve(LazyFilter(str(repo.top)), HANDSHAKE
                 + request("smudge", "dir/p.txt", pointer_content(KEY)))
    assert pointer_content(KEY) in out
    log = repo.annex_path("smudge.log").read_bytes()
    assert log == f"{KEY} dir/p.txt\n".encode()
    with KeysDb(repo) as db:
        assert db.associated_files(KEY) == ["dir/p.txt"]


def test_uninitialised_repository_passes_content_through(tmp_path: Path, sh: Sh) -> None:
    sh(tmp_path, "git", "init", "-q")
    out = _serve(LazyFilter(str(tmp_path)), HANDSHAKE
                 + request("smudge", "p", pointer_content(KEY))
                 + request("clean", "big", b"z" * 1000))
    assert out.count(b"status=success") == 2 and pointer_content(KEY) in out
    assert not (tmp_path / ".git" / "annex").exists()


# ------------------------------------------------------------------ smudge --update


def _last_index(sh: Sh, top: Path) -> str:
    return sh(top, "git", "rev-parse", "--verify", "--quiet", "refs/annex/last-index",
              check=False).strip()


def test_update_with_an_empty_store_skips_the_reconcile(repo: AnnexRepo, sh: Sh) -> None:
    (repo.top / "small.txt").write_text("in git\n")
    sh(repo.top, "git", "add", "small.txt")
    commit(sh, repo.top)
    repo.annex_path("smudge.log").write_bytes(f"{KEY} p.txt\n".encode())
    before = _last_index(sh, repo.top)
    r = AnnexRepo.find(repo.top)
    try:
        res = update_smudged(r)
    finally:
        r.close()
    assert (res.populated, res.failed, res.warning) == ([], [], None)
    assert repo.annex_path("smudge.log").read_bytes() == b""  # consumed, as before
    assert _last_index(sh, repo.top) == before  # nothing could be filled: no reconcile


def test_update_reconciles_and_fills_when_content_is_present(repo: AnnexRepo, sh: Sh) -> None:
    sh(repo.top, "git", "config", "annex.largefiles", "anything")
    (repo.top / "big.bin").write_bytes(b"content\n" * 100)
    sh(repo.top, "git", "add", "big.bin")
    commit(sh, repo.top)
    # A pointer file staged behind the filter's back (git reset --mixed style):
    key_ptr = sh(repo.top, "git", "cat-file", "blob", ":big.bin").encode()
    (repo.top / "copy.bin").write_bytes(key_ptr)
    sh(repo.top, "git", "-c", "filter.annex.process=", "-c", "filter.annex.clean=",
       "update-index", "--add", "copy.bin")
    r = AnnexRepo.find(repo.top)
    try:
        update_smudged(r)
    finally:
        r.close()
    assert (repo.top / "copy.bin").read_bytes() == b"content\n" * 100
    assert _last_index(sh, repo.top) != ""


def test_update_command_in_a_quiet_repository(repo: AnnexRepo, sh: Sh) -> None:
    out = sh(repo.top, "annexsync", "smudge", "--update", stderr=True)
    assert out == ""
    assert status_clean(sh, repo.top)


def status_clean(sh: Sh, top: Path) -> bool:
    return sh(top, "git", "status", "--porcelain") == ""


def test_namespace_and_fast_args_are_interchangeable() -> None:
    fast = cli_main.fast_args(["smudge", "--update"])
    assert fast is not None
    module, args = fast
    assert module == "smudge_cmd"
    ns = argparse.Namespace(**vars(args))
    assert ns.update and not ns.clean and ns.file is None and ns.chdir is None
