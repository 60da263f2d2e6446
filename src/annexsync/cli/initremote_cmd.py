"""annexsync initremote: create a special remote (git-annex compatible)."""

from __future__ import annotations

import argparse
import os
import uuid as uuidlib
from pathlib import Path

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import now
from annexsync.annex.logs import (
    current_uuid_values,
    format_remote_config,
    parse_remote_config,
    parse_uuid_log,
    set_uuid_value,
)
from annexsync.annex.repo import AnnexRepo
from annexsync.cli.common import open_repo
from annexsync.cli.output import emit_json, json_record
from annexsync.errors import AnnexError
from annexsync.git.config import set_config

NAME = "initremote"
HELP = "create a special remote (type=directory or type=rsync)"
DESCRIPTION = """\
Create special remote NAME, recorded in the git-annex branch (remote.log) the way
git-annex records it, so every clone (and git-annex) can enable it. Supported:

  annexsync initremote NAME type=directory directory=PATH encryption=none
  annexsync initremote NAME type=rsync rsyncurl=[HOST:]PATH encryption=none

PATH must exist; it is stored in this clone's git config
(remote.NAME.annex-directory), not in remote.log, so it may differ per clone.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("params", nargs="*", metavar="PARAM=VALUE")
    p.add_argument("--json", action="store_true")


def parse_params(params: list[str]) -> dict[str, str]:
    """``key=value`` words; AnnexError for anything else."""
    out: dict[str, str] = {}
    for p in params:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise AnnexError(f"expected param=value, not {p!r}")
        out[k] = v
    return out


def special_remotes(branch: AnnexBranch) -> dict[str, dict[str, str]]:
    """UUID -> remote.log config of every special remote."""
    lines = current_uuid_values(parse_uuid_log(branch.read("remote.log")))
    return {u: parse_remote_config(line.value) for u, line in lines.items()}


def configure_directory(repo: AnnexRepo, name: str, uuid: str, directory: str) -> str:
    """Write the per-clone git config of a directory remote; return the absolute path."""
    absdir = os.path.abspath(os.path.expanduser(directory))
    if not Path(absdir).is_dir():
        raise AnnexError(f"Directory does not exist: {absdir}")
    set_config(repo.git, f"remote.{name}.annex-directory", absdir)
    set_config(repo.git, f"remote.{name}.annex-uuid", uuid)
    set_config(repo.git, f"remote.{name}.skipfetchall", "true")
    repo.reload_config()
    return absdir


def run(args: argparse.Namespace) -> int:
    with open_repo() as repo:
        branch = AnnexBranch(repo)
        params = parse_params(args.params)
        kind = params.get("type")
        if not kind:
            raise AnnexError("Specify the type of remote with type=")
        if kind not in ("directory", "rsync"):
            raise AnnexError(f"annexsync cannot create type={kind} special remotes "
                             "(supported: directory, rsync)")
        if "encryption" not in params:
            raise AnnexError("Specify encryption=none (encrypted remotes are not supported)")
        if params["encryption"] != "none":
            raise AnnexError("only encryption=none is supported")
        if params.get("chunk") or params.get("chunksize"):
            raise AnnexError(f"chunked {kind} remotes are not supported yet")
        if any(c.get("name") == args.name for c in special_remotes(branch).values()):
            raise AnnexError(f"There is already a special remote named {args.name}. "
                             "(Use enableremote to enable an existing special remote.)")
        if repo.config.get(f"remote.{args.name}.url") is not None:
            raise AnnexError(f"There is already a remote named {args.name}")
        u = str(uuidlib.uuid4())
        if kind == "directory":
            directory = params.pop("directory", None)
            if not directory:
                raise AnnexError("Specify directory=")
            configure_directory(repo, args.name, u, directory)
        else:
            from annexsync.remotes.rsync import configure_rsync

            params = configure_rsync(repo, args.name, u, params)
            url = params.get("rsyncurl", "")
            if ":" not in url.split("/", 1)[0]:
                # a local path: create it now, so that later a missing directory means
                # "not mounted" rather than "empty"
                os.makedirs(os.path.expanduser(url), exist_ok=True)
        config = {**params, "name": args.name}
        ts = now()
        value = format_remote_config(config)
        branch.change("remote.log", lambda old: set_uuid_value(old, u, value, ts))
        branch.change("uuid.log", lambda old: set_uuid_value(old, u, args.name, ts))
        branch.commit()
        if args.json:
            emit_json(json_record("initremote", success=True, input=[args.name], uuid=u))
        else:
            print(f"initremote {args.name} ok")
    return 0
