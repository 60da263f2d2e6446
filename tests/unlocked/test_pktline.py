"""The pkt-line codec and the filter protocol loop, without git."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from annexsync.annex.filter import (
    FLUSH,
    MAX_PAYLOAD,
    FilterFailed,
    PacketReader,
    PktLineError,
    capabilities_reply,
    decode_length,
    decode_packets,
    encode_content,
    encode_list,
    encode_packet,
    encode_text,
    handshake_reply,
    parse_keyvalues,
    serve,
)


def test_encode_packet_and_text() -> None:
    assert encode_packet(b"a") == b"0005a"
    assert encode_text("git-filter-server") == b"0016git-filter-server\n"
    assert encode_list(["version=2"]) == b"000eversion=2\n0000"
    with pytest.raises(ValueError):
        encode_packet(b"")
    with pytest.raises(ValueError):
        encode_packet(b"x" * (MAX_PAYLOAD + 1))
    assert encode_packet(b"x" * MAX_PAYLOAD)[:4] == b"fff0"


def test_decode_length() -> None:
    assert decode_length(b"0000") is None
    assert decode_length(b"0004") == 0
    assert decode_length(b"fff0") == MAX_PAYLOAD
    for bad in (b"0001", b"0002", b"0003", b"00g0", b"+001", b" 005", b"00"):
        with pytest.raises(PktLineError):
            decode_length(bad)


def test_content_is_split_at_the_maximum_payload() -> None:
    data = bytes(range(256)) * 600  # 153600 bytes
    packets = list(encode_content(data))
    assert [len(p) - 4 for p in packets] == [MAX_PAYLOAD, MAX_PAYLOAD, 153600 - 2 * MAX_PAYLOAD]
    assert list(encode_content(b"")) == []


@given(st.lists(st.binary(min_size=0, max_size=3 * MAX_PAYLOAD), max_size=4))
def test_roundtrip(blobs: list[bytes]) -> None:
    wire = b"".join(b"".join(encode_content(b)) + FLUSH for b in blobs)
    packets, rest = decode_packets(wire)
    assert rest == b""
    out: list[bytes] = []
    cur = b""
    for p in packets:
        if p is None:
            out.append(cur)
            cur = b""
        else:
            cur += p
    assert out == blobs


def test_decode_packets_keeps_partial_tail() -> None:
    packets, rest = decode_packets(b"0005a0000000")
    assert packets == [b"a", None]
    assert rest == b"000"


def test_handshake_and_capabilities() -> None:
    assert handshake_reply(["git-filter-client", "version=2"]) == [
        "git-filter-server", "version=2"]
    assert handshake_reply(["git-filter-client", "version=3", "version=2"])[1] == "version=2"
    with pytest.raises(PktLineError):
        handshake_reply(["git-filter-client", "version=3"])
    with pytest.raises(PktLineError):
        handshake_reply(["hello"])
    assert capabilities_reply(["capability=clean", "capability=smudge", "capability=delay"]
                              ) == ["capability=clean", "capability=smudge"]
    assert capabilities_reply(["capability=smudge"]) == ["capability=smudge"]
    assert parse_keyvalues(["command=clean", "pathname=a=b", "junk"]) == {
        "command": "clean", "pathname": "a=b"}


class Echo:
    """A handler that upper-cases clean input, fails on 'bad', reads nothing on 'lazy'."""

    def __init__(self) -> None:
        self.done = 0

    def clean(self, pathname: str, content: Iterator[bytes]) -> bytes:
        if pathname == "lazy":
            return b"L"
        data = b"".join(content)
        if pathname == "bad":
            raise FilterFailed("refusing")
        if pathname == "crash":
            raise RuntimeError("boom")
        return data.upper()

    def smudge(self, pathname: str, content: Iterator[bytes]) -> list[bytes]:
        return [b"".join(content), b"!"]

    def request_done(self) -> None:
        self.done += 1


def request(command: str, path: str, data: bytes) -> bytes:
    return (encode_list([f"command={command}", f"pathname={path}", "ref=refs/heads/x"])
            + b"".join(encode_content(data)) + FLUSH)


def converse(*requests: bytes) -> tuple[list[list[bytes | None]], bytes, int, Echo]:
    wire = (encode_list(["git-filter-client", "version=2"])
            + encode_list(["capability=clean", "capability=smudge", "capability=delay"])
            + b"".join(requests))
    out, err = io.BytesIO(), io.BytesIO()
    handler = Echo()
    rc = serve(handler, io.BytesIO(wire), out, err)  # type: ignore[arg-type]
    packets, rest = decode_packets(out.getvalue())
    assert rest == b""
    # split into flush-terminated groups
    groups: list[list[bytes | None]] = [[]]
    for p in packets:
        groups[-1].append(p)
        if p is None:
            groups.append([])
    return groups[:-1], err.getvalue(), rc, handler


def test_serve_success_error_and_drain() -> None:
    big = b"x" * (MAX_PAYLOAD * 2 + 10)
    groups, err, rc, handler = converse(
        request("clean", "a", b"hello"),
        request("clean", "bad", big),
        request("clean", "lazy", big),
        request("smudge", "s", b""),
        request("clean", "crash", b"z"),
        request("clean", "after", b"ok"),
    )
    assert rc == 0
    texts = [[p.decode().rstrip("\n") if p is not None else None for p in g] for g in groups]
    assert texts[0] == ["git-filter-server", "version=2", None]
    assert texts[1] == ["capability=clean", "capability=smudge", None]
    # clean a: status, content, flush, empty list
    assert texts[2] == ["status=success", None]
    assert groups[3] == [b"HELLO", None]
    assert groups[4] == [None]
    # bad: error status only; the big content was drained so the next one parses
    assert texts[5] == ["status=error", None]
    # lazy handler that never read its content: drained by the loop
    assert texts[6] == ["status=success", None]
    assert groups[7] == [b"L", None]
    assert groups[8] == [None]
    # smudge of empty content
    assert texts[9] == ["status=success", None]
    assert groups[10] == [b"!", None]
    assert groups[11] == [None]
    assert texts[12] == ["status=error", None]
    assert groups[14] == [b"OK", None]
    assert b"bad: refusing" in err and b"crash: RuntimeError: boom" in err
    assert handler.done == 6


def test_serve_rejects_wrong_welcome() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    rc = serve(Echo(), io.BytesIO(encode_list(["nope"])), out, err)  # type: ignore[arg-type]
    assert rc == 1 and out.getvalue() == b"" and b"git-filter-client" in err.getvalue()


def test_reader_reports_truncation() -> None:
    r = PacketReader(io.BytesIO(b"0009ab"))
    with pytest.raises(PktLineError):
        r.read()
    with pytest.raises(EOFError):
        PacketReader(io.BytesIO(b"")).read()
