"""The ``annexsync`` command line: one module per command, dispatched from here.

Each command module (``cli/<name>_cmd.py``, found automatically) defines ``NAME``,
``HELP``, ``DESCRIPTION``, ``build_parser(parser)`` and ``run(args) -> int``. Errors derived from
:class:`annexsync.errors.AnnexError` become one line on stderr and exit status 1.

Fast dispatch
-------------
git starts ``annexsync filter-process`` for every checkout or merge that writes a
regular file, and the hooks start ``annexsync smudge --update`` after each one; git
waits for both. Their start-up is mostly importing, so :func:`main` recognises the
exact command lines git and the hooks use (:func:`fast_args`) and calls the command's
``run`` directly: no argparse, no discovery of the command modules, and nothing else
imported at module level here. Any other command line, including every ``--help``,
goes through the full parser, so help and error messages are unchanged. The
arguments a fast parse produces are exactly those argparse would have produced.
"""

from __future__ import annotations

import sys

from annexsync.errors import AnnexError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from types import ModuleType
    from typing import Any


class FastArgs:
    """Parsed arguments of a fast-dispatched command (what argparse's Namespace holds)."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items())
        return f"FastArgs({inner})"


def command_modules() -> list[str]:
    """Every ``annexsync.cli.*_cmd`` module, sorted by name (adding a file adds a command)."""
    import pkgutil

    import annexsync.cli as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.endswith("_cmd"))


def _load(name: str) -> ModuleType:
    full = f"annexsync.cli.{name}"
    __import__(full)  # importlib.import_module without importing importlib
    return sys.modules[full]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, import and add just that command (fast start)."""
    import argparse

    from annexsync import __version__

    parser = argparse.ArgumentParser(
        prog="annexsync",
        description="A fast, git-annex compatible assistant: keeps a folder and all its "
        "clones in sync, both the git history and the annexed content.",
        epilog="Run 'annexsync COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"annexsync {__version__}")
    parser.add_argument("-C", dest="chdir", metavar="DIR",
                        help="run as if started in DIR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = command_modules()
    if only is not None and f"{only}_cmd" in names:
        names = [f"{only}_cmd"]
    for name in names:
        mod = _load(name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.build_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def _command_name(argv: Sequence[str]) -> str | None:
    """The subcommand in argv (skipping global options), to import only its module."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "-C":
            i += 2
            continue
        if a.startswith("-"):
            return None  # --help, --version: build the full parser
        return a.replace("-", "_")
    return None


# ------------------------------------------------------------------ fast dispatch


def _fast_filter_process(rest: Sequence[str]) -> dict[str, object] | None:
    return {} if not rest else None


def _fast_smudge(rest: Sequence[str]) -> dict[str, object] | None:
    """``smudge --update``, ``smudge [--clean] [--] FILE``; None for anything else."""
    if list(rest) == ["--update"]:
        return {"clean": False, "update": True, "file": None}
    clean = bool(rest) and rest[0] == "--clean"
    tail = list(rest[1:] if clean else rest)
    if len(tail) == 2 and tail[0] == "--":
        file = tail[1]
    elif len(tail) == 1 and not tail[0].startswith("-"):
        file = tail[0]
    else:
        return None
    return {"clean": clean, "update": False, "file": file}


#: ``sync`` flags that take no value: (attribute, value) as argparse stores them.
_SYNC_FLAGS: dict[str, tuple[str, bool]] = {
    "--quiet": ("quiet", True), "-q": ("quiet", True), "--json": ("json", True),
    "--content": ("content", True), "--no-content": ("content", False),
    "--no-commit": ("commit", False), "--no-pull": ("pull", False),
    "--no-push": ("push", False),
}


def _fast_sync(rest: Sequence[str]) -> dict[str, object] | None:
    """``sync`` with only the flags above (the form scripts and benchmarks use); None
    for anything else (remotes, -m, -J, --help, abbreviations)."""
    values: dict[str, object] = {"remotes": [], "content": False, "commit": True,
                                 "pull": True, "push": True, "message": None, "jobs": 4,
                                 "json": False, "quiet": False}
    for a in rest:
        flag = _SYNC_FLAGS.get(a)
        if flag is None:
            return None
        values[flag[0]] = flag[1]
    return values


#: Hot commands: their module and a parser for the forms git, hooks and scripts use.
FAST_COMMANDS: dict[str, tuple[str, Callable[[Sequence[str]], dict[str, object] | None]]] = {
    "filter-process": ("filter_process_cmd", _fast_filter_process),
    "smudge": ("smudge_cmd", _fast_smudge),
    # A sync of a large repository takes ~0.2 s: argparse and the listing of the
    # command modules would be ~10 ms of it.
    "sync": ("sync_cmd", _fast_sync),
}


def fast_args(argv: Sequence[str]) -> tuple[str, FastArgs] | None:
    """``(module, args)`` when argv is a plain form of a hot command, else None.

    Recognises ``[-C DIR]... COMMAND ARGS`` where COMMAND is in :data:`FAST_COMMANDS`
    and its parser accepts ARGS; the result holds what argparse would produce.
    """
    chdir: str | None = None
    i = 0
    while i + 1 < len(argv) and argv[i] == "-C":
        if argv[i + 1].startswith("-"):
            return None  # argparse would refuse it: let it explain
        chdir = argv[i + 1]
        i += 2
    if i >= len(argv) or argv[i] not in FAST_COMMANDS:
        return None
    module, parse = FAST_COMMANDS[argv[i]]
    values = parse(argv[i + 1:])
    if values is None:
        return None
    return module, FastArgs(chdir=chdir, command=argv[i], **values)


# ------------------------------------------------------------------ entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``annexsync`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    fast = fast_args(argv)
    if fast is not None:
        module, fargs = fast
        run: Callable[[Any], int | None] = _load(module).run
        args: Any = fargs
    else:
        parser = build_parser(_command_name(argv))
        args = parser.parse_args(argv)
        run = getattr(args, "_run", None)
        if not run:
            parser.print_help(sys.stderr)
            return 2
    chdir: str | None = args.chdir
    if chdir:
        import os

        try:
            os.chdir(chdir)
        except OSError as e:
            print(f"annexsync: cannot change to {chdir}: {e.strerror}", file=sys.stderr)
            return 1
    try:
        return int(run(args) or 0)
    except AnnexError as e:
        print(f"annexsync: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("annexsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
