"""The P2P protocol codec: exact wire forms, associated files, hostile input, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annexsync.annex.keys import Key
from annexsync.remotes.p2p import (
    MAX_LINE,
    AlreadyHave,
    Auth,
    AuthFailure,
    AuthSuccess,
    BadMessage,
    Changed,
    CheckPresent,
    Connect,
    ConnectDone,
    Data,
    Decoder,
    Error,
    Failure,
    Get,
    Invalid,
    LockContent,
    Message,
    NotifyChange,
    ProtocolError,
    Put,
    PutFrom,
    Remove,
    Success,
    UnlockContent,
    Valid,
    Version,
    decode_af,
    encode_af,
    format_message,
    parse_message,
)

KEY = Key.parse("SHA256E-s12--a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447.txt")
UUID = "2d0d8d87-92e6-44a7-bd9f-98da1deacaa2"


@pytest.mark.parametrize(("msg", "wire"), [
    (AuthSuccess(UUID), f"AUTH-SUCCESS {UUID}"),
    (Auth(UUID, "tok"), f"AUTH {UUID} tok"),
    (AuthFailure(), "AUTH-FAILURE"),
    (Version(1), "VERSION 1"),
    (CheckPresent(KEY), f"CHECKPRESENT {KEY}"),
    (LockContent(KEY), f"LOCKCONTENT {KEY}"),
    (UnlockContent(), "UNLOCKCONTENT"),
    (Remove(KEY), f"REMOVE {KEY}"),
    (Get(0, "hello.txt", KEY), f"GET 0 hello.txt {KEY}"),
    (Get(6, None, KEY), f"GET 6  {KEY}"),
    (Put("my file.txt", KEY), f"PUT my%file.txt {KEY}"),
    (PutFrom(0), "PUT-FROM 0"),
    (AlreadyHave(), "ALREADY-HAVE"),
    (Success(), "SUCCESS"),
    (Failure(), "FAILURE"),
    (Data(16), "DATA 16"),
    (Valid(), "VALID"),
    (Invalid(), "INVALID"),
    (Error("unknown command"), "ERROR unknown command"),
    (Connect("git-upload-pack"), "CONNECT git-upload-pack"),
    (ConnectDone(0), "CONNECTDONE 0"),
    (NotifyChange(), "NOTIFYCHANGE"),
    (Changed(("a" * 40, "b" * 40)), f"CHANGED {'a' * 40} {'b' * 40}"),
])
def test_wire_forms_match_the_reference_transcript(msg: Message, wire: str) -> None:
    assert format_message(msg) == wire.encode() + b"\n"
    # Put's file is sanitized on the way back (a lone % is an encoded space).
    expected = Put("my_file.txt", KEY) if isinstance(msg, Put) else msg
    assert parse_message(wire.encode()) == expected


def test_associated_file_encoding() -> None:
    assert encode_af("my file.txt") == "my%file.txt"
    assert encode_af("100%\tdone") == "100%%%done"
    assert encode_af(None) == "" and decode_af("") is None
    assert decode_af("100%%%done") == "100%_done"
    # What the reference's probe sent literally: "%2" is a lone % then "20".
    assert decode_af("my%20file.txt") == "my_20file.txt"
    assert decode_af("a\x01b\x7fc") == "a_b_c"
    with pytest.raises(BadMessage):
        decode_af("/etc/passwd")


@given(st.text(max_size=50))
def test_associated_file_encoding_is_one_field(af: str) -> None:
    enc = encode_af(af)
    assert not any(c.isspace() for c in enc)
    if af.startswith("/"):
        with pytest.raises(BadMessage):
            decode_af(enc)
        return
    # Without whitespace the round trip is exact (git-annex's encoding of whitespace is
    # lossy: two spaces become "%%", which reads back as "%").
    plain = "".join(c for c in af if not c.isspace() and not c < " "
                    and not "\x7f" <= c <= "\x9f")
    if plain and not plain.startswith("/"):
        assert decode_af(encode_af(plain)) == plain
    assert decode_af(encode_af("  ")) == "%"


@pytest.mark.parametrize("line", [
    b"DATA -1", b"DATA 01", b"DATA 99999999999999999999", b"DATA", b"DATA 1 2",
    b"GET -1 x " + str(KEY).encode(), b"GET 0 x", b"GET 0 x notakey",
    b"GET 0 /abs " + str(KEY).encode(),
    b"PUT x SHA256E-s12--zz", b"CHECKPRESENT ../../etc/passwd", b"CHECKPRESENT a--..",
    b"SUCCESS extra", b"BOGUS", b"", b"VERSION x", b"AUTH-SUCCESS bad/uuid",
    b"AUTH-SUCCESS " + b"a" * 200, b"CONNECT git-shell", b"CONNECTDONE 256",
    b"REMOVE SHA256E-s1--" + b"0" * 64 + b" x",
])
def test_malformed_lines_are_refused(line: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_message(line)


def test_format_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        format_message(Data(-1))
    with pytest.raises(ValueError):
        format_message(AuthSuccess("no spaces allowed"))
    # An error message cannot smuggle a second line.
    assert format_message(Error("a\nDATA 5")) == b"ERROR a DATA 5\n"


def test_decoder_frames_data_and_bounds_lines() -> None:
    d = Decoder()
    d.feed(b"DATA 5\nhel")
    assert d.next_event() == Data(5)
    assert d.next_event() == b"hel"
    assert d.next_event() is None
    d.feed(b"lo\nVALID\nSUC")
    assert d.next_event() == b"lo"
    # b"\n" after the payload belongs to nothing: the payload was exactly 5 bytes.
    with pytest.raises(BadMessage):
        d.next_event()  # the empty line
    assert d.next_event() == Valid()
    assert d.next_event() is None
    d.feed(b"CESS\n")
    assert d.next_event() == Success()

    d = Decoder(max_line=100)
    d.feed(b"x" * 99)
    assert d.next_event() is None
    d.feed(b"x")
    with pytest.raises(ProtocolError):
        d.next_event()


def test_payload_bytes_that_look_like_messages_are_data() -> None:
    d = Decoder()
    d.feed(b"DATA 8\nSUCCESS\nSUCCESS\n")
    assert d.next_event() == Data(8)
    assert d.next_event() == b"SUCCESS\n"
    assert d.next_event() == Success()


_keys = st.builds(
    lambda digest, ext: Key.parse(f"SHA256E-s{len(digest)}--{digest}{ext}"),
    st.text("0123456789abcdef", min_size=64, max_size=64),
    st.sampled_from(["", ".txt", ".tar.gz"]),
)
_numbers = st.integers(0, 2**63 - 1)
_files = st.one_of(st.none(), st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="%/"),
    min_size=1, max_size=20))
_messages = st.one_of(
    st.builds(Version, st.integers(0, 10)),
    st.builds(CheckPresent, _keys), st.builds(LockContent, _keys), st.builds(Remove, _keys),
    st.builds(Get, _numbers, _files, _keys), st.builds(Put, _files, _keys),
    st.builds(PutFrom, _numbers), st.just(Success()), st.just(Failure()),
    st.just(AlreadyHave()), st.just(Valid()), st.just(Invalid()), st.just(UnlockContent()),
    st.builds(Error, st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)),
)
_items = st.one_of(_messages, st.binary(max_size=300))


@settings(max_examples=150, deadline=None)
@given(st.lists(_items, max_size=12), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_round_trip_in_any_chunking(items: list[Message | bytes], cuts: list[int]) -> None:
    wire = bytearray()
    expected: list[Message | bytes] = []
    for item in items:
        if isinstance(item, bytes):
            wire += format_message(Data(len(item))) + item
            expected.append(Data(len(item)))
            if item:
                expected.append(item)
        else:
            wire += format_message(item)
            expected.append(item)
    d = Decoder()
    got: list[Message | bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        n = cuts[i % len(cuts)]
        d.feed(bytes(wire[pos : pos + n]))
        pos += n
        i += 1
        while (ev := d.next_event()) is not None:
            # Chunking splits one payload; consecutive chunks belong to the same DATA.
            if isinstance(ev, bytes) and got and isinstance(got[-1], bytes):
                got[-1] += ev
            else:
                got.append(ev)
    assert got == expected
    assert d.data_remaining == 0 and not d.in_line


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_on_random_bytes_only_raises_protocol_errors(data: bytes) -> None:
    d = Decoder(max_line=128)
    d.feed(data)
    for _ in range(1000):
        try:
            ev = d.next_event()
        except BadMessage:
            continue
        except ProtocolError:
            return
        if ev is None:
            return


def test_data_length_is_bounded_by_the_number_rule() -> None:
    assert parse_message(b"DATA 9223372036854775807") == Data(2**63 - 1)
    with pytest.raises(BadMessage):
        parse_message(b"DATA 9223372036854775808")
    assert MAX_LINE <= 65536
