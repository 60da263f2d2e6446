"""The line formats of every git-annex branch log, as pure functions on bytes.

Theory of operation
===================

The ``git-annex`` branch is a tree of small text files ("logs"). Every line of
every log carries a timestamp, and every file is designed so that two diverged
copies can be merged by taking the **union of their lines** (:func:`union_merge`).
Readers therefore never trust line order or uniqueness: for each *identity*
(the UUID of a UUID-based log, the field of a map log, the INFO of a presence
log) the line with the **newest timestamp wins**. Writers keep this working by
never letting a new line be older than the line it replaces: the *vector clock*
rule (:func:`next_timestamp`) bumps "now" to ``previous + 1s`` when the clock is
behind what is already logged.

This module knows nothing about files, git or the clock. Everything takes and
returns ``bytes`` (the complete content of one branch file) and callers inject
"now" (see :func:`clock_now`). It mirrors the git-annex Haskell modules
``Logs.Presence.Pure``, ``Logs.UUIDBased``, ``Logs.MapLog``,
``Logs.SingleValue.Pure``, ``Logs.Remote.Pure``, ``Logs.Trust.Pure``,
``Logs.MetaData.Pure``, ``Logs.Chunk.Pure``, ``Utility.TimeStamp`` and
``Annex.VectorClock``.

The families of logs
--------------------

* **Presence logs** (per-key ``.log`` location logs, ``.log.web`` URL logs):
  ``T SP STATUS SP INFO``. See :func:`parse_presence_log`, :func:`set_presence`.
* **Old-style UUID-based logs** (``uuid.log``, ``remote.log``, ``trust.log``,
  ``group.log``, ``preferred-content.log``, ``required-content.log``,
  ``schedule.log``, ``difference.log``, ``activity.log``, ``multicast.log``):
  ``UUID SP VALUE SP timestamp=T``; the value may be empty, which gives a
  double space. See :func:`parse_uuid_log`, :func:`set_uuid_value`.
* **Single-value logs** (``numcopies.log``, ``mincopies.log``): ``T SP VALUE``;
  a write replaces the whole file with one line.
* **Map logs** (``config.log``, ``group-preferred-content.log``, and the
  ``.log.cnk`` chunk logs): ``T SP FIELD SP VALUE``; a write rewrites one line
  per field, in field order.
* **Metadata logs** (``.log.met``): ``T SP FIELD SP (+|-)VALUE ...``, read only.

Text and bytes
--------------

Logs are bytes. Parsers decode them as UTF-8 with ``surrogateescape`` and
formatters encode the same way, so any byte string survives a round trip. All
orderings that git-annex takes from a ``Data.Map`` of ByteStrings (UUIDs,
fields, infos) are bytewise, so this module sorts on the encoded bytes.

Timestamps
----------

:class:`Timestamp` is exact: git-annex's ``POSIXTime`` is a fixed-point number
of picoseconds, and so is ours (an ``int``); nothing goes through ``float``.
Current git-annex (verified with 10.20261026) writes whole seconds
(``1795824792s``); older versions wrote 6 or 9 fractional digits, and
``git annex dead --key`` adds one picosecond (12 digits). Lines that carry no
timestamp at all (very old UUID-based logs) get :data:`Timestamp.UNKNOWN`,
which is older than every real timestamp.

Reading rules and ties
----------------------

Lines that do not parse are skipped, never fatal: a newer git-annex may add
formats. When two lines for the same identity have *exactly* the same
timestamp, git-annex's answer depends on line order, which union merges make
bytewise-sorted. We break ties by a rule that does not depend on order and
agrees with git-annex on every sorted (merged or compacted) file:

* presence logs: the **smallest** line wins, i.e. status ``0`` < ``1`` < ``X``
  (git-annex keeps the first of equal-dated lines). Believing "missing" on a
  tie is also the safe side for drop decisions;
* UUID-based and map logs: the **greatest** line wins (git-annex keeps the last);
* single-value logs: the greatest value, numerically for integers (git-annex
  compares the parsed values, e.g. ``NumCopies``);
* metadata logs: lines apply in (timestamp, line bytes) order, an
  approximation of git-annex's order for equal timestamps.

Writing rules
-------------

* :func:`set_presence` changes nothing when the newest line for INFO already
  has the wanted status (no churn); otherwise it writes the compacted log.
* :func:`set_uuid_value` and :func:`set_map_value` rewrite the file with one
  line per identity, in identity order; :func:`set_single_value` writes one line.
  Other identities' values are kept verbatim (git-annex would re-serialise its
  parsed value, e.g. sort a group set, and drop lines its value parser rejects).
* Every written file ends in a newline and never contains ``\\r``.

Union merge
-----------

:func:`union_merge` returns the bytewise-sorted set of non-empty lines. It is
the canonical form of git-annex's merge: git-annex splits on ``\\n`` only and,
when one side already holds exactly the merged set of lines, reuses that blob
as it is (possibly unsorted). Readers cannot tell the difference.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from functools import total_ordering
from typing import ClassVar, NamedTuple

__all__ = [
    "ACTIVITY_LOG",
    "BITTORRENT_UUID",
    "CHUNK_LOG_EXT",
    "CONFIG_LOG",
    "DEAD",
    "DIFFERENCE_LOG",
    "GROUP_LOG",
    "GROUP_PREFERRED_CONTENT_LOG",
    "LOCATION_LOG_EXT",
    "METADATA_LOG_EXT",
    "MINCOPIES_LOG",
    "MULTICAST_LOG",
    "NUMCOPIES_LOG",
    "PREFERRED_CONTENT_LOG",
    "REMOTE_LOG",
    "REQUIRED_CONTENT_LOG",
    "SCHEDULE_LOG",
    "SEMITRUSTED",
    "STATUS_DEAD",
    "STATUS_MISSING",
    "STATUS_PRESENT",
    "TRUSTED",
    "TRUST_LOG",
    "UNTRUSTED",
    "UUID_BASED_LOGS",
    "UUID_LOG",
    "URL_LOG_EXT",
    "WEB_UUID",
    "LogEntry",
    "LogLine",
    "Timestamp",
    "UUIDLogLine",
    "clock_now",
    "current_presence",
    "current_uuid_values",
    "format_map_log",
    "format_presence_log",
    "format_remote_config",
    "format_single_value_log",
    "format_uuid_log",
    "is_dead",
    "key_log_path",
    "location_log_path",
    "mangle_journal_name",
    "next_timestamp",
    "parse_chunk_log",
    "parse_map_log",
    "parse_metadata_log",
    "parse_presence_log",
    "parse_remote_config",
    "parse_single_value_log",
    "parse_trust",
    "parse_uuid_log",
    "present_infos",
    "set_map_value",
    "set_presence",
    "set_single_value",
    "set_uuid_value",
    "trust_levels",
    "union_merge",
    "union_merge_many",
    "unmangle_journal_name",
]

# Top-level files of the git-annex branch.
UUID_LOG = "uuid.log"
REMOTE_LOG = "remote.log"
TRUST_LOG = "trust.log"
GROUP_LOG = "group.log"
PREFERRED_CONTENT_LOG = "preferred-content.log"
REQUIRED_CONTENT_LOG = "required-content.log"
GROUP_PREFERRED_CONTENT_LOG = "group-preferred-content.log"
SCHEDULE_LOG = "schedule.log"
DIFFERENCE_LOG = "difference.log"
ACTIVITY_LOG = "activity.log"
MULTICAST_LOG = "multicast.log"
NUMCOPIES_LOG = "numcopies.log"
MINCOPIES_LOG = "mincopies.log"
CONFIG_LOG = "config.log"

#: The top-level logs in the old UUID-based format (``UUID VALUE timestamp=T``).
UUID_BASED_LOGS = frozenset({
    UUID_LOG, REMOTE_LOG, TRUST_LOG, GROUP_LOG, PREFERRED_CONTENT_LOG, REQUIRED_CONTENT_LOG,
    SCHEDULE_LOG, DIFFERENCE_LOG, ACTIVITY_LOG, MULTICAST_LOG,
})

# Suffixes of per-key logs (after the escaped key file name).
LOCATION_LOG_EXT = ".log"
URL_LOG_EXT = ".log.web"
METADATA_LOG_EXT = ".log.met"
CHUNK_LOG_EXT = ".log.cnk"

# Well-known UUIDs of the built-in special remotes.
WEB_UUID = "00000000-0000-0000-0000-000000000001"
BITTORRENT_UUID = "00000000-0000-0000-0000-000000000002"

# Presence log statuses.
STATUS_PRESENT = "1"
STATUS_MISSING = "0"
STATUS_DEAD = "X"
_STATUSES = frozenset({STATUS_PRESENT, STATUS_MISSING, STATUS_DEAD})

# trust.log values.
TRUSTED = "1"
SEMITRUSTED = "?"
UNTRUSTED = "0"
DEAD = "X"

_ENC = "utf-8"
_ERRORS = "surrogateescape"
_PS_PER_SECOND = 10**12
_LINE_SPLIT = re.compile(rb"[\r\n]+")
_TIMESTAMP_RE = re.compile(rb"([+-]?)([0-9]+)(?:\.([0-9]+))?s?", re.ASCII)


def _decode(b: bytes) -> str:
    return b.decode(_ENC, _ERRORS)


def _encode(s: str) -> bytes:
    return s.encode(_ENC, _ERRORS)


def _lines(data: bytes) -> list[bytes]:
    """Split on any run of CR/LF (some Windows git-annex versions wrote CRs)."""
    return [line for line in _LINE_SPLIT.split(data) if line]


def _check_line_text(what: str, s: str) -> None:
    if "\n" in s or "\r" in s:
        raise ValueError(f"{what} cannot contain a line break: {s!r}")


# ---------------------------------------------------------------------------
# Timestamps and the vector clock


@total_ordering
class Timestamp:
    """An exact POSIX time in picoseconds, as git-annex's ``POSIXTime``; or UNKNOWN.

    ``Timestamp.UNKNOWN`` stands for "no timestamp" (very old log lines) and sorts
    before every real timestamp, including negative ones.
    """

    __slots__ = ("_ps",)
    UNKNOWN: ClassVar[Timestamp]

    def __init__(self, picoseconds: int | None) -> None:
        """Make a timestamp from integer picoseconds (``None`` only for UNKNOWN)."""
        if picoseconds is not None and not isinstance(picoseconds, int):
            raise TypeError(f"picoseconds must be an int, not {type(picoseconds).__name__}")
        self._ps = picoseconds

    @classmethod
    def parse(cls, s: str | bytes) -> Timestamp:
        """Parse ``1795594154.30598953s``, ``1795594154s``, ``1795594154.3`` etc.

        Accepts an optional sign, any number of fractional digits (more than 12
        are truncated to picoseconds, as git-annex does) and an optional ``s``.
        Raises ValueError otherwise.
        """
        raw = _encode(s) if isinstance(s, str) else s
        m = _TIMESTAMP_RE.fullmatch(raw)
        if m is None:
            raise ValueError(f"not a git-annex timestamp: {s!r}")
        sign, whole, frac = m.groups()
        frac = frac or b""
        # Integer arithmetic only: this runs for every line of every log read.
        ps = int(whole) * _PS_PER_SECOND + int(frac[:12].ljust(12, b"0"))
        if sign == b"-":
            # Flooring a truncated negative value; also, git-annex reads "-0.5s"
            # as +0.5 (its sign applies to the integer part only) but we keep the
            # sign so that format() round-trips. No real log predates 1970.
            ps = -ps - (1 if frac[12:].strip(b"0") else 0)
        return cls(ps)

    @classmethod
    def from_ns(cls, ns: int) -> Timestamp:
        """A timestamp from integer nanoseconds (``time.time_ns()``)."""
        return cls(ns * 1000)

    @classmethod
    def from_seconds(cls, seconds: int | Fraction | Decimal) -> Timestamp:
        """A timestamp from exact seconds, floored to picoseconds."""
        return cls(_floor_ps(Fraction(seconds)))

    @property
    def is_unknown(self) -> bool:
        """True for :data:`Timestamp.UNKNOWN`."""
        return self._ps is None

    @property
    def picoseconds(self) -> int:
        """Integer picoseconds since the epoch (ValueError for UNKNOWN)."""
        if self._ps is None:
            raise ValueError("Timestamp.UNKNOWN has no value")
        return self._ps

    @property
    def seconds(self) -> Fraction:
        """Exact seconds since the epoch (ValueError for UNKNOWN)."""
        return Fraction(self.picoseconds, _PS_PER_SECOND)

    def format(self) -> str:
        """Decimal seconds, fraction without trailing zeros, then ``s``.

        UNKNOWN formats as ``0`` (what git-annex writes for it in map logs).
        """
        if self._ps is None:
            return "0"
        sign = "-" if self._ps < 0 else ""
        whole, frac = divmod(abs(self._ps), _PS_PER_SECOND)
        digits = f"{frac:012d}".rstrip("0")
        return f"{sign}{whole}.{digits}s" if digits else f"{sign}{whole}s"

    def truncate_to_seconds(self) -> Timestamp:
        """Drop the fraction (toward zero), as git-annex does for its clock."""
        if self._ps is None:
            return self
        whole = abs(self._ps) // _PS_PER_SECOND * _PS_PER_SECOND
        return Timestamp(-whole if self._ps < 0 else whole)

    def __add__(self, seconds: int | Fraction | Decimal) -> Timestamp:
        if not isinstance(seconds, int | Fraction | Decimal):
            return NotImplemented
        return Timestamp(self.picoseconds + _floor_ps(Fraction(seconds)))

    def _key(self) -> tuple[int, int]:
        return (0, 0) if self._ps is None else (1, self._ps)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._ps == other._ps

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Timestamp):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._ps)

    def __repr__(self) -> str:
        return "Timestamp.UNKNOWN" if self._ps is None else f"Timestamp.parse({self.format()!r})"

    def __str__(self) -> str:
        return self.format()


Timestamp.UNKNOWN = Timestamp(None)


def _floor_ps(seconds: Fraction) -> int:
    # Haskell's Pico fromRational floors.
    return (seconds * _PS_PER_SECOND).__floor__()


def next_timestamp(now: Timestamp, previous: Iterable[Timestamp]) -> Timestamp:
    """The timestamp to write for a change, given "now" and the identity's old ones.

    git-annex's ``advanceVectorClock``: if the newest previous timestamp is at or
    after ``now`` (clock skew, or several changes within one second), use it plus
    one second, so the new line always wins; otherwise use ``now``.
    """
    prevs = list(previous)
    if not prevs:
        return now
    newest = max(prevs)
    if not newest.is_unknown and newest >= now:
        return newest + 1
    return now


def clock_now(environ: Mapping[str, str], time_ns: int) -> Timestamp:
    """The candidate timestamp for a write: "now" as git-annex would choose it.

    ``GIT_ANNEX_VECTOR_CLOCK`` (a timestamp) pins the clock when it parses.
    Otherwise ``time_ns`` (pass ``time.time_ns()``) is truncated to whole
    seconds, as current git-annex does to keep the branch small; the vector
    clock keeps repeated changes within one second ordered.
    """
    pinned = environ.get("GIT_ANNEX_VECTOR_CLOCK")
    if pinned is not None:
        try:
            return Timestamp.parse(pinned)
        except ValueError:
            pass
    return Timestamp.from_ns(time_ns).truncate_to_seconds()


def _try_timestamp(raw: bytes) -> Timestamp | None:
    try:
        return Timestamp.parse(raw)
    except ValueError:
        return None


# ---------------------------------------------------------------------------
# Presence logs: location logs (.log) and URL logs (.log.web)


@dataclass(frozen=True)
class LogLine:
    """One presence-log line: ``timestamp status info``.

    ``status`` is ``"1"`` (present), ``"0"`` (missing) or ``"X"`` (dead); ``info``
    is a UUID (location log) or a URL (web log).
    """

    timestamp: Timestamp
    status: str
    info: str

    def format(self) -> bytes:
        """The line as git-annex writes it, with its newline."""
        return _encode(f"{self.timestamp.format()} {self.status} {self.info}\n")


def parse_presence_log(data: bytes) -> list[LogLine]:
    """Parse a presence log; unparseable lines are skipped, never an error.

    Lines keep their file order; use :func:`current_presence` for their meaning.
    """
    out: list[LogLine] = []
    for line in _lines(data):
        ts_raw, sep, rest = line.partition(b" ")
        if not sep or len(rest) < 2 or rest[1:2] != b" ":
            continue
        status = _decode(rest[:1])
        ts = _try_timestamp(ts_raw)
        if ts is None or status not in _STATUSES:
            continue
        out.append(LogLine(ts, status, _decode(rest[2:])))
    return out


def format_presence_log(lines: Iterable[LogLine]) -> bytes:
    """Serialize presence-log lines in the given order."""
    return b"".join(line.format() for line in lines)


_STATUS_RANK = {STATUS_MISSING: 0, STATUS_PRESENT: 1, STATUS_DEAD: 2}


def _presence_newer(new: LogLine, old: LogLine) -> bool:
    if new.timestamp != old.timestamp:
        return new.timestamp > old.timestamp
    # Tie: the smallest line wins (see the module docstring).
    return _STATUS_RANK.get(new.status, 3) < _STATUS_RANK.get(old.status, 3)


def current_presence(lines: Iterable[LogLine]) -> dict[str, LogLine]:
    """The newest line for each info.

    On an exact timestamp tie the line with the smallest status wins
    (``0`` < ``1`` < ``X``), whatever the line order.
    """
    best: dict[str, LogLine] = {}
    for line in lines:
        old = best.get(line.info)
        if old is None or _presence_newer(line, old):
            best[line.info] = line
    return best


def present_infos(lines: Iterable[LogLine]) -> set[str]:
    """The infos (UUIDs or URLs) whose newest line says present."""
    return {i for i, line in current_presence(lines).items() if line.status == STATUS_PRESENT}


def is_dead(lines: Iterable[LogLine]) -> bool:
    """True if the newest line of every info has status ``X`` (git-annex ``checkDead``).

    Like git-annex this is vacuously true for an empty log; check the log is
    non-empty when "known and dead" is meant.
    """
    return all(line.status == STATUS_DEAD for line in current_presence(lines).values())


def set_presence(data: bytes, info: str, status: str, now: Timestamp) -> bytes | None:
    """Record ``status`` for ``info``; the new file content, or None for "no change".

    If the newest line for ``info`` already has ``status``, nothing changes (the
    older timestamp is kept, which avoids churn). Otherwise the result is the
    compacted log: the newest line of each info, sorted by info, with the new
    line for ``info`` timestamped by :func:`next_timestamp` over its old lines.
    """
    if status not in _STATUSES:
        raise ValueError(f"presence status must be one of 1, 0, X, not {status!r}")
    _check_line_text("presence log info", info)
    lines = parse_presence_log(data)
    current = current_presence(lines)
    old = current.get(info)
    if old is not None and old.status == status:
        return None
    ts = next_timestamp(now, (line.timestamp for line in lines if line.info == info))
    current[info] = LogLine(ts, status, info)
    return format_presence_log(sorted(current.values(), key=lambda line: _encode(line.info)))


# ---------------------------------------------------------------------------
# Old-style UUID-based logs: "UUID VALUE timestamp=T"


@dataclass(frozen=True)
class UUIDLogLine:
    """One line of a UUID-based log: ``uuid value timestamp=T``.

    ``value`` is everything between the UUID and the timestamp (it may be empty
    or contain spaces). A line without a timestamp has ``Timestamp.UNKNOWN``.
    """

    uuid: str
    value: str
    timestamp: Timestamp

    def format(self) -> bytes:
        """The line as git-annex writes it (no ``timestamp=`` if UNKNOWN)."""
        if self.timestamp.is_unknown:
            return _encode(f"{self.uuid} {self.value}\n")
        return _encode(f"{self.uuid} {self.value} timestamp={self.timestamp.format()}\n")


_TS_MARK = b" timestamp="


def _parse_uuid_line(line: bytes) -> UUIDLogLine | None:
    space = line.find(b" ")
    if space == 0:
        return None
    if space < 0:
        return UUIDLogLine(_decode(line), "", Timestamp.UNKNOWN)
    uuid, rest = line[:space], line[space:]
    # A timestamp can only be the last word: clocks contain no spaces.
    last = rest.rfind(b" ")
    if rest.startswith(_TS_MARK, last):
        ts = _try_timestamp(rest[last + len(_TS_MARK):])
        if ts is not None:
            return UUIDLogLine(_decode(uuid), _decode(rest[1:last]), ts)
    return UUIDLogLine(_decode(uuid), _decode(rest[1:]), Timestamp.UNKNOWN)


def parse_uuid_log(data: bytes) -> list[UUIDLogLine]:
    """Parse a UUID-based log (uuid.log, trust.log, remote.log, group.log, ...).

    The first word is the UUID; a trailing `` timestamp=T`` is the timestamp
    (UNKNOWN if absent or unparseable); the value is the exact text between,
    so git-annex's double space for an empty value reads as ``""``. Lines
    starting with a space are skipped. Never raises.
    """
    out: list[UUIDLogLine] = []
    for line in _lines(data):
        parsed = _parse_uuid_line(line)
        if parsed is not None:
            out.append(parsed)
    return out


def format_uuid_log(lines: Iterable[UUIDLogLine]) -> bytes:
    """Serialize UUID-based log lines in the given order."""
    return b"".join(line.format() for line in lines)


def current_uuid_values(lines: Iterable[UUIDLogLine]) -> dict[str, UUIDLogLine]:
    """The newest line for each UUID (on a tie, the bytewise greatest line)."""
    best: dict[str, UUIDLogLine] = {}
    for line in lines:
        old = best.get(line.uuid)
        if (old is None or line.timestamp > old.timestamp
                or (line.timestamp == old.timestamp and line.format() > old.format())):
            best[line.uuid] = line
    return best


def set_uuid_value(data: bytes, uuid: str, value: str, now: Timestamp) -> bytes:
    """Set ``uuid``'s value; returns the whole rewritten log.

    One line per UUID (the newest of each), in UUID order; the changed line gets
    :func:`next_timestamp` over that UUID's previous timestamp.
    """
    if not uuid or " " in uuid:
        raise ValueError(f"not a usable UUID: {uuid!r}")
    _check_line_text("UUID", uuid)
    _check_line_text("UUID log value", value)
    current = current_uuid_values(parse_uuid_log(data))
    old = current.get(uuid)
    ts = next_timestamp(now, [old.timestamp] if old else [])
    current[uuid] = UUIDLogLine(uuid, value, ts)
    return format_uuid_log(sorted(current.values(), key=lambda line: _encode(line.uuid)))


# ---------------------------------------------------------------------------
# remote.log values


def _haskell_isspace(c: str) -> bool:
    # GHC's Data.Char.isSpace, which differs from str.isspace (e.g. \x1c-\x1f, \x85).
    o = ord(c)
    if o <= 0x377:
        return o == 32 or 9 <= o <= 13 or o == 0xA0
    return unicodedata.category(c) == "Zs"


def _config_escape(v: str) -> str:
    return "".join(f"&{ord(c)};" if c == "&" or _haskell_isspace(c) else c for c in v)


_ENTITY = re.compile(r"&([0-9]+);", re.ASCII)


def _config_unescape(v: str) -> str:
    def entity(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return chr(n) if n <= 0x10FFFF else m.group(0)

    return _ENTITY.sub(entity, v)


def _haskell_words(s: str) -> list[str]:
    words: list[str] = []
    cur: list[str] = []
    for c in s:
        if _haskell_isspace(c):
            if cur:
                words.append("".join(cur))
                cur = []
        else:
            cur.append(c)
    if cur:
        words.append("".join(cur))
    return words


def parse_remote_config(value: str) -> dict[str, str]:
    """Parse a remote.log value: space-separated ``key=value`` words.

    Values are unescaped (``&32;`` is a space, ``&38;`` is ``&``: git-annex writes
    whitespace and ``&`` as ``&<decimal code point>;``). A word without ``=``
    gives an empty value; a repeated key keeps its last value.
    """
    config: dict[str, str] = {}
    for word in _haskell_words(value):
        k, _, v = word.partition("=")
        config[k] = _config_unescape(v)
    return config


def format_remote_config(config: Mapping[str, str]) -> str:
    """Serialize a remote config as git-annex does: sorted keys, escaped values."""
    for k in config:
        if not k or "=" in k or any(_haskell_isspace(c) for c in k):
            raise ValueError(f"remote config key cannot be empty or contain '=' or space: {k!r}")
    return " ".join(f"{k}={_config_escape(v)}" for k, v in sorted(config.items()))


# ---------------------------------------------------------------------------
# trust.log values


def parse_trust(value: str) -> str | None:
    """The trust level of a trust.log value, or None if git-annex would skip the line.

    ``1`` trusted, ``0`` untrusted, ``X`` dead; any other single byte is
    semitrusted (room for future levels), and an empty value means trusted
    (the oldest trust logs listed only trusted repositories).
    """
    raw = _encode(value)
    if not raw:
        return TRUSTED
    if len(raw) != 1:
        return None
    return {TRUSTED: TRUSTED, UNTRUSTED: UNTRUSTED, DEAD: DEAD}.get(value, SEMITRUSTED)


def trust_levels(lines: Iterable[UUIDLogLine]) -> dict[str, str]:
    """UUID -> trust level from trust.log lines; repositories not listed are semitrusted.

    Lines whose value does not parse are dropped *before* newest-wins, as in
    git-annex, so they cannot hide an older valid line.
    """
    valid = [line for line in lines if parse_trust(line.value) is not None]
    return {u: parse_trust(line.value) or SEMITRUSTED
            for u, line in current_uuid_values(valid).items()}


# ---------------------------------------------------------------------------
# Single-value and map logs: "T VALUE" and "T FIELD VALUE"


class LogEntry(NamedTuple):
    """A timestamped value of a single-value or map log; unpacks as (timestamp, value)."""

    timestamp: Timestamp
    value: str


_INT_RE = re.compile(r"-?[0-9]+", re.ASCII)


def _value_key(value: str) -> tuple[int, int, bytes]:
    # git-annex compares the parsed values; integers (numcopies) compare numerically.
    if _INT_RE.fullmatch(value):
        return (0, int(value), _encode(value))
    return (1, 0, _encode(value))


def _parse_single_lines(data: bytes) -> list[tuple[Timestamp, bytes]]:
    out: list[tuple[Timestamp, bytes]] = []
    for line in _lines(data):
        ts_raw, sep, rest = line.partition(b" ")
        ts = _try_timestamp(ts_raw) if sep else None
        if ts is not None:
            out.append((ts, rest))
    return out


def parse_single_value_log(data: bytes) -> LogEntry | None:
    """The newest entry of a single-value log (numcopies.log, mincopies.log), or None.

    On a timestamp tie the greatest value wins (numerically for integers).
    """
    entries = [LogEntry(ts, _decode(v)) for ts, v in _parse_single_lines(data)]
    if not entries:
        return None
    return max(entries, key=lambda e: (e.timestamp, _value_key(e.value)))


def format_single_value_log(entry: LogEntry) -> bytes:
    """One single-value log line, as git-annex writes it."""
    return _encode(f"{entry.timestamp.format()} {entry.value}\n")


def set_single_value(data: bytes, value: str, now: Timestamp) -> bytes:
    """Set a single-value log: one line, timestamped past every old line."""
    _check_line_text("single-value log value", value)
    ts = next_timestamp(now, (ts for ts, _ in _parse_single_lines(data)))
    return format_single_value_log(LogEntry(ts, value))


def _parse_map_lines(data: bytes) -> list[tuple[Timestamp, bytes, bytes]]:
    out: list[tuple[Timestamp, bytes, bytes]] = []
    for ts, rest in _parse_single_lines(data):
        field, sep, value = rest.partition(b" ")
        if sep:
            out.append((ts, field, value))
    return out


def parse_map_log(data: bytes) -> dict[str, LogEntry]:
    """Field -> newest (timestamp, value) of a map log (config.log, group-preferred-content.log).

    A line is ``T FIELD VALUE``: the field is the second word, the value is the
    rest of the line (it may contain spaces or be empty). On a timestamp tie the
    bytewise greatest value wins.
    """
    best: dict[str, LogEntry] = {}
    for ts, field_raw, value_raw in _parse_map_lines(data):
        field = _decode(field_raw)
        old = best.get(field)
        if (old is None or ts > old.timestamp
                or (ts == old.timestamp and value_raw > _encode(old.value))):
            best[field] = LogEntry(ts, _decode(value_raw))
    return best


def format_map_log(entries: Mapping[str, LogEntry]) -> bytes:
    """Serialize a map log: one ``T FIELD VALUE`` line per field, in field order."""
    return b"".join(
        _encode(f"{entries[f].timestamp.format()} {f} {entries[f].value}\n")
        for f in sorted(entries, key=_encode)
    )


def set_map_value(data: bytes, field: str, value: str, now: Timestamp) -> bytes:
    """Set one field of a map log; returns the whole rewritten log, sorted by field."""
    if " " in field:
        raise ValueError(f"map log field cannot contain a space: {field!r}")
    _check_line_text("map log field", field)
    _check_line_text("map log value", value)
    current = parse_map_log(data)
    old = current.get(field)
    current[field] = LogEntry(next_timestamp(now, [old.timestamp] if old else []), value)
    return format_map_log(current)


# ---------------------------------------------------------------------------
# Chunk logs (.log.cnk) and metadata logs (.log.met): read only


def parse_chunk_log(data: bytes) -> dict[tuple[str, int], int]:
    """(uuid, chunk size) -> chunk count from a chunk log, newest line per field.

    A line is ``T UUID:CHUNKSIZE COUNT``; a count of 0 means the chunks were
    removed (the entry is kept). Lines with a non-numeric chunk method or count
    are skipped, as git-annex skips unparseable lines.
    """
    best: dict[tuple[str, int], tuple[Timestamp, bytes]] = {}
    for ts, field_raw, value_raw in _parse_map_lines(data):
        uuid, sep, size_raw = field_raw.partition(b":")
        if not sep or not size_raw.isdigit() or not value_raw.isdigit():
            continue
        key = (_decode(uuid), int(size_raw))
        old = best.get(key)
        if old is None or (ts, value_raw) > old:
            best[key] = (ts, value_raw)
    return {k: int(v) for k, (_, v) in best.items()}


def _metadata_value(word: bytes) -> tuple[bool, bytes] | None:
    if word[:1] not in (b"+", b"-"):
        return None
    is_set, rest = word[:1] == b"+", word[1:]
    if rest.startswith(b"!"):
        try:
            return is_set, base64.b64decode(rest[1:], validate=True)
        except (binascii.Error, ValueError):
            return None
    return is_set, rest


def _metadata_updates(rest: bytes) -> list[tuple[str, bool, bytes]]:
    # git-annex's MetaData deserializer: a word that is not a +/- value starts a
    # new field; a field that is not UTF-8 ends the line.
    updates: list[tuple[str, bool, bytes]] = []
    field: str | None = None
    for word in rest.split(b" "):
        if field is not None:
            value = _metadata_value(word)
            if value is not None:
                updates.append((field, value[0], value[1]))
                continue
        try:
            field = word.decode("utf-8")
        except UnicodeDecodeError:
            break
    return updates


def parse_metadata_log(data: bytes) -> dict[str, set[str]]:
    """Field -> currently set values, from a metadata log.

    Each line ``T FIELD +VALUE -VALUE ...`` sets (``+``) or unsets (``-``) values;
    values with whitespace or a leading ``!`` are ``!`` + base64. Lines apply
    oldest first, so for each (field, value) the newest ``+``/``-`` wins. Field
    names are case-insensitive; the newest spelling is returned. Fields with no
    value set are omitted.
    """
    fields: dict[str, tuple[str, dict[bytes, bool]]] = {}
    for _, rest in sorted(_parse_single_lines(data)):
        for field, is_set, value in _metadata_updates(rest):
            folded = field.casefold()
            _, values = fields.get(folded, (field, {}))
            values[value] = is_set
            fields[folded] = (field, values)
    out: dict[str, set[str]] = {}
    for name, values in fields.values():
        current = {_decode(v) for v, is_set in values.items() if is_set}
        if current:
            out[name] = current
    return out


# ---------------------------------------------------------------------------
# Branch paths and journal file names


def key_log_path(hashdir_lower: str, key_file: str, ext: str) -> str:
    """Branch path of a per-key log: ``<hashdirlower><keyFile><ext>``.

    ``hashdir_lower`` is e.g. ``"e7d/d01/"`` (trailing slash optional, ``""`` for
    none); ``key_file`` is the key already escaped by keyFile rules; ``ext`` is
    a suffix such as ``".log.web"``.
    """
    if "/" in key_file or not key_file:
        raise ValueError(f"not an escaped key file name: {key_file!r}")
    if not ext.startswith("."):
        raise ValueError(f"log suffix must start with '.': {ext!r}")
    prefix = hashdir_lower.strip("/")
    return f"{prefix}/{key_file}{ext}" if prefix else f"{key_file}{ext}"


def location_log_path(hashdir_lower: str, key_file: str) -> str:
    """Branch path of a key's location log, e.g. ``e7d/d01/SHA256E-s12--….txt.log``."""
    return key_log_path(hashdir_lower, key_file, LOCATION_LOG_EXT)


def mangle_journal_name(branch_path: str) -> str:
    """File name in ``.git/annex/journal/`` for a branch path: ``_`` -> ``__``, ``/`` -> ``_``.

    Not injective where a ``/`` touches a ``_`` or another ``/`` (``"a/_b"`` and
    ``"a_/b"`` both give ``"a___b"``, ``"//"`` and ``"_"`` both give ``"__"``), so
    :func:`unmangle_journal_name` inverts it only for paths without ``/_``,
    ``_/`` or ``//``. Branch paths never have them: hash directories are hex and
    key files start with a backend name.
    """
    return branch_path.replace("_", "__").replace("/", "_")


def unmangle_journal_name(name: str) -> str:
    """The branch path of a journal file name: ``__`` -> ``_``, a lone ``_`` -> ``/``."""
    out: list[str] = []
    i, n = 0, len(name)
    while i < n:
        c = name[i]
        if c == "_":
            if i + 1 < n and name[i + 1] == "_":
                out.append("_")
                i += 2
                continue
            out.append("/")
        else:
            out.append(c)
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------
# Union merge


def union_merge_many(contents: Iterable[bytes]) -> bytes:
    """Union-merge any number of versions of one branch file.

    The result is the bytewise-sorted set of their non-empty lines, each ending
    in a newline, with CRs dropped (lines are split on any run of CR/LF). It is
    commutative, associative and idempotent, so merge order never matters.
    """
    lines: set[bytes] = set()
    for data in contents:
        lines.update(_lines(data))
    return b"".join(line + b"\n" for line in sorted(lines))


def union_merge(a: bytes, b: bytes) -> bytes:
    """Union-merge two versions of one branch file (see :func:`union_merge_many`)."""
    return union_merge_many((a, b))
