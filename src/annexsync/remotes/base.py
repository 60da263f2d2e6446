"""The remote seam: what every kind of remote can do with content.

Theory of operation
-------------------
A :class:`Remote` moves the content of keys to and from one other repository or
special remote. It knows nothing about the location log, transfer info files,
rate limits or retries: the transfer layer (:mod:`annexsync.transfers`) wraps every
call with those, so each remote type stays small and one contract test suite
(``tests/remotes/contract.py``) runs against every implementation.

Byte movement is expressed with two small interfaces so the transfer layer can
verify hashes while bytes arrive, count progress, and throttle:

* :meth:`Remote.retrieve` writes the bytes of a key from ``offset`` on into a
  :class:`Sink` (resume = the transfer layer passes the size of the partial file).
* :meth:`Remote.store` reads the bytes of a key from a local file and reports
  progress through a :class:`Meter`.

Both call ``meter(n)`` after each chunk; the meter may sleep (rate limiting) or
raise :class:`TransferAborted` (stall detection, cancellation).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from annexsync.annex.keys import Key
from annexsync.errors import AnnexError

Meter = Callable[[int], None]
"""Called with the number of bytes just moved; may sleep or raise TransferAborted."""


class Sink(Protocol):
    """Where retrieved bytes go (the transfer layer's verifying temp file)."""

    def write(self, data: bytes) -> object: ...


class RemoteError(AnnexError):
    """A remote operation failed (the message says why, in one line)."""


class RemoteUnavailable(RemoteError):
    """The remote cannot be reached now (unmounted drive, host down): try later."""


class KeyNotPresent(RemoteError):
    """The remote does not have the key."""


class TransferAborted(RemoteError):
    """A transfer was stopped on purpose (stall, cancel); partial data is kept."""


@dataclass(frozen=True)
class RemoteInfo:
    """What the rest of annexsync needs to know about a remote without contacting it."""

    name: str
    uuid: str
    kind: str  # "git" (local path or ssh), "directory", "rsync", ...
    cost: int = 100
    url: str | None = None
    sync: bool = True  # remote.NAME.annex-sync
    ignore: bool = False  # remote.NAME.annex-ignore
    readonly: bool = False
    supports_locking: bool = False  # can give a LockedCopy proof for drop safety
    config: dict[str, str] = field(default_factory=dict)


class Remote(Protocol):
    """Content operations on one remote. Implementations live in ``annexsync.remotes``."""

    info: RemoteInfo

    def available(self) -> bool:
        """Cheap check that the remote can be used now (path exists, drive mounted)."""
        ...

    def check_present(self, key: Key) -> bool:
        """Does the remote have the content? Raises RemoteUnavailable if it cannot tell."""
        ...

    def retrieve(self, key: Key, sink: Sink, offset: int, meter: Meter) -> None:
        """Write the key's bytes from ``offset`` to the end into ``sink``.

        Raises KeyNotPresent, RemoteUnavailable, RemoteError or TransferAborted.
        """
        ...

    def store(self, key: Key, src: Path, meter: Meter) -> None:
        """Store the content in ``src`` (already verified) under ``key`` atomically."""
        ...

    def remove(self, key: Key) -> None:
        """Remove the key's content (the caller has already proven it safe)."""
        ...

    def lock_content(self, key: Key) -> AbstractContextManager[bool]:
        """Keep the content from being dropped while the context is open.

        Yields True when the content is present and now locked (a LockedCopy proof),
        False when it is not present. Remotes without ``supports_locking`` yield False.
        """
        ...

    def close(self) -> None:
        """Release connections and processes."""
        ...


RemoteFactory = Callable[..., Remote]


class RecentlyAvailable:
    """``Remote.available()`` for callers that ask per file or per job.

    An ssh remote answers by starting a session (a new ssh connection and a process
    over there, ~0.1 s), so asking per key made ``copy --to`` of 10,000 files take
    minutes. A remote seen up within ``ttl`` seconds counts as up (one that went away
    meanwhile fails the request, which says so); with ``remember_down``, one seen
    down counts as down for ``ttl`` too (a command does not wait for a connection
    timeout per file).
    """

    def __init__(self, ttl: float = 0.5, *, remember_down: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.remember_down = remember_down
        self.clock = clock
        self._seen: dict[str, tuple[float, bool]] = {}

    def __call__(self, remote: Remote) -> bool:
        now = self.clock()
        seen = self._seen.get(remote.info.name)
        if seen is not None and now - seen[0] < self.ttl and (seen[1] or self.remember_down):
            return seen[1]
        up = remote.available()
        self._seen[remote.info.name] = (now, up)
        return up
