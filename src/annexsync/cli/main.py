"""The ``annexsync`` command line: one module per command, dispatched from here.

Each command module (``cli/<name>_cmd.py``, found automatically) defines ``NAME``,
``HELP``, ``DESCRIPTION``, ``build_parser(parser)`` and ``run(args) -> int``. Errors derived from
:class:`annexsync.errors.AnnexError` become one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from annexsync import __version__
from annexsync.errors import AnnexError


def command_modules() -> list[str]:
    """Every ``annexsync.cli.*_cmd`` module, sorted by name (adding a file adds a command)."""
    import annexsync.cli as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.endswith("_cmd"))


def _load(name: str) -> ModuleType:
    return importlib.import_module(f"annexsync.cli.{name}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, import and add just that command (fast start)."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``annexsync`` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_name(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    if args.chdir:
        import os

        try:
            os.chdir(args.chdir)
        except OSError as e:
            print(f"annexsync: cannot change to {args.chdir}: {e.strerror}", file=sys.stderr)
            return 1
    try:
        return int(args._run(args) or 0)
    except AnnexError as e:
        print(f"annexsync: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("annexsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
