"""Shared code of the repository-configuration commands.

``wanted``, ``required``, ``groupwanted``, ``group``, ``ungroup``, ``numcopies``,
``mincopies``, ``trust``, ``semitrust``, ``untrust``, ``dead`` and ``describe`` all
read or write one small log on the git-annex branch. This module holds what they
share, so that each command module is a few lines:

* :func:`resolve` turns a repository name into a UUID exactly as git-annex's
  ``nameToUUID`` does (``here``/``.``, a remote name, a description, a UUID) and
  fails with git-annex's messages;
* :func:`set_uuid_log`, :func:`set_map_log`, :func:`set_single_log` write a log line
  through the journal with the vector clock (:func:`annexsync.annex.location.now`),
  in the exact line format git-annex writes; the caller commits once at the end;
* :func:`check_expression` validates a preferred-content expression *before*
  anything is written, reporting the column of the first error;
* :func:`expression_command` and :func:`trust_command` build whole commands.

Nothing here caches: every command reads the logs, changes them under the journal
lock and commits, so concurrent git-annex processes see a consistent branch.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import now
from annexsync.annex.logs import (
    DEAD,
    GROUP_LOG,
    GROUP_PREFERRED_CONTENT_LOG,
    SEMITRUSTED,
    TRUST_LOG,
    TRUSTED,
    UNTRUSTED,
    UUID_LOG,
    current_uuid_values,
    parse_map_log,
    parse_single_value_log,
    parse_uuid_log,
    set_map_value,
    set_single_value,
    set_uuid_value,
)
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.repos import BITTORRENT_UUID, WEB_UUID
from annexsync.cli.common import open_repo
from annexsync.cli.output import emit_json, json_record
from annexsync.errors import AnnexError
from annexsync.policy.expression import ExpressionError, parse

__all__ = [
    "TRUST_NAMES",
    "CommandFunctions",
    "check_expression",
    "copies_command",
    "expression_command",
    "group_preferred",
    "group_set",
    "groups_of",
    "ok",
    "parse_copies_arg",
    "read_single_int",
    "resolve",
    "set_map_log",
    "set_single_log",
    "set_uuid_log",
    "trust_command",
    "uuid_value",
]

#: What :func:`expression_command` and friends return: a command's ``build_parser``
#: and ``run``.
CommandFunctions = tuple[Callable[[argparse.ArgumentParser], None],
                         Callable[[argparse.Namespace], int]]

#: trust.log codes and the names git-annex prints for them.
TRUST_NAMES = {TRUSTED: "trusted", SEMITRUSTED: "semitrusted", UNTRUSTED: "untrusted",
               DEAD: "dead"}


# ---------------------------------------------------------------- naming repositories


def resolve(repo: AnnexRepo, branch: AnnexBranch, name: str) -> str:
    """The UUID of the repository called ``name``, as git-annex's ``nameToUUID``.

    In order: ``here`` or ``.`` (this repository); a configured remote (git remote
    or enabled special remote) by name: its ``remote.NAME.annex-uuid``, which for a
    git remote that has none yet is asked of the remote and cached, as git-annex does;
    a repository whose description in uuid.log is exactly ``name`` (it must be
    unique); a UUID listed in uuid.log (or the web/bittorrent UUIDs). Raises
    :class:`AnnexError` with git-annex's message otherwise.
    """
    if name in ("here", "."):
        return repo.uuid
    cfg = repo.config
    if name in cfg.remotes():
        u = cfg.get(f"remote.{name}.annex-uuid")
        if u:
            return u
        url = cfg.get(f"remote.{name}.url")
        if url:
            u = _probe_uuid(repo, name, url)
            if u:
                return u
            raise AnnexError(f"cannot determine uuid for {name} (perhaps you need to run "
                             f"\"git annex sync\"?)")
    descriptions = {u: line.value for u, line in
                    current_uuid_values(parse_uuid_log(branch.read(UUID_LOG))).items()}
    descriptions.setdefault(WEB_UUID, "web")
    descriptions.setdefault(BITTORRENT_UUID, "bittorrent")
    matching = sorted(u for u, d in descriptions.items() if d == name)
    if len(matching) == 1:
        return matching[0]
    if len(matching) > 1:
        raise AnnexError("found multiple repositories with that description")
    if name in descriptions:
        return name
    raise AnnexError(f'there is no available git remote named "{name}"')


def _probe_uuid(repo: AnnexRepo, name: str, url: str) -> str | None:
    """Ask a git remote without a cached ``annex-uuid`` for its UUID and cache it, as
    git-annex does when it lists remotes (local paths read directly, ssh through
    git-annex-shell configlist). None when it has none or cannot be reached."""
    from annexsync.git.config import set_config
    from annexsync.remotes.registry import classify_url, local_path_of

    kind = classify_url(url)
    if kind == "ssh":
        from annexsync.remotes.p2p import discover_ssh_uuid

        return discover_ssh_uuid(repo, name, url)
    if kind != "local":
        return None
    from annexsync.remotes.gitlocal import read_remote_uuid

    try:
        found = read_remote_uuid(local_path_of(url, repo.top))
    except (OSError, AnnexError):
        return None
    if found:
        set_config(repo.git, f"remote.{name}.annex-uuid", found)
    return found


# ---------------------------------------------------------------- reading logs


def uuid_value(branch: AnnexBranch, path: str, uuid: str) -> str | None:
    """The current value of ``uuid`` in a UUID-based log, or None when unset."""
    line = current_uuid_values(parse_uuid_log(branch.read(path))).get(uuid)
    return None if line is None else line.value


def groups_of(branch: AnnexBranch, uuid: str) -> frozenset[str]:
    """The groups ``uuid`` is in, per group.log."""
    return frozenset((uuid_value(branch, GROUP_LOG, uuid) or "").split())


# ---------------------------------------------------------------- writing logs


def _value_text(what: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise AnnexError(f"{what} cannot contain a line break")
    return value


def set_uuid_log(branch: AnnexBranch, path: str, uuid: str, value: str) -> None:
    """Set ``uuid``'s value in a UUID-based log, in the journal (commit afterwards).

    Written as git-annex writes it: one ``UUID VALUE timestamp=T`` line per UUID, in
    UUID order, T from the vector clock. It is written even when unchanged, as
    git-annex does.
    """
    value = _value_text("value", value)
    ts = now()
    branch.change(path, lambda old: set_uuid_value(old, uuid, value, ts))


def set_map_log(branch: AnnexBranch, path: str, field: str, value: str) -> None:
    """Set one field of a map log (``T FIELD VALUE``), in the journal."""
    value = _value_text("value", value)
    ts = now()
    branch.change(path, lambda old: set_map_value(old, field, value, ts))


def set_single_log(branch: AnnexBranch, path: str, value: str) -> None:
    """Replace a single-value log (``T VALUE``), in the journal."""
    ts = now()
    branch.change(path, lambda old: set_single_value(old, value, ts))


def group_set(branch: AnnexBranch, uuid: str, groups: frozenset[str]) -> None:
    """Write ``uuid``'s group set: sorted, space separated (empty: a double space)."""
    set_uuid_log(branch, GROUP_LOG, uuid,
                 " ".join(sorted(groups, key=lambda g: g.encode("utf-8", "surrogateescape"))))


def check_expression(expr: str) -> str:
    """Validate a preferred-content expression; return it unchanged (it is stored as
    typed, like git-annex). Raises :class:`AnnexError` naming the column (0-based
    character offset) of the first error, so nothing is written."""
    if "\n" in expr or "\r" in expr:
        raise AnnexError("Parse error: an expression cannot contain a line break")
    try:
        parse(expr)
    except ExpressionError as e:
        raise AnnexError(f"Parse error: {e}") from None
    return expr


_NUMBER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def parse_copies_arg(what: str, text: str) -> int:
    """A positive number of copies from the command line, with git-annex's errors."""
    if not _NUMBER.fullmatch(text.strip()):
        raise AnnexError(f"Bad number: {text}")
    n = int(text)
    if n == 0:
        raise AnnexError(f"Cannot set {what} to 0.")
    if n < 0:
        raise AnnexError(f"{what} cannot be negative!")
    return n


def read_single_int(branch: AnnexBranch, path: str) -> int | None:
    """The integer in a single-value log (numcopies.log, mincopies.log), None if unset."""
    entry = parse_single_value_log(branch.read(path))
    if entry is None:
        return None
    try:
        return int(entry.value)
    except ValueError:
        return None


def ok(command: str, item: str) -> None:
    """git-annex's success line, e.g. ``wanted here ok``."""
    print(f"{command} {item} ok")


# ---------------------------------------------------------------- whole commands


def expression_command(command: str, log: str) -> CommandFunctions:
    """``build_parser`` and ``run`` of ``wanted``/``required``: get or set REPO's
    expression in ``log`` (a UUID-based log)."""

    def build_parser(p: argparse.ArgumentParser) -> None:
        p.add_argument("repository", metavar="REPO",
                       help="here, a remote name, a description or a UUID")
        p.add_argument("expression", metavar="EXPR", nargs="?",
                       help="the new expression (quote it: it is one argument)")

    def run(args: argparse.Namespace) -> int:
        with open_repo() as repo:
            branch = AnnexBranch(repo)
            u = resolve(repo, branch, args.repository)
            if args.expression is None:
                print(uuid_value(branch, log, u) or "")
                return 0
            expr = check_expression(args.expression)
            set_uuid_log(branch, log, u, expr)
            branch.commit()
            ok(command, args.repository)
        return 0

    return build_parser, run


def group_preferred(branch: AnnexBranch) -> dict[str, str]:
    """group-preferred-content.log as group -> expression text."""
    return {g: e.value for g, e in
            parse_map_log(branch.read(GROUP_PREFERRED_CONTENT_LOG)).items()}


def trust_command(command: str, level: str) -> CommandFunctions:
    """``build_parser`` and ``run`` of ``trust``/``semitrust``/``untrust``/``dead``:
    write ``level`` to trust.log for each REPO (``dead`` also empties its groups)."""

    def build_parser(p: argparse.ArgumentParser) -> None:
        p.add_argument("repositories", metavar="REPO", nargs="+",
                       help="here, a remote name, a description or a UUID")
        if level == TRUSTED:
            p.add_argument("--force", action="store_true",
                           help="really trust (you accept the risk of losing data)")
        p.add_argument("--json", action="store_true", help="one JSON record per repository")

    def run(args: argparse.Namespace) -> int:
        with open_repo() as repo:
            branch = AnnexBranch(repo)
            # Resolve every name first: an unknown one stops us before anything moves.
            targets = [(name, resolve(repo, branch, name)) for name in args.repositories]
            status = 0
            for name, u in targets:
                if level == TRUSTED and not args.force:
                    print(f"annexsync: {_trust_needs_force(name)}", file=sys.stderr)
                    if args.json:
                        emit_json(json_record(command, success=False, input=[name], uuid=u))
                    status = 1
                    continue
                set_uuid_log(branch, TRUST_LOG, u, level)
                if level == DEAD:
                    group_set(branch, u, frozenset())
                _warn_override(repo, u, level)
                if args.json:
                    emit_json(json_record(command, success=True, input=[name], uuid=u))
                else:
                    ok(command, name)
            branch.commit()
        return status

    return build_parser, run


def _trust_needs_force(name: str) -> str:
    return ("Trusting a repository can lead to data loss. If you're sure you know what "
            "you're doing, use --force to make this take effect. If you choose to do so, "
            f"bear in mind that any time you drop content from {name}, you will risk "
            "losing data.")


_CONFIG_LEVELS = {"trusted": TRUSTED, "semitrusted": SEMITRUSTED, "untrusted": UNTRUSTED,
                  "dead": DEAD}


def _warn_override(repo: AnnexRepo, uuid: str, level: str) -> None:
    """git-annex warns when ``remote.NAME.annex-trustlevel`` overrides the new level."""
    cfg = repo.config
    for name in cfg.remotes():
        if cfg.get(f"remote.{name}.annex-uuid") != uuid:
            continue
        forced = _CONFIG_LEVELS.get((cfg.get(f"remote.{name}.annex-trustlevel") or "").lower())
        if forced is not None and forced != level:
            print(f"annexsync: This remote's trust level is overridden to "
                  f"{TRUST_NAMES[forced]}.", file=sys.stderr)
            return


def copies_command(command: str, log: str) -> CommandFunctions:
    """``build_parser`` and ``run`` of ``numcopies``/``mincopies``: print or set the
    repository-wide value in the single-value log ``log``."""

    def build_parser(p: argparse.ArgumentParser) -> None:
        p.add_argument("number", metavar="N", nargs="?", help="a positive integer")

    def run(args: argparse.Namespace) -> int:
        n = None if args.number is None else parse_copies_arg(command, args.number)
        with open_repo() as repo:
            branch = AnnexBranch(repo)
            current = read_single_int(branch, log)
            if n is None:
                if current is not None:
                    print(current)
                    return 0
                print(f"global {command} is not set")
                if command == "numcopies":
                    old = repo.config.get("annex.numcopies")
                    if old is None:
                        print("(default is 1)")
                    else:
                        print(f"(deprecated git config annex.numcopies is set to "
                              f"{old.strip()} locally)")
                return 0
            if current != n:  # git-annex does not rewrite an unchanged value
                set_single_log(branch, log, str(n))
                branch.commit()
            ok(command, str(n))
        return 0

    return build_parser, run
