"""Which files some process has open for writing (Linux ``/proc``), like git-annex's lsof.

One pass over ``/proc/*/fd`` for a whole batch of paths; only called for files that
may still be being written (created but not closed, or found by a scan).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_O_ACCMODE = 0o3


def open_for_writing(paths: Iterable[str]) -> set[str]:
    """The subset of absolute ``paths`` that some process has open for writing."""
    wanted = set(paths)
    found: set[str] = set()
    if not wanted:
        return found
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in wanted or target in found:
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("flags:"):
                            if int(line.split()[1], 8) & _O_ACCMODE:
                                found.add(target)
                            break
            except (OSError, ValueError):
                continue
    return found
