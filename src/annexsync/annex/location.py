"""The location log: which repositories have a key's content.

Per key, ``<hashdirlower>/<keyfile>.log`` on the git-annex branch holds presence
lines (``T 1|0|X UUID``); the newest line per UUID wins. Writes follow git-annex's
rule of not churning a line whose status is already right.

Reads and batch writes go through :class:`~annexsync.annex.branch.AnnexBranch`, which
finds each log by this path (never listing the branch) and keeps what it read per
repository and tip: a batch write right after :func:`locations_many` of the same keys
(``get``, ``copy``) reads no blob twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.logs import (
    Timestamp,
    clock_now,
    location_log_path,
    parse_presence_log,
    present_infos,
    set_presence,
)


def now() -> Timestamp:
    """The current log timestamp (honours GIT_ANNEX_VECTOR_CLOCK like git-annex)."""
    return clock_now(os.environ, time.time_ns())


def log_path(key: Key) -> str:
    return location_log_path(key.hashdir_lower, key.key_file)


def log_presence(branch: AnnexBranch, key: Key, uuid: str, present: bool,
                 when: Timestamp | None = None) -> bool:
    """Record that ``uuid`` has (or no longer has) ``key``; returns whether the log changed."""
    status = "1" if present else "0"
    ts = when or now()
    return branch.change(log_path(key.without_chunk()),
                         lambda old: set_presence(old, uuid, status, ts))


def log_presence_many(branch: AnnexBranch, keys: Iterable[Key], uuid: str, present: bool,
                      when: Timestamp | None = None) -> str | None:
    """Record presence for many keys and commit, in one git-annex branch commit."""
    status = "1" if present else "0"
    ts = when or now()

    def setter(old: bytes) -> bytes | None:
        return set_presence(old, uuid, status, ts)

    return branch.change_and_commit({log_path(k.without_chunk()): setter for k in keys})


def locations(branch: AnnexBranch, key: Key) -> set[str]:
    """UUIDs that have ``key`` according to the location log."""
    return present_infos(parse_presence_log(branch.read(log_path(key.without_chunk()))))


def locations_many(branch: AnnexBranch, keys: Iterable[Key]) -> dict[Key, set[str]]:
    """Locations of many keys with one batched read of the branch."""
    keys = list(dict.fromkeys(keys))
    paths = {k: log_path(k.without_chunk()) for k in keys}
    data = branch.read_many(paths.values())
    return {k: present_infos(parse_presence_log(data[p])) for k, p in paths.items()}
