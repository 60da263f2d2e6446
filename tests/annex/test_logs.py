"""Tests for annexsync.annex.logs: the git-annex branch log formats."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annexsync.annex.logs import (
    CHUNK_LOG_EXT,
    CONFIG_LOG,
    DEAD,
    GROUP_LOG,
    GROUP_PREFERRED_CONTENT_LOG,
    LOCATION_LOG_EXT,
    METADATA_LOG_EXT,
    MINCOPIES_LOG,
    NUMCOPIES_LOG,
    REMOTE_LOG,
    SEMITRUSTED,
    STATUS_DEAD,
    STATUS_MISSING,
    STATUS_PRESENT,
    TRUST_LOG,
    TRUSTED,
    UNTRUSTED,
    URL_LOG_EXT,
    UUID_BASED_LOGS,
    UUID_LOG,
    WEB_UUID,
    LogEntry,
    LogLine,
    Timestamp,
    UUIDLogLine,
    clock_now,
    current_presence,
    current_uuid_values,
    format_map_log,
    format_presence_log,
    format_remote_config,
    format_single_value_log,
    format_uuid_log,
    is_dead,
    key_log_path,
    location_log_path,
    mangle_journal_name,
    next_timestamp,
    parse_chunk_log,
    parse_map_log,
    parse_metadata_log,
    parse_presence_log,
    parse_remote_config,
    parse_single_value_log,
    parse_trust,
    parse_uuid_log,
    present_infos,
    set_map_value,
    set_presence,
    set_single_value,
    set_uuid_value,
    trust_levels,
    union_merge,
    union_merge_many,
    unmangle_journal_name,
)
from annexsync.testing.gitenv import git_annex_binary, hermetic_env

T = Timestamp.parse
U1 = "1b2b3688-54a6-4c61-9b72-8ff369fc8dac"
U2 = "2d0d8d87-92e6-44a7-bd9f-98da1deacaa2"
U3 = "5bdc7f91-ac21-4484-987d-b44ccb5b6cbc"

# ---------------------------------------------------------------------------
# The example lines of the reference, section 3.3 (and 3.4)

UUID_LOG_EXAMPLES = {
    "uuid.log": b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 Repo A desc"
                b" timestamp=1795594217.194726285s\n",
    "remote.log": b"b5efbdcb-9eae-4716-a67d-3c8f5fa62d38 directory=/path/to/store encryption=none"
                  b" externaltype=slowdir extra=hello name=slow type=external"
                  b" timestamp=1795594249.935651981s\n"
                  b"5bdc7f91-ac21-4484-987d-b44ccb5b6cbc encryption=none name=dr type=directory"
                  b" timestamp=1795594435.528027116s\n",
    "trust.log": b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac 1 timestamp=1795594640.116590784s\n"
                 b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 ? timestamp=1795594357.044777878s\n"
                 b"00000000-0000-0000-0000-000000000002 X timestamp=1795594357.526189365s\n",
    "group.log": b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac backup timestamp=1795594357.193091414s\n"
                 b"00000000-0000-0000-0000-000000000002  timestamp=1795594357.526952478s\n",
    "preferred-content.log": b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac include=*.txt and not"
                             b" largerthan=10mb timestamp=1795594357.300419999s\n"
                             b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 standard"
                             b" timestamp=1795594217.211424682s\n",
    "required-content.log": b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac include=*.bin"
                            b" timestamp=1795594357.343424933s\n",
    "schedule.log": b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac fsck self 30m every day at any time"
                    b" timestamp=1795594357.469549404s\n",
    "difference.log": b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 fromList"
                      b" [ObjectHashLower,OneLevelBranchHash] timestamp=1795594535.352487734s\n",
}

PRESENCE_EXAMPLES = {
    "location": b"1795594158.265794114s 1 2d0d8d87-92e6-44a7-bd9f-98da1deacaa2\n"
                b"1795594338.774012365s 0 2d0d8d87-92e6-44a7-bd9f-98da1deacaa2\n"
                b"1795594338.774012365001s X 2d0d8d87-92e6-44a7-bd9f-98da1deacaa2\n",
    "web": b"1795594201.580340235s 1 http://example.com/some/path/file.bin?x=1&y=2\n",
    "web-location": b"1795594201.580340235s 1 00000000-0000-0000-0000-000000000001\n",
}

METADATA_EXAMPLE = (
    b"1795594357.615291287s author +!Sm8gU21pdGg= tag +foo\n"
    b"1795594362.46188866s tag +bar -foo\n"
    b"1795594362.576422431s note +!bXVsdGkgd29yZCB2YWx1ZQ==\n"
)


@pytest.mark.parametrize("name", sorted(UUID_LOG_EXAMPLES))
def test_uuid_log_examples_round_trip(name: str) -> None:
    data = UUID_LOG_EXAMPLES[name]
    lines = parse_uuid_log(data)
    assert len(lines) == data.count(b"\n")
    assert all(not line.timestamp.is_unknown for line in lines)
    assert format_uuid_log(lines) == data


def test_uuid_log_example_values() -> None:
    (desc,) = parse_uuid_log(UUID_LOG_EXAMPLES["uuid.log"])
    assert desc == UUIDLogLine(U2, "Repo A desc", T("1795594217.194726285s"))
    groups = current_uuid_values(parse_uuid_log(UUID_LOG_EXAMPLES["group.log"]))
    assert groups[U1].value == "backup"
    assert groups["00000000-0000-0000-0000-000000000002"].value == ""
    wanted = current_uuid_values(parse_uuid_log(UUID_LOG_EXAMPLES["preferred-content.log"]))
    assert wanted[U1].value == "include=*.txt and not largerthan=10mb"
    trust = trust_levels(parse_uuid_log(UUID_LOG_EXAMPLES["trust.log"]))
    assert trust == {U1: TRUSTED, U2: SEMITRUSTED, "00000000-0000-0000-0000-000000000002": DEAD}
    remotes = current_uuid_values(parse_uuid_log(UUID_LOG_EXAMPLES["remote.log"]))
    assert parse_remote_config(remotes[U3].value) == {
        "encryption": "none", "name": "dr", "type": "directory"}


def test_uuid_log_newest_wins_after_union_merge() -> None:
    data = (b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 A-from-A timestamp=1795594438.531273824s\n"
            b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 A-from-B timestamp=1795594439.087313268s\n"
            b"2d0d8d87-92e6-44a7-bd9f-98da1deacaa2 Repo A desc timestamp=1795594217.194726285s\n")
    assert current_uuid_values(parse_uuid_log(data))[U2].value == "A-from-B"


@pytest.mark.parametrize("name", sorted(PRESENCE_EXAMPLES))
def test_presence_examples_round_trip(name: str) -> None:
    data = PRESENCE_EXAMPLES[name]
    lines = parse_presence_log(data)
    assert len(lines) == data.count(b"\n")
    assert format_presence_log(lines) == data


def test_presence_example_meaning() -> None:
    lines = parse_presence_log(PRESENCE_EXAMPLES["location"])
    assert current_presence(lines)[U2].status == STATUS_DEAD
    assert is_dead(lines)
    assert present_infos(lines) == set()
    assert present_infos(parse_presence_log(PRESENCE_EXAMPLES["web"])) == {
        "http://example.com/some/path/file.bin?x=1&y=2"}
    assert present_infos(parse_presence_log(PRESENCE_EXAMPLES["web-location"])) == {WEB_UUID}


@pytest.mark.parametrize("data", [
    b"1795594356.747827146s 1\n",
    b"1795594356.884559961s 1\n",
])
def test_single_value_examples_round_trip(data: bytes) -> None:
    entry = parse_single_value_log(data)
    assert entry is not None and entry.value == "1"
    assert format_single_value_log(entry) == data


@pytest.mark.parametrize(("data", "field", "value"), [
    (b"1795594357.440411074s annex.largefiles largerthan=100kb\n",
     "annex.largefiles", "largerthan=100kb"),
    (b"1795594357.39886633s mygroup present\n", "mygroup", "present"),
    (b"1795594463.402565655s b4a92dfb-df14-4199-af58-4dbd3a47e9a0:1048576 3\n",
     "b4a92dfb-df14-4199-af58-4dbd3a47e9a0:1048576", "3"),
])
def test_map_log_examples_round_trip(data: bytes, field: str, value: str) -> None:
    parsed = parse_map_log(data)
    assert {f: e.value for f, e in parsed.items()} == {field: value}
    assert format_map_log(parsed) == data


def test_chunk_log_example() -> None:
    data = b"1795594463.402565655s b4a92dfb-df14-4199-af58-4dbd3a47e9a0:1048576 3\n"
    assert parse_chunk_log(data) == {("b4a92dfb-df14-4199-af58-4dbd3a47e9a0", 1048576): 3}
    later = data + b"1795594500s b4a92dfb-df14-4199-af58-4dbd3a47e9a0:1048576 0\n"
    assert parse_chunk_log(later) == {("b4a92dfb-df14-4199-af58-4dbd3a47e9a0", 1048576): 0}
    assert parse_chunk_log(b"1s u:weird 3\n1s u:5 many\n1s u5 3\n") == {}


def test_metadata_example() -> None:
    assert parse_metadata_log(METADATA_EXAMPLE) == {
        "author": {"Jo Smith"}, "tag": {"bar"}, "note": {"multi word value"}}


def test_metadata_order_and_case() -> None:
    # Lines apply oldest first whatever the file order; field names ignore case.
    data = b"20s Tag -a +c\n10s tag +a +b\n"
    assert parse_metadata_log(data) == {"Tag": {"b", "c"}}
    # A word that is not a +/- value starts a new field; bad base64 is a field name.
    assert parse_metadata_log(b"1s empty f +x +!!!! +y\n") == {"f": {"x"}, "+!!!!": {"y"}}
    assert parse_metadata_log(b"1s f -x\n") == {}


# ---------------------------------------------------------------------------
# Timestamps


@pytest.mark.parametrize(("text", "formatted"), [
    ("1795594154.30598953s", "1795594154.30598953s"),
    ("1795594154s", "1795594154s"),
    ("1795594154", "1795594154s"),
    ("1795594154.3", "1795594154.3s"),
    ("1795594154.300000s", "1795594154.3s"),
    ("1795594338.774012365001s", "1795594338.774012365001s"),
    ("1387325539.685136s", "1387325539.685136s"),
    ("0", "0s"),
    ("0.000s", "0s"),
    ("+5s", "5s"),
    ("-1.5s", "-1.5s"),
    # More than 12 digits: truncated to picoseconds, like git-annex's Pico.
    ("1.1234567890129s", "1.123456789012s"),
])
def test_timestamp_parse_format(text: str, formatted: str) -> None:
    assert T(text).format() == formatted
    assert str(T(text)) == formatted


@pytest.mark.parametrize("bad", [
    "", "s", ".5s", "1.s", "1.5ss", "1 s", "1,5s", "0x10s", "1e9", "١٢s", " 1s", "1s\n", "--1",
])
def test_timestamp_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        T(bad)


def test_timestamp_values_and_order() -> None:
    assert T("1795594154.30598953s").seconds == Fraction(179559415430598953, 10**8)
    assert T("1.5") == T("1.50s") == Timestamp.from_seconds(Fraction(3, 2))
    assert hash(T("1.5")) == hash(T("1.500s"))
    assert T("1795594338.774012365s") < T("1795594338.774012365001s")
    assert Timestamp.from_ns(1_795_594_154_305_989_530) == T("1795594154.30598953s")
    assert Timestamp.UNKNOWN < T("-100s") < T("0s")
    assert min([T("3s"), Timestamp.UNKNOWN, T("1s")]) is Timestamp.UNKNOWN
    assert Timestamp.UNKNOWN.is_unknown and not T("0s").is_unknown
    assert Timestamp.UNKNOWN.format() == "0"
    assert T("1.25s") + 1 == T("2.25s")
    assert T("1.9s").truncate_to_seconds() == T("1s")
    with pytest.raises(ValueError):
        _ = Timestamp.UNKNOWN.seconds
    with pytest.raises(ValueError):
        _ = Timestamp.UNKNOWN + 1
    assert T("1s") != "1s"


def test_next_timestamp_vector_clock() -> None:
    now = T("100s")
    assert next_timestamp(now, []) == now
    assert next_timestamp(now, [T("99.5s"), Timestamp.UNKNOWN]) == now
    assert next_timestamp(now, [T("100s")]) == T("101s")
    assert next_timestamp(now, [T("50s"), T("250.5s")]) == T("251.5s")
    assert next_timestamp(now, [Timestamp.UNKNOWN]) == now


def test_clock_now() -> None:
    ns = 1_795_594_154_305_989_530
    assert clock_now({}, ns) == T("1795594154s")
    assert clock_now({"GIT_ANNEX_VECTOR_CLOCK": "1700000000.25"}, ns) == T("1700000000.25s")
    assert clock_now({"GIT_ANNEX_VECTOR_CLOCK": "garbage"}, ns) == T("1795594154s")


# ---------------------------------------------------------------------------
# Reading rules


def test_presence_parse_is_lenient() -> None:
    data = (b"\r\n1s 1 a\r\r\n\n"
            b"garbage\n"
            b"2s 7 b\n"      # unknown status
            b"2s 1\n"        # no info separator
            b"2x 1 c\n"      # bad timestamp
            b"3s 0 d e f\r"  # info keeps its spaces
            b"4 1 \n")       # empty info, timestamp without s
    assert parse_presence_log(data) == [
        LogLine(T("1s"), "1", "a"), LogLine(T("3s"), "0", "d e f"), LogLine(T("4s"), "1", "")]


def test_presence_tie_prefers_smallest_status_in_any_order() -> None:
    a = LogLine(T("5s"), STATUS_PRESENT, U1)
    b = LogLine(T("5s"), STATUS_MISSING, U1)
    assert current_presence([a, b])[U1] == b
    assert current_presence([b, a])[U1] == b


def test_uuid_log_parse_edge_cases() -> None:
    data = (b"u1\n"                       # very old: uuid only
            b"u2 trusted-by-old-format\n"  # no timestamp
            b" u3 x timestamp=1s\n"        # leading space: skipped
            b"u4 timestamp=5s\n"           # empty value, single space
            b"u5 a  b timestamp=6\n"       # inner double space kept
            b"u6 x timestamp=bogus\n"      # unparseable timestamp is part of the value
            b"u7 timestamp=1s y\n")        # timestamp only counts at the end
    assert parse_uuid_log(data) == [
        UUIDLogLine("u1", "", Timestamp.UNKNOWN),
        UUIDLogLine("u2", "trusted-by-old-format", Timestamp.UNKNOWN),
        UUIDLogLine("u4", "", T("5s")),
        UUIDLogLine("u5", "a  b", T("6s")),
        UUIDLogLine("u6", "x timestamp=bogus", Timestamp.UNKNOWN),
        UUIDLogLine("u7", "timestamp=1s y", Timestamp.UNKNOWN),
    ]
    assert UUIDLogLine("u1", "", Timestamp.UNKNOWN).format() == b"u1 \n"


def test_uuid_log_unknown_loses_and_tie_is_order_independent() -> None:
    old = UUIDLogLine(U1, "old", Timestamp.UNKNOWN)
    new = UUIDLogLine(U1, "new", T("1s"))
    assert current_uuid_values([new, old])[U1] == new
    x = UUIDLogLine(U1, "a b", T("7s"))
    y = UUIDLogLine(U1, "a", T("7s"))
    assert current_uuid_values([x, y])[U1] == current_uuid_values([y, x])[U1] == y


def test_trust_parse() -> None:
    assert [parse_trust(v) for v in ["1", "0", "X", "?", "q", ""]] == [
        TRUSTED, UNTRUSTED, DEAD, SEMITRUSTED, SEMITRUSTED, TRUSTED]
    assert parse_trust("11") is None
    assert parse_trust("é") is None
    # An unparseable newer line does not hide the older valid one.
    lines = parse_uuid_log(b"u 0 timestamp=1s\nu bogus timestamp=2s\n")
    assert trust_levels(lines) == {"u": UNTRUSTED}


def test_remote_config_escaping() -> None:
    value = "encryption=none hooktype=a&32;b&38;c&9;d name=hk type=hook"
    config = parse_remote_config(value)
    assert config == {"encryption": "none", "hooktype": "a b&c\td", "name": "hk", "type": "hook"}
    assert format_remote_config(config) == value
    assert format_remote_config({"type": "x", "a": "1 2", "Z": "&amp;"}) == (
        "Z=&38;amp; a=1&32;2 type=x")
    assert parse_remote_config("  a=1   b  c=x=y  d=&notanentity; e=&9999999999;") == {
        "a": "1", "b": "", "c": "x=y", "d": "&notanentity;", "e": "&9999999999;"}
    with pytest.raises(ValueError):
        format_remote_config({"a b": "x"})
    with pytest.raises(ValueError):
        format_remote_config({"a=b": "x"})


def test_single_value_and_map_logs() -> None:
    data = b"1s 5\n3s 2\n2s 9\n"
    assert parse_single_value_log(data) == LogEntry(T("3s"), "2")
    assert parse_single_value_log(b"garbage\n") is None
    # Tie: greatest value, numerically for integers (as git-annex's NumCopies).
    assert parse_single_value_log(b"3s 9\n3s 10\n") == LogEntry(T("3s"), "10")
    assert set_single_value(data, "4", T("2s")) == b"4s 4\n"
    assert set_single_value(b"", "4", T("2s")) == b"2s 4\n"

    config = b"5s b.x new value\n1s a.y 1\n4s b.x old\n"
    parsed = parse_map_log(config)
    assert parsed == {"b.x": LogEntry(T("5s"), "new value"), "a.y": LogEntry(T("1s"), "1")}
    timestamp, value = parsed["a.y"]
    assert (timestamp, value) == (T("1s"), "1")
    assert set_map_value(config, "b.x", "v", T("3s")) == b"1s a.y 1\n6s b.x v\n"
    assert set_map_value(config, "c", "", T("3s")) == b"1s a.y 1\n5s b.x new value\n3s c \n"
    assert parse_map_log(b"1s lonelyfield\n") == {}
    with pytest.raises(ValueError):
        set_map_value(b"", "two words", "v", T("1s"))


# ---------------------------------------------------------------------------
# Writing rules


def test_set_presence_no_churn_and_compaction() -> None:
    data = (b"10s 1 " + U2.encode() + b"\n"
            b"12s 0 " + U1.encode() + b"\n"
            b"11s 1 " + U1.encode() + b"\n"
            b"5s 1 " + U3.encode() + b"\n")
    # Already missing for U1: no change, even with a newer clock.
    assert set_presence(data, U1, STATUS_MISSING, T("100s")) is None
    assert set_presence(data, U2, STATUS_PRESENT, T("100s")) is None
    # A change: compacted, sorted by info, the new line replaces U1's lines.
    new = set_presence(data, U1, STATUS_PRESENT, T("100s"))
    assert new == (b"100s 1 " + U1.encode() + b"\n"
                   b"10s 1 " + U2.encode() + b"\n"
                   b"5s 1 " + U3.encode() + b"\n")
    # Clock behind the log: the new line is previous + 1 second.
    assert set_presence(data, U1, STATUS_PRESENT, T("3s")) == (
        b"13s 1 " + U1.encode() + b"\n"
        b"10s 1 " + U2.encode() + b"\n"
        b"5s 1 " + U3.encode() + b"\n")
    # Unknown info: added.
    assert set_presence(b"", WEB_UUID, STATUS_PRESENT, T("7s")) == (
        b"7s 1 " + WEB_UUID.encode() + b"\n")
    with pytest.raises(ValueError):
        set_presence(data, U1, "2", T("1s"))
    with pytest.raises(ValueError):
        set_presence(data, "a\nb", STATUS_PRESENT, T("1s"))


def test_set_uuid_value_rewrites_sorted_with_vector_clock() -> None:
    data = UUID_LOG_EXAMPLES["group.log"] + (
        b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac archive timestamp=1795594000s\n")
    out = set_uuid_value(data, U1, "", T("1795594357s"))
    assert out == (b"00000000-0000-0000-0000-000000000002  timestamp=1795594357.526952478s\n"
                   b"1b2b3688-54a6-4c61-9b72-8ff369fc8dac  timestamp=1795594358.193091414s\n")
    out = set_uuid_value(out, U2, "new repo", T("1795599999s"))
    assert parse_uuid_log(out)[-1] == UUIDLogLine(U2, "new repo", T("1795599999s"))
    with pytest.raises(ValueError):
        set_uuid_value(data, "two words", "x", T("1s"))
    with pytest.raises(ValueError):
        set_uuid_value(data, U1, "line\nbreak", T("1s"))


def test_paths_and_journal_names() -> None:
    key = "SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt"
    assert location_log_path("e7d/d01/", key) == f"e7d/d01/{key}.log"
    assert location_log_path("e7d/d01", key) == f"e7d/d01/{key}.log"
    assert key_log_path("e7d/d01/", key, URL_LOG_EXT) == f"e7d/d01/{key}.log.web"
    assert key_log_path("118/", key, METADATA_LOG_EXT) == f"118/{key}.log.met"
    assert key_log_path("", key, CHUNK_LOG_EXT) == f"{key}.log.cnk"
    with pytest.raises(ValueError):
        location_log_path("e7d/d01/", "has/slash")
    with pytest.raises(ValueError):
        key_log_path("e7d/d01/", key, "log")

    examples = {
        "17f/e67/SHA256E-s2--de3b.bin.log": "17f_e67_SHA256E-s2--de3b.bin.log",
        "d95/e75/WORM-s2-m1795824890--we_ird.bin.log":
            "d95_e75_WORM-s2-m1795824890--we__ird.bin.log",
        "uuid.log": "uuid.log",
        "a__b/c_d/e": "a____b_c__d_e",
        "group-preferred-content.log": "group-preferred-content.log",
    }
    for path, mangled in examples.items():
        assert mangle_journal_name(path) == mangled
        assert unmangle_journal_name(mangled) == path
    # The mangling is not injective where "/" touches "_" or "/".
    assert mangle_journal_name("a/_b") == mangle_journal_name("a_/b") == "a___b"
    assert mangle_journal_name("//") == mangle_journal_name("_") == "__"


# ---------------------------------------------------------------------------
# Property tests

_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"))
_timestamps = st.integers(min_value=-(10**24), max_value=10**24).map(Timestamp)
_statuses = st.sampled_from([STATUS_PRESENT, STATUS_MISSING, STATUS_DEAD])
_log_lines = st.builds(LogLine, _timestamps, _statuses, _text)


@given(_timestamps)
def test_prop_timestamp_round_trip(ts: Timestamp) -> None:
    assert T(ts.format()) == ts


@given(st.integers(min_value=0, max_value=10**15),
       st.one_of(st.just(""), st.from_regex(r"[0-9]{0,11}[1-9]", fullmatch=True)),
       st.integers(min_value=0, max_value=3), st.booleans())
def test_prop_timestamp_text_round_trip(whole: int, frac: str, zeros: int, suffix: bool) -> None:
    canonical = f"{whole}.{frac}s" if frac else f"{whole}s"
    assert T(canonical).format() == canonical
    noisy = f"{whole}.{frac}{'0' * zeros}" if frac or zeros else str(whole)
    assert T(noisy + ("s" if suffix else "")) == T(canonical)


@given(st.lists(_log_lines))
def test_prop_presence_round_trip(lines: list[LogLine]) -> None:
    assert parse_presence_log(format_presence_log(lines)) == lines


@given(st.lists(st.builds(UUIDLogLine, st.from_regex(r"[0-9a-f-]{1,36}", fullmatch=True),
                          _text, _timestamps)))
def test_prop_uuid_log_round_trip(lines: list[UUIDLogLine]) -> None:
    assert parse_uuid_log(format_uuid_log(lines)) == lines


@given(st.binary())
def test_prop_parsers_never_raise(data: bytes) -> None:
    parse_presence_log(data)
    parse_uuid_log(data)
    parse_map_log(data)
    parse_single_value_log(data)
    parse_chunk_log(data)
    parse_metadata_log(data)


_contents = st.lists(st.sampled_from([b"1s 1 a", b"2s 0 a", b"1s 1 b", b"\r", b"x y", b""]),
                     max_size=8).map(lambda parts: b"\n".join(parts)) | st.binary(max_size=40)


@given(_contents, _contents, _contents)
def test_prop_union_merge_laws(a: bytes, b: bytes, c: bytes) -> None:
    ab = union_merge(a, b)
    assert ab == union_merge(b, a)
    assert union_merge(ab, c) == union_merge(a, union_merge(b, c)) == union_merge_many([a, b, c])
    assert union_merge(ab, ab) == ab == union_merge(ab, b)
    assert b"\r" not in ab and (ab == b"" or ab.endswith(b"\n"))
    assert b"\n\n" not in ab


@given(st.lists(st.tuples(st.sampled_from(["u1", "u2", "u3"]), _statuses), max_size=12),
       st.lists(st.integers(min_value=0, max_value=10**6), min_size=12, max_size=12,
                unique=True),
       st.integers(min_value=0, max_value=12))
def test_prop_current_presence_of_union_is_merge_of_views(
        specs: list[tuple[str, str]], stamps: list[int], split: int) -> None:
    lines = [LogLine(Timestamp(ps), status, info)
             for (info, status), ps in zip(specs, stamps, strict=False)]
    a, b = format_presence_log(lines[:split]), format_presence_log(lines[split:])
    merged = current_presence(parse_presence_log(union_merge(a, b)))
    va, vb = current_presence(parse_presence_log(a)), current_presence(parse_presence_log(b))
    expected = dict(va)
    for info, line in vb.items():
        if info not in expected or line.timestamp > expected[info].timestamp:
            expected[info] = line
    assert merged == expected


@given(st.lists(_log_lines, max_size=6), _text, _statuses, _timestamps)
def test_prop_set_presence_takes_effect(lines: list[LogLine], info: str, status: str,
                                        now: Timestamp) -> None:
    data = format_presence_log(lines)
    before = current_presence(lines)
    out = set_presence(data, info, status, now)
    if out is None:
        assert before[info].status == status
        return
    after = current_presence(parse_presence_log(out))
    assert after[info].status == status and after[info].timestamp >= now
    assert {i: v for i, v in after.items() if i != info} == {
        i: v for i, v in before.items() if i != info}
    # Once written, it is newest even when union-merged with the old content.
    merged = current_presence(parse_presence_log(union_merge(data, out)))
    assert merged[info].status == status


@given(st.text(st.sampled_from("ab_/.-")).filter(
    lambda s: not any(bad in s for bad in ("_/", "/_", "//"))))
def test_prop_journal_name_round_trip(path: str) -> None:
    mangled = mangle_journal_name(path)
    assert "/" not in mangled
    assert unmangle_journal_name(mangled) == path


# ---------------------------------------------------------------------------
# Interop with real git-annex


class Repo:
    """A scratch repository driven by real git-annex with an explicit hermetic env."""

    def __init__(self, path: Path, env: dict[str, str], git_annex: str) -> None:
        self.path = path
        self.env = dict(env)
        self.env["PATH"] = os.pathsep.join([str(Path(git_annex).parent), env.get("PATH", "")])

    def run(self, *args: str, extra_env: dict[str, str] | None = None) -> bytes:
        env = {**self.env, **(extra_env or {})}
        proc = subprocess.run(args, cwd=self.path, env=env, capture_output=True)
        if proc.returncode != 0:
            raise AssertionError(f"{args} failed ({proc.returncode}):\n"
                                 f"{proc.stdout.decode(errors='replace')}\n"
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def annex(self, *args: str, extra_env: dict[str, str] | None = None) -> bytes:
        return self.run("git", "annex", *args, extra_env=extra_env)

    def text(self, *args: str) -> str:
        return self.run(*args).decode().strip()

    def branch_files(self) -> dict[str, bytes]:
        names = self.run("git", "ls-tree", "-r", "-z", "--name-only", "git-annex")
        return {n: self.run("git", "cat-file", "blob", f"git-annex:{n}")
                for n in names.decode().split("\0") if n}

    def branch_file(self, name: str) -> bytes:
        proc = subprocess.run(["git", "cat-file", "blob", f"git-annex:{name}"], cwd=self.path,
                              env=self.env, capture_output=True)
        return proc.stdout if proc.returncode == 0 else b""

    def key_log(self, file: str, ext: str) -> str:
        key = self.text("git", "annex", "lookupkey", file)
        hashdir = self.text("git", "annex", "examinekey", "--format=${hashdirlower}", key)
        return key_log_path(hashdir, key, ext)  # SHA256E keys need no keyFile escaping

    def write_journal(self, branch_path: str, content: bytes) -> None:
        journal = self.path / ".git" / "annex" / "journal"
        journal.mkdir(parents=True, exist_ok=True)
        (journal / mangle_journal_name(branch_path)).write_bytes(content)


def _new_repo(tmp: Path, env: dict[str, str], git_annex: str, desc: str) -> Repo:
    path = tmp / "repo"
    path.mkdir()
    repo = Repo(path, env, git_annex)
    repo.run("git", "init", "-q")
    repo.annex("init", desc)
    return repo


@pytest.fixture(scope="module")
def annex_scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    """One repository in which git-annex has written every kind of log we read."""
    git_annex = git_annex_binary()
    if git_annex is None:
        pytest.skip("real git-annex not installed (scripts/test.sh installs the PyPI wheel)")
    tmp = tmp_path_factory.mktemp("logs-interop")
    env = hermetic_env(tmp / "home")
    repo = _new_repo(tmp, env, git_annex, "Repo A desc")
    (repo.path / "a.txt").write_text("hello\n")
    (repo.path / "b.bin").write_text("bye\n")
    (repo.path / "c.dat").write_bytes(bytes(range(256)) * 12)
    repo.annex("add", "a.txt", "b.bin", "c.dat")
    repo.run("git", "commit", "-qm", "add")
    # A pinned clock in the future, then a change that must bump it by one second.
    repo.annex("describe", "here", "A desc", extra_env={
        "GIT_ANNEX_VECTOR_CLOCK": "2000000000.123456789"})
    repo.annex("describe", "here", "A desc again")
    repo.annex("initremote", "hk", "type=hook", "hooktype=a b&c", "encryption=none")
    (tmp / "dirremote").mkdir()
    repo.annex("initremote", "d", "type=directory", f"directory={tmp / 'dirremote'}",
               "encryption=none", "chunk=1KiB")
    repo.annex("trust", "--force", "here")
    repo.annex("untrust", "hk")
    repo.annex("group", "here", "backup")
    repo.annex("group", "hk", "archive")
    repo.annex("ungroup", "hk", "archive")
    repo.annex("wanted", "here", "include=*.txt and not largerthan=10mb")
    repo.annex("required", "hk", "include=*.bin")
    repo.annex("numcopies", "2")
    repo.annex("mincopies", "1")
    repo.annex("config", "--set", "annex.largefiles", "largerthan=100kb")
    repo.annex("groupwanted", "mygroup", "present")
    repo.annex("schedule", "here", "fsck self 30m every day at any time")
    repo.annex("metadata", "-s", "author=Jo Smith", "-s", "tag=foo", "a.txt")
    repo.annex("metadata", "-t", "bar", "-u", "foo", "a.txt")
    repo.annex("copy", "--to", "d", "c.dat")
    key_a = repo.text("git", "annex", "lookupkey", "a.txt")
    repo.annex("registerurl", key_a, "http://example.com/some/path/file.bin?x=1&y=2")
    repo.annex("drop", "--force", "b.bin")
    repo.annex("dead", "--key", repo.text("git", "annex", "lookupkey", "b.bin"))
    repo.annex("dead", "hk")
    yield repo


def _check_round_trip(name: str, data: bytes) -> None:
    """Our parser understands every line of a git-annex file and reproduces its bytes."""
    n = data.count(b"\n")
    base = name.rsplit("/", 1)[-1]
    if base in UUID_BASED_LOGS:
        lines = parse_uuid_log(data)
        assert len(lines) == n and not any(line.timestamp.is_unknown for line in lines)
        assert format_uuid_log(lines) == data
    elif base in (NUMCOPIES_LOG, MINCOPIES_LOG):
        entry = parse_single_value_log(data)
        assert entry is not None and n == 1
        assert format_single_value_log(entry) == data
    elif base in (CONFIG_LOG, GROUP_PREFERRED_CONTENT_LOG) or name.endswith(CHUNK_LOG_EXT):
        entries = parse_map_log(data)
        assert len(entries) == n
        assert format_map_log(entries) == data
    elif name.endswith((LOCATION_LOG_EXT, URL_LOG_EXT)) and "/" in name:
        lines = parse_presence_log(data)
        assert len(lines) == n
        assert format_presence_log(lines) == data
    elif name.endswith(METADATA_LOG_EXT):
        assert parse_metadata_log(data)
    else:
        raise AssertionError(f"git-annex wrote a log we do not know: {name}: {data!r}")


@pytest.mark.interop
def test_interop_we_read_every_git_annex_log(annex_scenario: Repo) -> None:
    files = annex_scenario.branch_files()
    assert {UUID_LOG, REMOTE_LOG, TRUST_LOG, GROUP_LOG, NUMCOPIES_LOG, CONFIG_LOG} <= set(files)
    assert any(n.endswith(CHUNK_LOG_EXT) for n in files)
    for name, data in files.items():
        _check_round_trip(name, data)


@pytest.mark.interop
def test_interop_meaning_of_git_annex_logs(annex_scenario: Repo) -> None:
    repo = annex_scenario
    files = repo.branch_files()
    here = repo.text("git", "config", "annex.uuid")
    hk = repo.text("git", "config", "remote.hk.annex-uuid")
    d = repo.text("git", "config", "remote.d.annex-uuid")

    desc = current_uuid_values(parse_uuid_log(files[UUID_LOG]))
    assert desc[here] == UUIDLogLine(here, "A desc again", T("2000000001.123456789s"))
    assert desc[hk].value == "hk"
    assert trust_levels(parse_uuid_log(files[TRUST_LOG])) == {here: TRUSTED, hk: DEAD}
    groups = current_uuid_values(parse_uuid_log(files[GROUP_LOG]))
    assert (groups[here].value, groups[hk].value) == ("backup", "")
    remotes = current_uuid_values(parse_uuid_log(files[REMOTE_LOG]))
    assert parse_remote_config(remotes[hk].value) == {
        "encryption": "none", "hooktype": "a b&c", "name": "hk", "type": "hook"}
    assert parse_remote_config(remotes[d].value)["chunk"] == "1KiB"
    assert format_remote_config(parse_remote_config(remotes[hk].value)) == remotes[hk].value
    wanted = current_uuid_values(parse_uuid_log(files["preferred-content.log"]))
    assert wanted[here].value == "include=*.txt and not largerthan=10mb"
    assert current_uuid_values(parse_uuid_log(files["required-content.log"]))[hk].value == (
        "include=*.bin")
    schedule = current_uuid_values(parse_uuid_log(files["schedule.log"]))
    assert schedule[here].value == "fsck self 30m every day at any time"

    numcopies = parse_single_value_log(files[NUMCOPIES_LOG])
    assert numcopies is not None and numcopies.value == "2"
    assert parse_map_log(files[CONFIG_LOG])["annex.largefiles"].value == "largerthan=100kb"
    assert parse_map_log(files[GROUP_PREFERRED_CONTENT_LOG])["mygroup"].value == "present"

    a_log = parse_presence_log(files[repo.key_log("a.txt", LOCATION_LOG_EXT)])
    assert present_infos(a_log) == {here, WEB_UUID}
    web = parse_presence_log(files[repo.key_log("a.txt", URL_LOG_EXT)])
    assert present_infos(web) == {"http://example.com/some/path/file.bin?x=1&y=2"}
    meta = parse_metadata_log(files[repo.key_log("a.txt", METADATA_LOG_EXT)])
    assert meta == {"author": {"Jo Smith"}, "tag": {"bar"}}

    b_log = parse_presence_log(files[repo.key_log("b.bin", LOCATION_LOG_EXT)])
    assert is_dead(b_log) and present_infos(b_log) == set()
    # `dead --key` writes the old timestamp plus one picosecond.
    assert current_presence(b_log)[here].timestamp.picoseconds % 10**12 == 1

    c_log = parse_presence_log(files[repo.key_log("c.dat", LOCATION_LOG_EXT)])
    assert present_infos(c_log) == {here, d}
    assert parse_chunk_log(files[repo.key_log("c.dat", CHUNK_LOG_EXT)]) == {(d, 1024): 3}


FAKE = "0a0b0c0d-1111-4222-8333-444455556666"


def _now() -> Timestamp:
    return clock_now(os.environ, time.time_ns())


@pytest.mark.interop
def test_interop_git_annex_reads_our_uuid_and_location_logs(
        tmp_path: Path, hermetic: dict[str, str], git_annex: str) -> None:
    repo = _new_repo(tmp_path, hermetic, git_annex, "original")
    (repo.path / "a.txt").write_text("hello\n")
    repo.annex("add", "a.txt")
    here = repo.text("git", "config", "annex.uuid")
    loc = repo.key_log("a.txt", LOCATION_LOG_EXT)

    uuid_log = set_uuid_value(repo.branch_file(UUID_LOG), here, "written by annexsync", _now())
    uuid_log = set_uuid_value(uuid_log, FAKE, "fake remote", _now())
    location = set_presence(repo.branch_file(loc), FAKE, STATUS_PRESENT, _now())
    assert location is not None
    repo.write_journal(UUID_LOG, uuid_log)
    repo.write_journal(loc, location)

    whereis = json.loads(repo.annex("whereis", "--json", "a.txt"))
    assert {(w["uuid"], w["description"]) for w in whereis["whereis"]} == {
        (here, "written by annexsync"), (FAKE, "fake remote")}
    info = json.loads(repo.annex("info", "--json"))
    assert {"uuid": FAKE, "description": "fake remote", "here": False} in (
        info["semitrusted repositories"])
    # git-annex committed our journal files verbatim.
    assert repo.branch_file(UUID_LOG) == uuid_log
    assert repo.branch_file(loc) == location

    # And a removal: the content is no longer in FAKE.
    gone = set_presence(repo.branch_file(loc), FAKE, STATUS_MISSING, _now())
    assert gone is not None
    repo.write_journal(loc, gone)
    whereis = json.loads(repo.annex("whereis", "--json", "a.txt"))
    assert [w["uuid"] for w in whereis["whereis"]] == [here]


@pytest.mark.interop
def test_interop_git_annex_reads_our_settings(
        tmp_path: Path, hermetic: dict[str, str], git_annex: str) -> None:
    repo = _new_repo(tmp_path, hermetic, git_annex, "settings")
    here = repo.text("git", "config", "annex.uuid")
    repo.write_journal(NUMCOPIES_LOG, set_single_value(b"", "3", _now()))
    repo.write_journal(MINCOPIES_LOG, set_single_value(b"", "2", _now()))
    repo.write_journal(CONFIG_LOG,
                       set_map_value(b"", "annex.largefiles", "largerthan=1kb", _now()))
    repo.write_journal(GROUP_LOG, set_uuid_value(b"", here, "archive backup", _now()))
    repo.write_journal("preferred-content.log",
                       set_uuid_value(b"", here, "include=*.txt or present", _now()))
    trust = set_uuid_value(repo.branch_file(UUID_LOG), FAKE, "elsewhere", _now())
    repo.write_journal(UUID_LOG, trust)
    repo.write_journal(TRUST_LOG, set_uuid_value(b"", FAKE, UNTRUSTED, _now()))

    assert repo.text("git", "annex", "numcopies") == "3"
    assert repo.text("git", "annex", "mincopies") == "2"
    assert repo.text("git", "annex", "config", "--get", "annex.largefiles") == "largerthan=1kb"
    assert repo.text("git", "annex", "group", "here") == "archive backup"
    assert repo.text("git", "annex", "wanted", "here") == "include=*.txt or present"
    info = json.loads(repo.annex("info", "--json"))
    assert [r["uuid"] for r in info["untrusted repositories"]] == [FAKE]


@pytest.mark.interop
def test_interop_git_annex_reads_our_remote_config(
        tmp_path: Path, hermetic: dict[str, str], git_annex: str) -> None:
    repo = _new_repo(tmp_path, hermetic, git_annex, "remotes")
    config = {"type": "hook", "hooktype": "x y&z\tw", "name": "hk2", "encryption": "none"}
    repo.write_journal(REMOTE_LOG,
                       set_uuid_value(b"", FAKE, format_remote_config(config), _now()))
    repo.annex("enableremote", "hk2")
    info = json.loads(repo.annex("info", "--json", "hk2"))
    assert (info["uuid"], info["hooktype"], info["type"]) == (FAKE, "x y&z\tw", "hook")
