"""annexsync calckey: the key a file would be added under."""

from __future__ import annotations

import argparse
import os
import sys

from annexsync.annex.backends import get_backend, hash_file
from annexsync.cli.output import emit_json, json_record

NAME = "calckey"
HELP = "print the key that 'add' would use for a file"
DESCRIPTION = """\
Hash FILE with the key backend (default annex.backend, else SHA256E) and print
its key. Works outside a repository too. The file is not changed.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--backend", help="key backend (default SHA256E)")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    backend_name = args.backend
    if backend_name is None:
        try:
            from annexsync.annex.repo import AnnexRepo

            backend_name = AnnexRepo.find(".").config.get("annex.backend")
        except Exception:
            backend_name = None
    backend = get_backend(backend_name or "SHA256E")
    status = 0
    for f in args.files:
        try:
            key, _ = hash_file(f, backend, relpath_for_worm=os.path.normpath(f))
        except OSError as e:
            print(f"calckey {f} failed: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            emit_json(json_record("calckey", success=True, file=f, input=[f], key=str(key)))
        else:
            print(key)
    return status
