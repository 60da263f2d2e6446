"""Making a git repository a git-annex (v10) repository, or re-initialising one.

Besides the UUID, version and git-annex branch, ``init`` configures unlocked-file
support the way ``git annex init`` does, pointing at annexsync instead of git-annex:

* ``filter.annex.smudge``/``clean``/``process`` in ``.git/config``;
* ``* filter=annex`` in ``.git/info/attributes`` (unless some attributes file already
  assigns ``filter=annex``);
* ``post-checkout`` and ``post-merge`` hooks running ``smudge --update`` and a
  ``pre-commit`` hook running ``pre-commit .``.

The commands name annexsync by the absolute path of the executable running ``init``
(the ``annexsync`` script beside the Python interpreter for a venv, found without the
venv being activated), falling back to ``annexsync`` on PATH and then to
``PYTHON -m annexsync``: git runs filters and hooks with the user's PATH, which need
not contain the venv. Moving the installation means running ``annexsync init`` again.

Settings and hooks are only replaced when they are unset, git-annex's own or
annexsync's: anything else is left alone and reported. git-annex keeps working on
such a repository (its commands do not need its own filter), and ``git annex init``
there leaves our hooks in place.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import socket
import sys
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import now
from annexsync.annex.logs import current_uuid_values, parse_uuid_log, set_uuid_value
from annexsync.annex.repo import AnnexRepo
from annexsync.git.config import set_config

ANNEX_VERSION = "10"
_SUBDIRS = ("objects", "tmp", "othertmp", "journal", "transfer", "bad")


GIT_ANNEX_FILTER = {
    "filter.annex.smudge": "git-annex smudge -- %f",
    "filter.annex.clean": "git-annex smudge --clean -- %f",
    "filter.annex.process": "git-annex filter-process",
}
_FILTER_ARGS = {
    "filter.annex.smudge": "smudge -- %f",
    "filter.annex.clean": "smudge --clean -- %f",
    "filter.annex.process": "filter-process",
}
_HOOKS = {
    "post-checkout": ("smudge --update", "git annex smudge --update"),
    "post-merge": ("smudge --update", "git annex smudge --update"),
    "pre-commit": ("pre-commit .", "git annex pre-commit ."),
}
HOOK_MARK = "# automatically configured by annexsync"
_GIT_ANNEX_MARK = "# automatically configured by git-annex"


@dataclass
class InitResult:
    uuid: str
    description: str
    created: bool  # False when the repository already had an annex.uuid
    warnings: list[str] = field(default_factory=list)


def annexsync_program() -> str:
    """How git should run annexsync: a shell word (or two) naming this installation."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "annexsync":
        found = argv0 if "/" in argv0 else shutil.which(argv0)
        if found:
            return shlex.quote(os.path.abspath(found))
    beside = Path(sys.executable).parent / "annexsync"
    if os.access(beside, os.X_OK):
        return shlex.quote(str(beside.absolute()))
    on_path = shutil.which("annexsync")
    if on_path:
        return shlex.quote(os.path.abspath(on_path))
    return f"{shlex.quote(sys.executable)} -m annexsync"


def _is_ours_or_stock(value: str, name: str) -> bool:
    return value == GIT_ANNEX_FILTER[name] or value.endswith(" " + _FILTER_ARGS[name]) and \
        "annexsync" in value


def configure_unlocked(repo: AnnexRepo, program: str | None = None) -> list[str]:
    """Set up the annex filter, attributes and hooks for annexsync; return warnings."""
    if repo.bare:
        return []
    prog = program or annexsync_program()
    warnings: list[str] = []
    cfg = repo.reload_config()
    # Let git cache stat info of every file before the filter exists; afterwards
    # the next git status would have to run the filter on all of them.
    repo.git.run_status("status", "--porcelain")
    for name, args in _FILTER_ARGS.items():
        current = cfg.get(name)
        want = f"{prog} {args}"
        if current is None or _is_ours_or_stock(current, name):
            if current != want:
                set_config(repo.git, name, want)
        else:
            warnings.append(f"{name} is set to {current!r}; leaving it (unlocked files need "
                            f"{want!r})")
    _attributes(repo)
    hooks = Path(repo.git.run("rev-parse", "--git-path", "hooks").decode().strip())
    if not hooks.is_absolute():
        hooks = repo.top / hooks
    for hook, (args, stock_cmd) in _HOOKS.items():
        warning = _write_hook(hooks / hook, f"{prog} {args}", stock_cmd)
        if warning:
            warnings.append(warning)
    repo.reload_config()
    return warnings


def _attributes(repo: AnnexRepo) -> None:
    local = Path(repo.git.run("rev-parse", "--git-path", "info/attributes").decode().strip())
    if not local.is_absolute():
        local = repo.top / local
    texts = []
    for p in (local, repo.top / ".gitattributes"):
        try:
            texts.append(p.read_text(errors="replace"))
        except OSError:
            texts.append("")
    if any("filter=annex" in t for t in texts):
        return
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(texts[0] + "\n* filter=annex\n")


def hooks_are_ours_only(repo: AnnexRepo) -> bool:
    """Is every hook of ``repo`` one that annexsync or git-annex installed (or none)?

    Then a program that does their work itself (the assistant fills unlocked files
    after its merges in-process) may run git with hooks off without skipping anything
    the user asked for. Any other hook, or a hooks directory we cannot read: False.
    """
    configured = repo.config.get("core.hookspath")
    hooks = Path(os.path.expanduser(configured)) if configured else repo.git_dir / "hooks"
    if not hooks.is_absolute():
        hooks = repo.top / hooks
    try:
        entries = list(os.scandir(hooks))
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for e in entries:
        if e.name.endswith(".sample"):
            continue
        try:
            with open(e.path, errors="replace") as f:
                lines = [ln.strip() for ln in f.read(4096).strip().splitlines()]
        except OSError:
            return False
        wanted = _HOOKS.get(e.name)
        if wanted is None or len(lines) != 3 or lines[0] != "#!/bin/sh":
            return False
        args, stock_cmd = wanted
        ours = lines[1] == HOOK_MARK and lines[2].endswith(f" {args}")
        stock = lines[1] == _GIT_ANNEX_MARK and lines[2] == stock_cmd
        if not (ours or stock):
            return False
    return True


def _write_hook(path: Path, command: str, stock_cmd: str) -> str | None:
    body = f"#!/bin/sh\n{HOOK_MARK}\n{command}\n"
    try:
        old = path.read_text(errors="replace")
    except FileNotFoundError:
        old = None
    if old is not None and old != body:
        lines = [ln.strip() for ln in old.strip().splitlines()]
        stock = lines in (["#!/bin/sh", _GIT_ANNEX_MARK, stock_cmd],)
        if not stock and HOOK_MARK not in lines:
            return f"{path} already exists and was not written by git-annex or annexsync; " \
                   f"not changing it (it should run: {command})"
    if old != body:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".annexsync-tmp")
        tmp.write_text(body)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    return None


def _ensure_sentinal(repo: AnnexRepo) -> None:
    # Only for a repository without a keys database: creating the sentinal for an
    # existing database would vouch for inode caches that may be from a copy.
    from annexsync.annex.keysdb import ensure_sentinal

    if not repo.annex_path("keysdb", "db").exists():
        ensure_sentinal(repo.annex_dir)


def default_description(repo: AnnexRepo) -> str:
    """``user@host:path`` like git-annex."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "user"
    return f"{user}@{socket.gethostname()}:{repo.top}"


def init(repo: AnnexRepo, description: str | None = None, *,
         program: str | None = None) -> InitResult:
    """Initialise ``repo`` for git-annex; harmless to run again (keeps the UUID).

    ``program`` overrides how the filter and hooks call annexsync (a shell command
    prefix; default :func:`annexsync_program`).
    """
    existing = repo.config.get("annex.uuid")
    uuid = existing or str(uuidlib.uuid4())
    if not existing:
        set_config(repo.git, "annex.uuid", uuid)
    if repo.config.get("annex.version") != ANNEX_VERSION:
        set_config(repo.git, "annex.version", ANNEX_VERSION)
    repo.reload_config()
    if not repo.bare:
        _ensure_sentinal(repo)
    for d in _SUBDIRS:
        os.makedirs(repo.annex_path(d), exist_ok=True)
    branch = AnnexBranch(repo)
    branch.create()
    current = current_uuid_values(parse_uuid_log(branch.read("uuid.log"))).get(uuid)
    desc = description
    if desc is None:
        desc = current.value if current else default_description(repo)
    if current is None or current.value != desc:
        ts = now()
        branch.change("uuid.log", lambda old: set_uuid_value(old, uuid, desc, ts))
    branch.commit()
    warnings = configure_unlocked(repo, program)
    return InitResult(uuid, desc, created=not existing, warnings=warnings)
