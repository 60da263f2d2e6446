"""A fake clock for tests: time moves only when a test (or a sleep) moves it."""

from __future__ import annotations

import threading


class FakeClock:
    """Implements :class:`annexsync.transfers.clock.Clock` without real waiting.

    ``sleep`` advances the clock instantly and records the requested delay in
    :attr:`sleeps`, so a test can assert on the exact back-off or throttling delays.
    """

    def __init__(self, start: float = 1000.0, wall_ns: int = 1_795_000_000_000_000_000) -> None:
        self._now = start
        self._wall_offset_ns = wall_ns - int(start * 1e9)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def time_ns(self) -> int:
        with self._lock:
            return int(self._now * 1e9) + self._wall_offset_ns

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        with self._lock:
            self._now += seconds
