"""Turning a stream of "this path changed" notes into commit batches. Pure.

Theory of operation
-------------------
The watcher feeds paths (relative to the top) with the time they were seen; the
committer asks :meth:`Aggregator.decide` with ``now`` and gets either a batch to
commit or how long to wait. A lone change is committed after ``quiet`` seconds of
calm (default 20 ms: a fast reaction), a burst keeps extending the wait while changes
keep coming, but never beyond ``max_delay`` after its first change, so a long burst
is committed in slices rather than starved. Past ``max_batch`` paths a batch is cut
at once. ``annex.delayadd`` adds a minimum age to every path.

The batch is a set of paths, not events: the committer looks at each path's state
on disk when it commits, so a file created, changed and deleted inside one batch
costs nothing, and our own writes (the symlink that replaces an added file) are
recognised as "nothing to do".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Aggregator:
    quiet: float = 0.02
    max_delay: float = 0.5
    max_batch: int = 5000
    delay_add: float = 0.0
    _pending: dict[str, float] = field(default_factory=dict)  # path -> last seen
    _first: float | None = None
    _last: float | None = None
    full_rescan: bool = False

    def add(self, path: str, now: float) -> None:
        """Note that ``path`` changed at ``now``."""
        self._pending[path] = now
        if self._first is None:
            self._first = now
        self._last = now

    def rescan(self, now: float) -> None:
        """Something was lost (queue overflow): the next batch is a full rescan."""
        self.full_rescan = True
        if self._first is None:
            self._first = now
        self._last = now

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing pending (the next note starts a batch)."""
        return self._first is None

    def decide(self, now: float) -> tuple[set[str] | None, float | None]:
        """``(batch, None)`` to commit now, or ``(None, seconds)`` to wait (None: idle)."""
        if self._first is None or self._last is None:
            return None, None
        ready_at = self._last + self.quiet
        ready_at = min(ready_at, self._first + self.max_delay)
        if self.delay_add:
            ready_at = max(ready_at, self._last + self.delay_add)
        if len(self._pending) >= self.max_batch or now >= ready_at:
            batch = set(self._pending)
            self._pending.clear()
            self._first = self._last = None
            return batch, None
        return None, ready_at - now

    def take_rescan(self) -> bool:
        flag, self.full_rescan = self.full_rescan, False
        return flag
