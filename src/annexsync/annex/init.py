"""Making a git repository a git-annex (v10) repository, or re-initialising one."""

from __future__ import annotations

import getpass
import os
import socket
import uuid as uuidlib
from dataclasses import dataclass

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import now
from annexsync.annex.logs import current_uuid_values, parse_uuid_log, set_uuid_value
from annexsync.annex.repo import AnnexRepo
from annexsync.git.config import set_config

ANNEX_VERSION = "10"
_SUBDIRS = ("objects", "tmp", "othertmp", "journal", "transfer", "bad")


@dataclass
class InitResult:
    uuid: str
    description: str
    created: bool  # False when the repository already had an annex.uuid


def default_description(repo: AnnexRepo) -> str:
    """``user@host:path`` like git-annex."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "user"
    return f"{user}@{socket.gethostname()}:{repo.top}"


def init(repo: AnnexRepo, description: str | None = None) -> InitResult:
    """Initialise ``repo`` for git-annex; harmless to run again (keeps the UUID)."""
    existing = repo.config.get("annex.uuid")
    uuid = existing or str(uuidlib.uuid4())
    if not existing:
        set_config(repo.git, "annex.uuid", uuid)
    if repo.config.get("annex.version") != ANNEX_VERSION:
        set_config(repo.git, "annex.version", ANNEX_VERSION)
    repo.reload_config()
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
    return InitResult(uuid, desc, created=not existing)
