"""annexsync examinekey: what a key's fields and paths are."""

from __future__ import annotations

import argparse
import sys

from annexsync.annex.keys import Key, pointer_content
from annexsync.cli.find_cmd import key_fields
from annexsync.cli.output import emit_json
from annexsync.errors import InvalidKeyError

NAME = "examinekey"
HELP = "print information about a key"
DESCRIPTION = """\
Parse KEY and print its fields: backend, size, name, the hash directories and the
object path (in a non-bare repository). Invalid or unsafe keys are rejected.
With --format, print FORMAT with ${backend} ${bytesize} ${keyname} ${hashdirlower}
${hashdirmixed} ${objectpath} ${key} substituted ("\\n" for a newline).
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("keys", nargs="+", metavar="KEY")
    p.add_argument("--json", action="store_true")
    p.add_argument("--format", help="output format (default: the key)")


def run(args: argparse.Namespace) -> int:
    status = 0
    for s in args.keys:
        try:
            key = Key.parse(s)
        except InvalidKeyError as e:
            print(f"examinekey: {e}", file=sys.stderr)
            status = 1
            continue
        fields = key_fields(key)
        fields["key"] = str(key)
        fields["objectpath"] = ".git/annex/" + key.object_path(bare=False)
        fields["objectpointer"] = pointer_content(key).decode("utf-8", "surrogateescape")
        if args.json:
            emit_json({**fields, "error-messages": []})
        elif args.format:
            out = args.format.replace("\\n", "\n").replace("\\t", "\t")
            for name, value in fields.items():
                out = out.replace("${" + name + "}", value)
            sys.stdout.write(out)
        else:
            print(key)
    return status
