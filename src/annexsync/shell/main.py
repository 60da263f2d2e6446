"""``annexsync-shell``: a restricted command for ssh logins that serves one repository.

Theory of operation
-------------------
It is run by sshd in one of three ways, like ``git-annex-shell``:

* ``annexsync-shell COMMAND DIR [ARGS…]`` (ssh ran it as the remote command);
* ``annexsync-shell -c "COMMAND DIR …"`` (as a login shell, or from a forced command
  ``command="annexsync-shell -c \\"$SSH_ORIGINAL_COMMAND\\""``);
* ``annexsync-shell`` with no arguments and ``SSH_ORIGINAL_COMMAND`` set (a plain
  forced command ``command="annexsync-shell"``).

A command string is split with POSIX shell quoting rules and never given to a shell.
A leading ``git-annex-shell`` or ``annexsync-shell`` word is dropped, so a client
that believes it is talking to git-annex-shell is served too.

Commands: ``configlist DIR``, ``inannex DIR KEY…``, ``p2pstdio DIR CLIENTUUID
[--uuid EXPECTED]``, ``notifychanges DIR`` (a line each time a branch moves, see
:mod:`annexsync.shell.notify`), and ``git-upload-pack DIR`` / ``git-receive-pack DIR``
run by git itself. git-annex's own flags (``--debug``…) and ``-- field=value … --``
are accepted and ignored.

Restrictions, from the environment (ours or git-annex-shell's names):
``ANNEXSYNC_SHELL_DIRECTORY``/``GIT_ANNEX_SHELL_DIRECTORY`` (only that repository),
``…_READONLY`` (no PUT, REMOVE, push), ``…_APPENDONLY`` (no REMOVE; pushes may not
delete or rewind refs), ``…_LIMITED`` (no git access). Directories are resolved
(``/~/r``, ``~/r``, ``~user/r``, relative to the home directory) and must be the
top of a git repository after all symlinks are resolved. Every failure is one line
on stderr and exit status 1.
"""

from __future__ import annotations

import os
import pwd
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from annexsync.errors import AnnexError

if TYPE_CHECKING:
    from annexsync.annex.repo import AnnexRepo

PROG = "annexsync-shell"
_SHELL_NAMES = ("annexsync-shell", "git-annex-shell")
_GIT_COMMANDS = ("git-upload-pack", "git-receive-pack")
# Variables that would point git somewhere else than the repository we checked.
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                 "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
                 "GIT_CEILING_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS",
                 "GIT_CONFIG_COUNT")
MAX_COMMAND = 65536


class ShellError(AnnexError):
    """A refused or failed request (printed as one line)."""


@dataclass
class Restrictions:
    """What the environment allows."""

    directory: Path | None = None
    readonly: bool = False
    appendonly: bool = False
    limited: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Restrictions:
        def flag(name: str) -> bool:
            return bool(env.get(f"ANNEXSYNC_SHELL_{name}") or env.get(f"GIT_ANNEX_SHELL_{name}"))

        d = env.get("ANNEXSYNC_SHELL_DIRECTORY") or env.get("GIT_ANNEX_SHELL_DIRECTORY")
        directory = None
        if d:
            try:
                directory = Path(os.path.realpath(os.path.expanduser(d), strict=True))
            except OSError:
                raise ShellError(f"the configured directory {d} does not exist")
        return cls(directory, flag("READONLY"), flag("APPENDONLY"), flag("LIMITED"))


@dataclass
class Request:
    """A parsed command line: the command, its directory, other args, flags, fields."""

    command: str
    directory: str | None = None
    args: list[str] = field(default_factory=list)
    expected_uuid: str | None = None
    fields: dict[str, str] = field(default_factory=dict)


def split_command(line: str) -> list[str]:
    """Split a command string like a POSIX shell would (no expansion, nothing run)."""
    if len(line) > MAX_COMMAND or "\0" in line:
        raise ShellError("command too long or contains NUL")
    try:
        return shlex.split(line, posix=True)
    except ValueError as e:
        raise ShellError(f"cannot parse command: {e}")


def words_from_invocation(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The command words, whichever way sshd started us."""
    args = list(argv)
    if not args:
        original = env.get("SSH_ORIGINAL_COMMAND")
        if original is None:
            raise ShellError("no command given (this program serves annexsync and "
                             "git-annex clients over ssh)")
        return split_command(original)
    if args[0] == "-c":
        if len(args) != 2:
            raise ShellError("-c takes one command string")
        return split_command(args[1])
    return args


def parse_request(words: Sequence[str]) -> Request:
    """Parse command words (see the module docstring)."""
    words = list(words)
    while words and os.path.basename(words[0]) in _SHELL_NAMES:
        words = words[1:]
    if not words:
        raise ShellError("no command given")
    command, rest = words[0], words[1:]
    if command in ("git", ) and rest and f"git-{rest[0]}" in _GIT_COMMANDS:
        command, rest = f"git-{rest[0]}", rest[1:]
    req = Request(command)
    positional: list[str] = []
    i = 0
    while i < len(rest):
        w = rest[i]
        if w == "--":
            # "-- field=value … --": git-annex's per-request fields
            i += 1
            while i < len(rest) and rest[i] != "--":
                k, eq, v = rest[i].partition("=")
                if eq:
                    req.fields[k] = v
                i += 1
            i += 1
            continue
        if w == "--uuid":
            if i + 1 >= len(rest):
                raise ShellError("--uuid needs a value")
            req.expected_uuid = rest[i + 1]
            i += 2
            continue
        if w.startswith("-") and not positional and command in _GIT_COMMANDS:
            i += 1  # git's own options (--strict, --stateless-rpc…) are not needed
            continue
        if w.startswith("--"):
            i += 1  # git-annex global flags such as --debug
            continue
        positional.append(w)
        i += 1
    if positional:
        req.directory = positional[0]
        req.args = positional[1:]
    return req


def _home(user: str | None) -> Path:
    try:
        if user:
            return Path(pwd.getpwnam(user).pw_dir)
        return Path(os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        raise ShellError(f"no such user {user}")


def resolve_directory(arg: str, restrictions: Restrictions) -> Path:
    """The repository directory a request names, fully resolved and checked."""
    if not arg or any(ord(c) < 32 or c == "\x7f" for c in arg):
        raise ShellError("bad directory")
    p = arg
    if p.startswith("/~"):
        p = p[1:]
    if p.startswith("~"):
        user, _, rest = p[1:].partition("/")
        base = _home(user or None)
        path = base / rest if rest else base
    elif p.startswith("/"):
        path = Path(p)
    else:
        path = _home(None) / p
    try:
        real = Path(os.path.realpath(path, strict=True))
    except OSError:
        raise ShellError(f"{arg}: no such repository")
    allowed = restrictions.directory
    if allowed is not None and real not in (allowed, allowed / ".git"):
        raise ShellError(f"only allowed to access {allowed} not {arg}")
    return real


def open_repository(real: Path) -> AnnexRepo:
    """The AnnexRepo whose top (work tree or git dir) is exactly ``real``."""
    from annexsync.annex.repo import AnnexRepo
    from annexsync.git.runner import discover

    try:
        git = discover(real)
    except AnnexError:
        if real.name != ".git":
            raise ShellError(f"{real}: not a git repository")
        try:
            # discover() fails inside the .git of a non-bare repository: ask its work tree.
            git = discover(real.parent)
        except AnnexError:
            raise ShellError(f"{real}: not a git repository")
    tops = {os.path.realpath(git.git_dir)}
    if git.work_tree is not None:
        tops.add(os.path.realpath(git.work_tree))
    if str(real) not in tops:
        raise ShellError(f"{real}: not the top of a git repository")
    return AnnexRepo(git)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def cmd_configlist(req: Request, r: Restrictions) -> int:
    repo = open_repository(resolve_directory(_need_dir(req), r))
    uuid = repo.config.get("annex.uuid") or ""
    if not uuid and not r.readonly:
        from annexsync.annex.branch import AnnexBranch

        # git-annex-shell initialises when a git-annex branch was pushed, or if asked.
        if req.fields.get("autoinit") == "1" or AnnexBranch(repo).exists():
            from annexsync.annex.init import init

            uuid = init(repo).uuid
    gcrypt = repo.config.get("core.gcrypt-id") or ""
    _out(f"annex.uuid={uuid}\ncore.gcrypt-id={gcrypt}\n")
    return 0


def cmd_inannex(req: Request, r: Restrictions) -> int:
    from annexsync.annex.keys import Key
    from annexsync.annex.objects import ObjectStore
    from annexsync.errors import InvalidKeyError

    repo = open_repository(resolve_directory(_need_dir(req), r))
    _check_annex(repo)
    if not req.args:
        raise ShellError("inannex needs keys")
    try:
        keys = [Key.parse(a) for a in req.args]
    except InvalidKeyError:
        raise ShellError("bad key")
    store = ObjectStore(repo.annex_dir, bare=repo.bare)
    top = os.path.realpath(repo.git_dir)
    for key in keys:
        p = store.find(key)
        if p is None or os.path.islink(p) or not os.path.realpath(p).startswith(top + "/"):
            return 1
    return 0


def _check_annex(repo: AnnexRepo) -> None:
    if not repo.config.get("annex.uuid"):
        raise ShellError(f"{repo.top}: not a git-annex repository")


def cmd_p2pstdio(req: Request, r: Restrictions) -> int:
    from annexsync.remotes.p2p import check_uuid
    from annexsync.shell.server import Mode, serve_p2p

    repo = open_repository(resolve_directory(_need_dir(req), r))
    _check_annex(repo)
    if len(req.args) != 1:
        raise ShellError("p2pstdio needs the client's UUID")
    try:
        client = check_uuid(req.args[0])
    except ValueError:
        raise ShellError("bad client UUID")
    if req.expected_uuid is not None and req.expected_uuid != repo.uuid:
        raise ShellError(f"expected repository UUID {req.expected_uuid[:60]} "
                         f"but found UUID {repo.uuid}")
    mode = (Mode.READ_ONLY if r.readonly else Mode.APPEND_ONLY if r.appendonly
            else Mode.READ_WRITE)
    return serve_p2p(repo, client, mode)


def cmd_notifychanges(req: Request, r: Restrictions) -> int:
    from annexsync.shell.notify import serve_notifychanges

    repo = open_repository(resolve_directory(_need_dir(req), r))
    _check_annex(repo)
    sys.stdout.flush()
    return serve_notifychanges(Path(repo.git_dir), sys.stdin.fileno(), sys.stdout.buffer)


def cmd_git(req: Request, r: Restrictions) -> int:
    if r.limited:
        raise ShellError("git access is not allowed here")
    if req.command == "git-receive-pack" and r.readonly:
        raise ShellError("this repository is read-only; write access denied")
    real = resolve_directory(_need_dir(req), r)
    repo = open_repository(real)
    git_dir = str(repo.git_dir)
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    argv = ["git"]
    if req.command == "git-receive-pack" and r.appendonly:
        argv += ["-c", "receive.denyDeletes=true", "-c", "receive.denyNonFastForwards=true"]
    argv += [req.command.removeprefix("git-"), git_dir]
    sys.stdout.flush()
    os.execvpe("git", argv, env)
    return 1  # not reached


def _need_dir(req: Request) -> str:
    if req.directory is None:
        raise ShellError(f"{req.command} needs a directory")
    return req.directory


COMMANDS = {
    "configlist": cmd_configlist,
    "inannex": cmd_inannex,
    "p2pstdio": cmd_p2pstdio,
    "notifychanges": cmd_notifychanges,
    "git-upload-pack": cmd_git,
    "git-receive-pack": cmd_git,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``annexsync-shell``; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        restrictions = Restrictions.from_env(os.environ)
        req = parse_request(words_from_invocation(args, os.environ))
        handler = COMMANDS.get(req.command)
        if handler is None:
            raise ShellError(f"unknown command {req.command[:40]!r}")
        for name in _GIT_ENV_DROP:
            os.environ.pop(name, None)
        return handler(req, restrictions)
    except AnnexError as e:
        msg = " ".join(str(e).split())
        print(f"{PROG}: {msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        print(f"{PROG}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # one line on stderr, even for a bug
        msg = " ".join(str(e).split())[:300]
        print(f"{PROG}: internal error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
