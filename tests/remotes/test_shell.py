"""annexsync-shell: invocation forms, restrictions, hostile paths and keys, git pass-through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from annexsync.annex.backends import hash_file
from annexsync.annex.init import init
from annexsync.annex.keys import Key
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo

SHELL = [sys.executable, "-m", "annexsync.shell.main"]
CLIENT = "11111111-2222-3333-4444-555555555555"


def shell(*args: str, env: dict[str, str] | None = None, input: bytes = b"",
          cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("ANNEXSYNC_SHELL_", "GIT_ANNEX_SHELL_"))}
    full_env.pop("SSH_ORIGINAL_COMMAND", None)
    full_env.update(env or {})
    return subprocess.run([*SHELL, *args], env=full_env, input=input, capture_output=True,
                          cwd=cwd, timeout=60)


def one_line_error(proc: subprocess.CompletedProcess[bytes], text: str) -> None:
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("annexsync-shell: "), err
    assert text in err


def make_repo(path: Path, desc: str = "repo") -> AnnexRepo:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    repo = AnnexRepo.find(path)
    init(repo, desc)
    return repo


def add_object(repo: AnnexRepo, data: bytes) -> Key:
    src = repo.top / "x.bin"
    src.write_bytes(data)
    key, _ = hash_file(src)
    ObjectStore(repo.annex_dir).move_in(key, src)
    return key


@pytest.fixture
def repo(tmp_path: Path) -> AnnexRepo:
    return make_repo(tmp_path / "repo")


def test_configlist_in_every_invocation_form(repo: AnnexRepo, tmp_path: Path) -> None:
    want = f"annex.uuid={repo.uuid}\ncore.gcrypt-id=\n".encode()
    assert shell("configlist", str(repo.top)).stdout == want
    assert shell("-c", f"git-annex-shell 'configlist' '{repo.top}'").stdout == want
    assert shell(env={"SSH_ORIGINAL_COMMAND": f"annexsync-shell configlist '{repo.top}'"}
                 ).stdout == want
    # git-annex's forms of the directory: /~/ and ~/ are the home directory.
    home = Path(os.environ["HOME"])
    rel = os.path.relpath(repo.top, home)
    if not rel.startswith(".."):
        assert shell("configlist", f"/~/{rel}").stdout == want
    plain = tmp_path / "plain"
    plain.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=plain, check=True)
    assert shell("configlist", str(plain)).stdout == b"annex.uuid=\ncore.gcrypt-id=\n"
    out = shell("configlist", str(plain), "--", "autoinit=1", "--").stdout
    assert out.startswith(b"annex.uuid=") and len(out.splitlines()[0]) > len("annex.uuid=")


@pytest.mark.parametrize("env_name", ["ANNEXSYNC_SHELL_DIRECTORY", "GIT_ANNEX_SHELL_DIRECTORY"])
def test_paths_outside_the_repository_are_refused(repo: AnnexRepo, tmp_path: Path,
                                                  env_name: str) -> None:
    other = make_repo(tmp_path / "other")
    env = {env_name: str(repo.top)}
    assert shell("configlist", str(repo.top), env=env).returncode == 0
    assert shell("configlist", f"{repo.top}/.git", env=env).returncode == 0
    one_line_error(shell("configlist", str(other.top), env=env), "only allowed to access")
    one_line_error(shell("configlist", f"{repo.top}/../other", env=env),
                   "only allowed to access")
    (tmp_path / "link").symlink_to(other.top)
    one_line_error(shell("configlist", str(tmp_path / "link"), env=env),
                   "only allowed to access")
    (tmp_path / "samelink").symlink_to(repo.top)
    assert shell("configlist", str(tmp_path / "samelink"), env=env).returncode == 0
    one_line_error(shell("p2pstdio", str(other.top), CLIENT, env=env), "only allowed")
    one_line_error(shell("git-upload-pack", str(other.top), env=env), "only allowed")
    # Not restricted: still only the top of a repository, never a directory inside it.
    (repo.top / "sub").mkdir()
    one_line_error(shell("configlist", str(repo.top / "sub")), "not the top of a git repo")
    one_line_error(shell("configlist", str(tmp_path / "nope")), "no such repository")


def test_keys_are_checked_and_objects_never_followed_out(repo: AnnexRepo,
                                                         tmp_path: Path) -> None:
    key = add_object(repo, b"data\n")
    assert shell("inannex", str(repo.top), str(key)).returncode == 0
    one_line_error(shell("inannex", str(repo.top), "../../etc/passwd"), "bad key")
    one_line_error(shell("inannex", str(repo.top), "SHA256E-s1--nothex"), "bad key")
    worm = "WORM-s1-m1--a/../../../etc/passwd"
    assert shell("inannex", str(repo.top), worm).returncode == 1
    # An object replaced by a symlink leading out of the repository is not content.
    secret = tmp_path / "secret"
    secret.write_bytes(b"data\n")
    obj = ObjectStore(repo.annex_dir).find(key)
    assert obj is not None
    obj.parent.chmod(0o755)
    obj.unlink()
    obj.symlink_to(secret)
    assert shell("inannex", str(repo.top), str(key)).returncode == 1
    out = shell("p2pstdio", str(repo.top), CLIENT,
                input=f"VERSION 1\nCHECKPRESENT {key}\nGET 0  {key}\nFAILURE\n".encode())
    assert out.stdout.splitlines()[1:] == [b"VERSION 1", b"FAILURE", b"DATA 0", b"INVALID"]


def test_p2pstdio_checks_uuids_and_modes(repo: AnnexRepo) -> None:
    one_line_error(shell("p2pstdio", str(repo.top), CLIENT, "--uuid", "not-this-one"),
                   "expected repository UUID")
    one_line_error(shell("p2pstdio", str(repo.top), "../../x"), "bad client UUID")
    key = add_object(repo, b"data\n")
    out = shell("p2pstdio", str(repo.top), "--debug", CLIENT, "--uuid", repo.uuid,
                env={"GIT_ANNEX_SHELL_READONLY": "1"},
                input=f"VERSION 1\nREMOVE {key}\nPUT  {key}\nCHECKPRESENT {key}\n".encode())
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        f"AUTH-SUCCESS {repo.uuid}".encode(), b"VERSION 1",
        b"ERROR this repository is read-only; write access denied",
        b"ERROR this repository is read-only; write access denied", b"SUCCESS"]
    out = shell("p2pstdio", str(repo.top), CLIENT, env={"ANNEXSYNC_SHELL_APPENDONLY": "1"},
                input=f"REMOVE {key}\n".encode())
    assert b"ERROR this repository is append-only; removal denied" in out.stdout


def test_refusals_are_one_line(repo: AnnexRepo) -> None:
    one_line_error(shell("rm", "-rf", "/"), "unknown command")
    one_line_error(shell(), "no command given")
    one_line_error(shell("-c", "configlist 'unterminated"), "cannot parse command")
    one_line_error(shell("git-receive-pack", str(repo.top),
                         env={"ANNEXSYNC_SHELL_READONLY": "1"}), "read-only")
    one_line_error(shell("git-upload-pack", str(repo.top),
                         env={"GIT_ANNEX_SHELL_LIMITED": "1"}), "not allowed")
    one_line_error(shell("sendkey", str(repo.top), "k"), "unknown command")


def _line(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> bytes:
    """The next line the process writes (b"" at end of file), or fail after ``timeout``."""
    import select

    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    assert r, f"no line within {timeout} s"
    return proc.stdout.readline()


def test_notifychanges_streams_each_moved_branch_until_stdin_closes(repo: AnnexRepo) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo.top), *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    (repo.top / "f").write_text("one")
    git("add", "f")
    git("commit", "-q", "-m", "one")
    first = git("rev-parse", "HEAD")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANNEXSYNC_SHELL_", "GIT_ANNEX_SHELL_"))}
    proc = subprocess.Popen([*SHELL, "notifychanges", str(repo.top)], stdin=subprocess.PIPE,
                            bufsize=0,  # unbuffered: select() sees every line
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert _line(proc) == b"READY\n"
        (repo.top / "f").write_text("two")
        git("commit", "-q", "-am", "two")
        second = git("rev-parse", "HEAD")
        assert _line(proc).split() == [b"CHANGED", second.encode()]
        # a new directory of branches (synced/...), and two branches in one burst
        git("update-ref", "refs/heads/synced/x/y", first)
        git("update-ref", "refs/heads/other", second)
        seen: set[bytes] = set()
        while not {first.encode(), second.encode()} <= seen:
            words = _line(proc).split()
            assert words[0] == b"CHANGED"
            seen |= set(words[1:])
        # packing moves nothing; a branch that only lives in packed-refs still counts
        git("pack-refs", "--all")
        git("update-ref", "refs/heads/other", first)
        assert _line(proc).split() == [b"CHANGED", first.encode()]
        packed = (repo.git_dir / "packed-refs").read_text()
        (repo.git_dir / "packed-refs.new").write_text(
            packed.replace(f"{second} refs/heads/main", f"{first} refs/heads/main"))
        os.rename(repo.git_dir / "packed-refs.new", repo.git_dir / "packed-refs")
        assert _line(proc).split() == [b"CHANGED", first.encode()]
        # moving something that is not a branch says nothing; closing stdin ends it
        git("update-ref", "refs/tags/t", first)
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None and proc.stdout.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_notifychanges_refuses_what_is_not_an_annex(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path / "plain")], check=True)
    one_line_error(shell("notifychanges", str(tmp_path / "plain")),
                   "not a git-annex repository")
    one_line_error(shell("notifychanges", str(tmp_path / "nope")), "no such repository")


def _fake_ssh(tmp_path: Path, env: dict[str, str]) -> str:
    """An ssh stand-in that runs annexsync-shell as a forced command would."""
    script = tmp_path / "fakessh"
    exports = "".join(f"export {k}='{v}'\n" for k, v in env.items())
    script.write_text(
        "#!/bin/sh\n"
        f"{exports}"
        'for last; do :; done\n'
        'SSH_ORIGINAL_COMMAND="$last" exec ' + " ".join(SHELL) + "\n")
    script.chmod(0o755)
    return str(script)


def test_git_passes_through_and_append_only_protects_refs(repo: AnnexRepo,
                                                          tmp_path: Path) -> None:
    (repo.top / "a").write_text("a\n")
    subprocess.run(["git", "add", "a"], cwd=repo.top, check=True)
    subprocess.run(["git", "commit", "-qm", "a"], cwd=repo.top, check=True)
    subprocess.run(["git", "config", "receive.denyCurrentBranch", "ignore"], cwd=repo.top,
                   check=True)
    env = {"GIT_SSH_COMMAND": _fake_ssh(tmp_path, {"ANNEXSYNC_SHELL_DIRECTORY": str(repo.top),
                                                   "ANNEXSYNC_SHELL_APPENDONLY": "1"}),
           "GIT_SSH_VARIANT": "simple"}
    run_env = {**os.environ, **env}
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", f"fake:{repo.top}", str(clone)], env=run_env,
                   check=True, capture_output=True)
    assert (clone / "a").read_text() == "a\n"
    subprocess.run(["git", "push", "-q", "origin", "main:newbranch"], cwd=clone, env=run_env,
                   check=True, capture_output=True)
    deleted = subprocess.run(["git", "push", "origin", ":newbranch"], cwd=clone, env=run_env,
                             capture_output=True, text=True)
    assert deleted.returncode != 0
    subprocess.run(["git", "commit", "-q", "--amend", "-m", "rewritten"], cwd=clone, check=True)
    forced = subprocess.run(["git", "push", "-f", "origin", "main:newbranch"], cwd=clone,
                            env=run_env, capture_output=True, text=True)
    assert forced.returncode != 0
    refused = subprocess.run(["git", "clone", "-q", f"fake:{tmp_path}", str(tmp_path / "c2")],
                             env=run_env, capture_output=True, text=True)
    assert refused.returncode != 0 and "only allowed to access" in refused.stderr
