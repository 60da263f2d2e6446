"""What the assistant's services share: the repository, locks, the event log, settings.

The services never call each other's internals: they go through the small "poke"
methods on the hub's references (``hub.pusher.poke()``, ``hub.transfers.enqueue(...)``),
which only queue work and wake a thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.repo import AnnexRepo
from annexsync.assistant.events import EventLog

if TYPE_CHECKING:
    from annexsync.assistant.committer import Committer
    from annexsync.assistant.merger import Merger
    from annexsync.assistant.pusher import Pusher
    from annexsync.assistant.scanner import TransferScanner
    from annexsync.assistant.transferrer import Transferrer


@dataclass
class Settings:
    """Daemon settings (from git config ``annexsync.*`` / ``annex.*``)."""

    quiet: float = 0.02  # committer: calm needed before a commit
    max_delay: float = 0.5  # committer: longest a burst is held back
    delay_add: float = 0.0  # annex.delayadd
    slots: int = 4  # concurrent transfers
    upload_wait: float = 0.5  # pusher: wait this long for fresh uploads before pushing
    upload_wait_keys: int = 16  # pusher: ... but only for a commit of at most this many keys
    peer_grace: float = 5.0  # a burst to a local clone running an assistant: upload later
    push_retry_max: float = 1800.0  # failed pushes: retried at least this often
    content: bool = True  # move content (False: git-level sync only)
    git_sync: bool = True  # push/merge (False: "watch" only commits)
    change_hook: str = ""  # annexsync.changehook: sh command run after commits and merges
    change_hook_timeout: float = 60.0  # annexsync.changehooktimeout (seconds)

    @classmethod
    def from_config(cls, repo: AnnexRepo, **overrides: Any) -> Settings:
        cfg = repo.config
        s = cls()
        delay = cfg.get("annex.delayadd")
        if delay:
            try:
                s.delay_add = float(delay)
            except ValueError:
                pass
        s.slots = max(1, cfg.get_int("annexsync.transferslots", s.slots))
        s.change_hook = cfg.get("annexsync.changehook") or ""
        try:
            s.change_hook_timeout = float(cfg.get("annexsync.changehooktimeout") or 60)
        except ValueError:
            pass
        for k, v in overrides.items():
            setattr(s, k, v)
        return s


@dataclass
class Hub:
    repo: AnnexRepo
    events: EventLog
    settings: Settings
    branch: AnnexBranch = field(init=False)
    # One git-mutating operation on the work tree and index at a time.
    worktree_lock: threading.RLock = field(default_factory=threading.RLock)
    committer: Committer | None = None
    pusher: Pusher | None = None
    merger: Merger | None = None
    scanner: TransferScanner | None = None
    transfers: Transferrer | None = None

    def __post_init__(self) -> None:
        self.branch = AnnexBranch(self.repo)

    def emit(self, service: str, kind: str, /, **data: Any) -> None:
        self.events.emit(service, kind, **data)
