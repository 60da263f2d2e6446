"""Bandwidth limits and stall detection: git-annex's settings, pure state machines.

Theory of operation
-------------------
Both features look at the same thing: the byte count of one transfer over time.

* :class:`TokenBucket` is the pure core of rate limiting. ``reserve(n, now)`` takes
  ``n`` tokens (bytes) and returns how long the caller must wait before sending them;
  the bucket may go into debt, so a chunk larger than the burst still works and the
  long-run rate is exact. Nothing here sleeps: :class:`Throttle` asks a
  :class:`RateController` for the rate, reserves, and sleeps on an injected clock.
* The rate comes from a :class:`RateController`: :class:`FixedRate` for
  ``annex.bwlimit`` today; an adaptive controller can replace it later without
  touching the transfer code (it is told every chunk through ``observe``).
* :class:`StallDetector` mirrors git-annex's ``detectStalls``: with ``N/D`` it
  checks every ``D`` seconds that at least ``N`` bytes moved since the previous
  check (the first window only records a baseline); with ``true`` ("probe") it waits
  for progress, requires two timely advances 30 s apart, then treats 60 s without
  a single byte as a stall.

Parsing follows git-annex: sizes are ``readSize dataUnits`` (``1MiB``, ``100 KiB``,
``0.5MB``, ``8Mbit``; case-insensitive; no unit means bytes), durations are
``parseDuration`` (``60s``, ``5m``, ``1h30m``; units y d h m s).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "FixedRate",
    "RateController",
    "StallDetector",
    "StallSpec",
    "Throttle",
    "TokenBucket",
    "parse_bwlimit",
    "parse_duration",
    "parse_size",
    "parse_stalldetection",
]

# git-annex's dataUnits, in its lookup order: storage (powers of 10), committee
# (powers of 2), bandwidth (bits, powers of 10).
_UNITS: list[tuple[int, str, str]] = [
    *[(1000**p, a, n) for p, a, n in [
        (10, "QB", "quettabyte"), (9, "RB", "ronnabyte"), (8, "YB", "yottabyte"),
        (7, "ZB", "zettabyte"), (6, "EB", "exabyte"), (5, "PB", "petabyte"),
        (4, "TB", "terabyte"), (3, "GB", "gigabyte"), (2, "MB", "megabyte"),
        (1, "kB", "kilobyte"), (0, "B", "byte")]],
    *[(2 ** (10 * p), a, n) for p, a, n in [
        (8, "YiB", "yobibyte"), (7, "ZiB", "zebibyte"), (6, "EiB", "exbibyte"),
        (5, "PiB", "pebibyte"), (4, "TiB", "tebibyte"), (3, "GiB", "gibibyte"),
        (2, "MiB", "mebibyte"), (1, "KiB", "kibibyte"), (0, "B", "byte")]],
    *[((1000**p) // 8, a, n) for p, a, n in [
        (8, "Ybit", "yottabit"), (7, "Zbit", "zettabit"), (6, "Ebit", "exabit"),
        (5, "Pbit", "petabit"), (4, "Tbit", "terabit"), (3, "Gbit", "gigabit"),
        (2, "Mbit", "megabit"), (1, "kbit", "kilobit")]],
]

# Haskell's ``reads :: ReadS Double``: optional minus, digits, optional fraction and
# exponent (no leading "." or "+").
_NUMBER_RE = re.compile(r"\s*(-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_DURATION_UNITS = {"y": 365 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _unit_multiplier(name: str) -> int | None:
    if not name:
        return 1
    v = name.lower()
    for size, abbrev, full in _UNITS:
        a, n = abbrev.lower(), full.lower()
        if v in (a, n, n + "s") or a == v + "b":
            return size
    return None


def parse_size(text: str) -> int | None:
    """A byte count in git-annex's ``readSize dataUnits`` syntax, or None if invalid.

    ``"1MiB"`` is 1048576, ``"1MB"`` 1000000, ``"1 megabyte"``, ``"0.5GiB"``,
    ``"8Mbit"`` (1000000 bytes) and ``"100"`` (bytes) all parse; text after the unit
    is ignored, as git-annex does.
    """
    m = _NUMBER_RE.match(text)
    if m is None:
        return None
    number = float(m.group(1))
    if not math.isfinite(number):
        return None
    rest = text[m.end():].lstrip()
    unit = ""
    for c in rest:
        if not c.isalpha():
            break
        unit += c
    mult = _unit_multiplier(unit)
    if mult is None:
        return None
    return round(number * mult)


def parse_bwlimit(text: str | None) -> float | None:
    """Bytes per second from ``annex.bwlimit`` syntax (``"1MiB"``); None = unlimited.

    Zero, negative or unparsable values mean no limit.
    """
    if text is None:
        return None
    size = parse_size(text.strip())
    if size is None or size <= 0:
        return None
    return float(size)


def parse_duration(text: str) -> int | None:
    """Seconds from git-annex's duration syntax (``"60s"``, ``"1h30m"``, ``"90"``)."""
    text = text.strip()
    if not text:
        return None
    total = 0
    for num, unit in re.findall(r"([0-9]+)([a-z]?)", text):
        if unit and unit not in _DURATION_UNITS:
            return None
        total += int(num) * _DURATION_UNITS.get(unit, 1)
    if re.fullmatch(r"(?:[0-9]+[ydhms]?)+", text) is None:
        return None
    return total


@dataclass(frozen=True, slots=True)
class StallSpec:
    """A stall detection setting: ``min_bytes`` per ``seconds``, or the probe mode."""

    min_bytes: int = 0
    seconds: float = 60.0
    probe: bool = False


def parse_stalldetection(text: str | None) -> StallSpec | None:
    """``annex.stalldetection``: ``"10KiB/60s"``, ``"true"`` (probe) or ``"false"``.

    Returns None when disabled or unset. Raises ValueError for an unparsable value,
    so the user hears about a typo instead of silently losing the protection.
    """
    if text is None:
        return None
    v = text.strip()
    if v.lower() in _FALSE:
        return None
    if v.lower() in _TRUE:
        return StallSpec(probe=True)
    amount, sep, dur = v.partition("/")
    size = parse_size(amount)
    if size is None:
        raise ValueError(f"unable to parse stall detection amount {amount!r}")
    seconds = parse_duration(dur) if sep else None
    if not seconds:
        raise ValueError(f"unable to parse stall detection duration in {text!r} "
                         "(expected e.g. 10KiB/60s)")
    return StallSpec(min_bytes=max(size, 0), seconds=float(seconds))


class TokenBucket:
    """A token bucket of ``rate`` bytes/second holding at most ``burst`` bytes.

    Pure: the caller passes the time and sleeps for the returned delay.
    """

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst) if burst is not None else max(rate / 4, 16384.0)
        self.tokens = self.burst
        self.last = now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def reserve(self, n: int, now: float) -> float:
        """Take ``n`` tokens; return the seconds to wait before using them (0 = now)."""
        self._refill(now)
        self.tokens -= n
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    def set_rate(self, rate: float, now: float) -> None:
        """Change the rate (keeping any debt), e.g. when a controller adapts."""
        self._refill(now)
        self.rate = float(rate)
        self.burst = max(rate / 4, 16384.0)
        self.tokens = min(self.tokens, self.burst)


class RateController(Protocol):
    """Decides the rate a transfer may use; told what actually moved."""

    def rate(self, now: float) -> float | None:
        """Bytes per second allowed now; None for no limit."""
        ...

    def observe(self, now: float, nbytes: int) -> None:
        """``nbytes`` were just moved (feedback for adaptive controllers)."""
        ...


class FixedRate:
    """A constant limit (``annex.bwlimit``), or none."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate

    def rate(self, now: float) -> float | None:
        return self._rate

    def observe(self, now: float, nbytes: int) -> None:
        return None


class Throttle:
    """Applies a controller's rate to a byte stream through a token bucket."""

    def __init__(self, controller: RateController, monotonic: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.controller = controller
        self._monotonic = monotonic
        self._sleep = sleep
        self._bucket: TokenBucket | None = None

    @property
    def limited(self) -> bool:
        """Whether a limit applies right now (callers then use smaller chunks)."""
        return self.controller.rate(self._monotonic()) is not None

    def chunk_size(self, default: int) -> int:
        """A chunk size that keeps throttling smooth (about 1/8 s of data)."""
        r = self.controller.rate(self._monotonic())
        if r is None:
            return default
        return int(min(default, max(4096, r / 8)))

    def __call__(self, n: int) -> None:
        now = self._monotonic()
        r = self.controller.rate(now)
        self.controller.observe(now, n)
        if r is None:
            self._bucket = None
            return
        if self._bucket is None:
            self._bucket = TokenBucket(r, now=now)
        elif self._bucket.rate != r:
            self._bucket.set_rate(r, now)
        delay = self._bucket.reserve(n, now)
        if delay > 0:
            self._sleep(delay)


_PROBE_STEP = 30.0
_PROBE_WINDOW = 60.0


class StallDetector:
    """Decides, from (time, bytes so far) observations, that a transfer stalled.

    Call :meth:`check` whenever progress is reported and periodically from a
    watchdog; it returns True once the transfer is stalled (and keeps doing so).
    """

    def __init__(self, spec: StallSpec, now: float) -> None:
        self.spec = spec
        self.stalled = False
        self._seen = False  # any progress reported at all
        self._prev: int | None = None
        self._next = now + (_PROBE_STEP if spec.probe else spec.seconds)
        # probe mode: "wait" for first advance, then "adv1"/"adv2", then "detect";
        # "off" once progress proved too irregular to judge.
        self._phase = "wait" if spec.probe else "detect"
        self._probe_base = 0
        self._window = spec.seconds if not spec.probe else _PROBE_WINDOW
        self._min = spec.min_bytes if not spec.probe else 1

    def progress(self) -> None:
        """Note that the meter has reported at least once."""
        self._seen = True

    def check(self, now: float, total: int) -> bool:
        """Advance the state machine to ``now`` with ``total`` bytes moved."""
        while not self.stalled and self._phase != "off" and now >= self._next:
            self._step(total)
        return self.stalled

    def _step(self, total: int) -> None:
        if self._phase == "wait":
            self._next += _PROBE_STEP
            if total > self._probe_base:
                self._probe_base = total
                self._phase = "adv1"
        elif self._phase in ("adv1", "adv2"):
            if total > self._probe_base:
                self._probe_base = total
                if self._phase == "adv1":
                    self._phase = "adv2"
                    self._next += _PROBE_STEP
                else:
                    self._phase = "detect"
                    self._next += self._window
            else:
                self._phase = "off"
        else:
            self._next += self._window
            if not self._seen and total == 0:
                return
            if self._prev is None or total < self._prev:
                self._prev = total
            elif total - self._prev < self._min:
                self.stalled = True
            else:
                self._prev = total
