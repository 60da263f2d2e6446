"""annexsync enableremote: use a special remote created in another clone."""

from __future__ import annotations

import argparse

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import now
from annexsync.annex.logs import format_remote_config, set_uuid_value
from annexsync.cli.common import open_repo
from annexsync.cli.initremote_cmd import configure_directory, parse_params, special_remotes
from annexsync.cli.output import emit_json, json_record
from annexsync.errors import AnnexError

NAME = "enableremote"
HELP = "enable a special remote that exists in the git-annex branch"
DESCRIPTION = """\
Enable special remote NAME (made by 'initremote' here, in another clone, or by
git-annex) in this clone. A directory remote needs directory=PATH, where the
directory is on this machine. Other PARAM=VALUE settings update the remote's
configuration in remote.log.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("params", nargs="*", metavar="PARAM=VALUE")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        params = parse_params(args.params)
        found = [(u, c) for u, c in special_remotes(branch).items()
                 if c.get("name") == args.name or u == args.name]
        if not found:
            raise AnnexError(f"Cannot find a special remote named {args.name}")
        u, config = found[-1]
        kind = config.get("type")
        if kind != "directory":
            raise AnnexError(f"annexsync cannot enable type={kind} special remotes "
                             "(supported: directory)")
        directory = params.pop("directory", None) or repo.config.get(
            f"remote.{args.name}.annex-directory")
        if not directory:
            raise AnnexError("Specify directory=")
        configure_directory(repo, args.name, u, directory)
        new = {**config, **params}
        if new != config:
            ts = now()
            value = format_remote_config(new)
            branch.change("remote.log", lambda old: set_uuid_value(old, u, value, ts))
            branch.commit()
        if args.json:
            emit_json(json_record("enableremote", success=True, input=[args.name], uuid=u))
        else:
            print(f"enableremote {args.name} ok")
    return 0
