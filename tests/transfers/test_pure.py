"""Pure parts: bandwidth syntax, token bucket, stall detection, info files, numcopies."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annexsync.annex.keys import Key
from annexsync.annex.logs import Timestamp
from annexsync.policy.numcopies import (
    CopyNeeds,
    Proof,
    ProofKind,
    auto_drop_allowed,
    count_copies,
    drop_decision,
    resolve_needs,
)
from annexsync.testing.clock import FakeClock
from annexsync.transfers.info import TransferInfo, format_transfer_info, parse_transfer_info
from annexsync.transfers.ratelimit import (
    FixedRate,
    StallDetector,
    StallSpec,
    Throttle,
    TokenBucket,
    parse_bwlimit,
    parse_duration,
    parse_size,
    parse_stalldetection,
)


@pytest.mark.parametrize("text,size", [
    ("1MiB", 1 << 20), ("100KiB", 102400), ("1MB", 10**6), ("1 megabyte", 10**6),
    ("2 megabytes", 2 * 10**6), ("0.5GiB", 1 << 29), ("8Mbit", 10**6), ("100", 100),
    ("1k", 1000), ("1Mi", 1 << 20), ("1kib", 1024), ("1.5KiB", 1536), ("10 kB", 10000),
    ("x", None), ("1 parsecs", None), ("", None),
])
def test_sizes_like_git_annex(text: str, size: int | None) -> None:
    assert parse_size(text) == size


def test_bwlimit_and_durations() -> None:
    assert parse_bwlimit("1MiB") == float(1 << 20)
    assert parse_bwlimit("0") is None and parse_bwlimit(None) is None
    assert parse_duration("60s") == 60 and parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90 and parse_duration("5x") is None


def test_stalldetection_setting() -> None:
    assert parse_stalldetection("10KiB/60s") == StallSpec(10240, 60.0)
    assert parse_stalldetection("true") == StallSpec(probe=True)
    assert parse_stalldetection("false") is None and parse_stalldetection(None) is None
    with pytest.raises(ValueError):
        parse_stalldetection("10KiB")


@given(st.lists(st.integers(min_value=1, max_value=200_000), min_size=1, max_size=60))
def test_token_bucket_long_run_rate_is_exact(chunks: list[int]) -> None:
    rate = 100_000.0
    b = TokenBucket(rate, burst=20_000, now=0.0)
    now = 0.0
    for n in chunks:
        now += b.reserve(n, now)  # the caller sleeps for the delay
    # After the last reservation's wait, at most the burst was sent "for free".
    assert now >= (sum(chunks) - 20_000) / rate - 1e-9
    assert now <= sum(chunks) / rate + 1e-9


def test_throttle_sleeps_on_the_fake_clock() -> None:
    clock = FakeClock()
    t = Throttle(FixedRate(256 * 1024), clock.monotonic, clock.sleep)
    for _ in range(16):
        t(64 * 1024)  # 1 MiB at 256 KiB/s
    burst = 64 * 1024  # rate / 4
    assert sum(clock.sleeps) == pytest.approx((1 << 20) / (256 * 1024) - burst / (256 * 1024))
    assert t.chunk_size(1 << 24) == 256 * 1024 // 8


def test_stall_rate_window() -> None:
    d = StallDetector(StallSpec(10240, 60.0), now=0.0)
    d.progress()
    assert not d.check(59.0, 5000)
    assert not d.check(60.0, 5000)  # first window: baseline only
    assert not d.check(120.0, 20000)  # 15000 >= 10240 in the window
    assert d.check(180.0, 25000)  # only 5000 bytes: stalled


def test_stall_probe_mode() -> None:
    d = StallDetector(StallSpec(probe=True), now=0.0)
    d.progress()
    assert not d.check(30.0, 100)  # first update seen
    assert not d.check(60.0, 200)  # timely advance 1
    assert not d.check(90.0, 300)  # timely advance 2: detecting from now on
    assert not d.check(150.0, 301)  # baseline
    assert d.check(210.0, 301)  # a whole minute without a byte


def test_info_file_format_exactly_as_git_annex() -> None:
    info = TransferInfo(Timestamp.parse("1795594252.380087129s"), 1258291, "big.bin")
    data = format_transfer_info(info)
    assert data == b"1795594252.380087129s 1258291\nbig.bin\n"
    assert parse_transfer_info(data) == info
    started = b"1795594562.646026409s\nbig.bin\n"
    assert parse_transfer_info(started) == TransferInfo(
        Timestamp.parse("1795594562.646026409s"), None, "big.bin")
    assert parse_transfer_info(b"1795594562s\n\n") == TransferInfo(
        Timestamp.parse("1795594562s"), None, None)
    assert parse_transfer_info(b"garbage\n") is None


def test_numcopies_resolution() -> None:
    assert resolve_needs() == CopyNeeds(1, 1)
    assert resolve_needs(numcopies_log="3", mincopies_log="2") == CopyNeeds(3, 2)
    assert resolve_needs(git_numcopies="2") == CopyNeeds(2, 1)
    assert resolve_needs(numcopies_log="0") == CopyNeeds(1, 1)  # <= 0 means 1
    # attribute beats the log; the maximum over the files of a key applies
    assert resolve_needs(file_attrs=[("4", None), (None, "3")], numcopies_log="2") == \
        CopyNeeds(4, 3)
    assert resolve_needs(numcopies_log="2", cli_numcopies=5) == CopyNeeds(5, 1)


def test_drop_here_needs_numcopies_proofs() -> None:
    one = [Proof("u1", ProofKind.LOCKED)]
    d = drop_decision(one, CopyNeeds(2, 1), from_remote=False, move_hint="hint")
    assert not d.safe
    assert d.lines[0] == "Could only verify the existence of 1 out of 2 necessary copies"
    assert d.lines[-1] == "(Use --force to override this check, or adjust numcopies.)"
    assert drop_decision([], CopyNeeds(1, 1), from_remote=False).lines[0] == \
        "Could not verify the existence of the 1 necessary copy."
    assert drop_decision(one, CopyNeeds(1, 1), from_remote=False).safe
    # max(numcopies, mincopies) for a local drop
    assert not drop_decision(one, CopyNeeds(1, 2), from_remote=False).safe


def test_drop_from_remote_needs_mincopies_locked_or_trusted() -> None:
    verified = [Proof("d", ProofKind.RECENTLY_VERIFIED)]
    d = drop_decision(verified, CopyNeeds(1, 1), from_remote=True, lock_unsupported=["d"])
    assert not d.safe
    assert d.lines[:2] == ("Unable to lock down 1 copy of file necessary to safely drop it.",
                           "These remotes do not support locking: d")
    both = [*verified, Proof("here", ProofKind.LOCKED)]
    assert drop_decision(both, CopyNeeds(2, 1), from_remote=True).safe
    assert not drop_decision(both, CopyNeeds(2, 2), from_remote=True).safe
    trusted = [*verified, Proof("t", ProofKind.TRUSTED)]
    assert drop_decision(trusted, CopyNeeds(2, 1), from_remote=True).safe
    # the same repository twice is one copy
    assert not drop_decision([Proof("a", ProofKind.LOCKED)] * 2, CopyNeeds(2, 1),
                             from_remote=True).safe


def test_auto_precheck_and_counting() -> None:
    trust = {"x": "untrusted", "y": "dead"}
    assert count_copies({"a", "b", "x", "y"}, trust) == 2
    assert not auto_drop_allowed(2, CopyNeeds(2, 1))
    assert auto_drop_allowed(3, CopyNeeds(2, 1))
    assert auto_drop_allowed(2, CopyNeeds(2, 1), dropping_untrusted=True)
    assert Key.parse("SHA256E-s1--" + "0" * 64)  # keys stay parseable here
