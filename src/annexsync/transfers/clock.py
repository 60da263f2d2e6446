"""The clock seam of the transfer layer: monotonic time, wall time and sleeping.

Everything in :mod:`annexsync.transfers` that waits or measures time (the token
bucket, stall detection, retry back-off, progress rates) takes a :class:`Clock`, so
tests drive time with :class:`annexsync.testing.clock.FakeClock` and never sleep.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Time as the transfer layer sees it."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for rates and timeouts)."""
        ...

    def time_ns(self) -> int:
        """Wall-clock nanoseconds since the epoch (for the records others read)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (rate limiting, retry back-off)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time_ns(self) -> int:
        return time.time_ns()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()
