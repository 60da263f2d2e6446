"""git's long-running filter process protocol: the pkt-line codec and the server loop.

Theory of operation
-------------------
git starts ``filter.annex.process`` once per git command and talks pkt-lines over its
stdin/stdout (gitattributes(5) "Long Running Filter Process"; protocol-common(5)):

* a pkt-line is four lower-case hex digits giving the total length (header included)
  and then the payload; ``0000`` is a *flush* packet; payloads are at most 65516 bytes;
  text packets end in ``\\n``, which the reader strips;
* handshake: git sends ``git-filter-client``, its ``version=N`` lines and a flush; we
  answer ``git-filter-server``, ``version=2``, flush; git sends ``capability=X``
  lines and a flush; we answer with the ones we support (``clean``, ``smudge``), flush;
* per file: git sends ``command=clean|smudge``, ``pathname=P`` (and maybe other
  ``key=value`` lines we ignore), flush, the content in packets, flush. Only after
  that flush may we answer: ``status=success``, flush, the output in packets, flush,
  and an empty list (flush) to keep the status; or ``status=error``, flush.

The codec at the top of this module is pure (bytes in, bytes out). :class:`PacketReader`
and :func:`serve` do the I/O. A :class:`FilterHandler` does the work: it receives the
content as an iterator of packets, *must not* write to stdout, and returns the output
as bytes or an iterable of byte chunks. The loop always drains the request's content
before answering, even when the handler fails, so the conversation stays in step; a
handler failure becomes ``status=error`` for that file, never a dead filter.

git waits for the handshake before it sends the first file, so this module imports
nothing beyond :mod:`annexsync.errors` (not even :mod:`typing`: the type names are for
type checkers only) and :func:`serve` answers the handshake before the handler does
any work; a handler should open the repository on the first request that needs it.
"""

from __future__ import annotations

import sys

from annexsync.errors import AnnexError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import BinaryIO, Protocol, TypeAlias

#: Largest payload of one pkt-line (65520 minus the 4-byte header).
MAX_PAYLOAD = 65516
FLUSH = b"0000"
CAPABILITIES = ("clean", "smudge")


class PktLineError(AnnexError):
    """The peer broke the pkt-line protocol (bad header, early end of stream)."""


# -------------------------------------------------------------------- pure codec


def encode_packet(payload: bytes) -> bytes:
    """One pkt-line carrying ``payload`` (1 to :data:`MAX_PAYLOAD` bytes)."""
    n = len(payload)
    if n == 0 or n > MAX_PAYLOAD:
        raise ValueError(f"pkt-line payload must be 1..{MAX_PAYLOAD} bytes, not {n}")
    return b"%04x" % (n + 4) + payload


def encode_text(line: str) -> bytes:
    """A text pkt-line: ``line`` plus the newline git expects."""
    return encode_packet(line.encode("utf-8", "surrogateescape") + b"\n")


def encode_list(lines: Iterable[str]) -> bytes:
    """Text lines followed by a flush packet."""
    return b"".join(encode_text(x) for x in lines) + FLUSH


def encode_content(data: bytes | memoryview) -> Iterator[bytes]:
    """``data`` split into pkt-lines (no flush); nothing for empty data."""
    view = memoryview(data)
    for i in range(0, len(view), MAX_PAYLOAD):
        chunk = view[i:i + MAX_PAYLOAD]
        yield b"%04x" % (len(chunk) + 4) + bytes(chunk)


def decode_length(header: bytes) -> int | None:
    """Payload length announced by a 4-byte header; None for a flush packet.

    Delimiter/response-end packets (``0001``/``0002``) and ``0003`` are protocol
    errors in the filter protocol; ``0004`` is an empty payload.
    """
    if len(header) != 4:
        raise PktLineError(f"truncated pkt-line header {header!r}")
    try:
        text = header.decode("ascii")
        n = int(text, 16)
    except (UnicodeDecodeError, ValueError):
        raise PktLineError(f"bad pkt-line header {header!r}") from None
    if not all(c in "0123456789abcdefABCDEF" for c in text):
        raise PktLineError(f"bad pkt-line header {header!r}")
    if n == 0:
        return None
    if n < 4:
        raise PktLineError(f"unexpected pkt-line {header!r} in the filter protocol")
    return n - 4


def decode_packets(data: bytes) -> tuple[list[bytes | None], bytes]:
    """Split ``data`` into packets (``None`` for a flush); return them and the rest."""
    out: list[bytes | None] = []
    pos = 0
    while len(data) - pos >= 4:
        n = decode_length(data[pos:pos + 4])
        if n is None:
            out.append(None)
            pos += 4
            continue
        if len(data) - pos - 4 < n:
            break
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out, data[pos:]


def text_of(payload: bytes) -> str:
    """A text packet's line without its trailing newline."""
    if payload.endswith(b"\n"):
        payload = payload[:-1]
    return payload.decode("utf-8", "surrogateescape")


def parse_keyvalues(lines: Iterable[str]) -> dict[str, str]:
    """``key=value`` lines (values may contain ``=``); later keys win."""
    out: dict[str, str] = {}
    for line in lines:
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def handshake_reply(welcome: list[str]) -> list[str]:
    """Our answer to git's welcome list, or PktLineError if it is not acceptable."""
    if not welcome or welcome[0] != "git-filter-client":
        raise PktLineError(f"expected git-filter-client, got {welcome[:1]!r}")
    versions = {v.partition("=")[2] for v in welcome[1:] if v.startswith("version=")}
    if "2" not in versions:
        raise PktLineError(f"git offers filter protocol versions {sorted(versions)}, not 2")
    return ["git-filter-server", "version=2"]


def capabilities_reply(offered: list[str], supported: Iterable[str] = CAPABILITIES
                       ) -> list[str]:
    """The capabilities we accept among git's ``capability=X`` lines."""
    offers = {x.partition("=")[2] for x in offered if x.startswith("capability=")}
    return [f"capability={c}" for c in supported if c in offers]


# ------------------------------------------------------------------------- I/O


class PacketReader:
    """Reads pkt-lines from a binary stream."""

    def __init__(self, stream: BinaryIO) -> None:
        self._s = stream

    def _exact(self, n: int) -> bytes:
        data = self._s.read(n)
        if data is None or len(data) != n:
            raise PktLineError("git closed the filter pipe in the middle of a packet")
        return data

    def read(self) -> bytes | None:
        """The next payload, or None for a flush. EOFError at a clean end of stream."""
        header = self._s.read(4)
        if not header:
            raise EOFError
        if len(header) < 4:
            header += self._exact(4 - len(header))
        n = decode_length(header)
        if n is None:
            return None
        return self._exact(n) if n else b""

    def read_list(self) -> list[str]:
        """Text packets up to the next flush."""
        lines: list[str] = []
        while (p := self.read()) is not None:
            lines.append(text_of(p))
        return lines

    def content(self) -> Content:
        return Content(self)


class Content:
    """The content packets of one request, as an iterator; :meth:`drain` skips the rest."""

    def __init__(self, reader: PacketReader) -> None:
        self._reader = reader
        self.done = False
        self.nbytes = 0

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.done:
            raise StopIteration
        p = self._reader.read()
        if p is None:
            self.done = True
            raise StopIteration
        self.nbytes += len(p)
        return p

    def drain(self) -> None:
        for _ in self:
            pass


if TYPE_CHECKING:  # (defined for type checkers only: typing costs ~7 ms to import)
    Output: TypeAlias = bytes | Iterable[bytes]

    class FilterHandler(Protocol):
        """What the filter does with each file; see the module docstring."""

        def clean(self, pathname: str, content: Iterator[bytes]) -> Output: ...

        def smudge(self, pathname: str, content: Iterator[bytes]) -> Output: ...

        def request_done(self) -> None:
            """Called after each answer has been written (flush caches, commit batches)."""
            ...


class FilterFailed(AnnexError):
    """The handler cannot filter this file; git is told ``status=error``."""


def _chunks(out: Output) -> Iterator[bytes]:
    if isinstance(out, (bytes, bytearray, memoryview)):
        yield from encode_content(out)
        return
    for piece in out:
        if piece:
            yield from encode_content(piece)


def serve(handler: FilterHandler, stdin: BinaryIO, stdout: BinaryIO,
          stderr: BinaryIO | None = None) -> int:
    """Run the protocol until git closes the pipe; return the exit status."""
    err = stderr or sys.stderr.buffer
    reader = PacketReader(stdin)

    def send(data: bytes) -> None:
        stdout.write(data)

    try:
        welcome = reader.read_list()
        send(encode_list(handshake_reply(welcome)))
        stdout.flush()
        caps = reader.read_list()
        send(encode_list(capabilities_reply(caps)))
        stdout.flush()
    except EOFError:
        return 0
    except PktLineError as e:
        err.write(f"annexsync filter-process: {e}\n".encode())
        err.flush()
        return 1
    while True:
        try:
            header = parse_keyvalues(reader.read_list())
        except EOFError:
            return 0
        command = header.get("command", "")
        pathname = header.get("pathname", "")
        content = reader.content()
        try:
            if command == "clean":
                out: Output = handler.clean(pathname, content)
            elif command == "smudge":
                out = handler.smudge(pathname, content)
            else:
                raise FilterFailed(f"unsupported filter command {command!r}")
            content.drain()
            chunks = _chunks(out)
            first = next(chunks, None)
        except (Exception, KeyboardInterrupt) as e:
            if isinstance(e, (KeyboardInterrupt, PktLineError, EOFError)):
                raise
            _report(err, pathname, e)
            content.drain()
            send(encode_list(["status=error"]))
            stdout.flush()
            _done(handler, err)
            continue
        # Small answers (pointers) go out in one write; big ones are streamed.
        pending = [encode_list(["status=success"])]
        size = len(pending[0])
        try:
            if first is not None:
                pending.append(first)
                size += len(first)
                for packet in chunks:
                    pending.append(packet)
                    size += len(packet)
                    if size >= 1 << 20:
                        send(b"".join(pending))
                        pending, size = [], 0
        except Exception as e:  # output failed half way: tell git the content is bad
            _report(err, pathname, e)
            pending.append(FLUSH + encode_list(["status=error"]))
        else:
            pending.append(FLUSH + FLUSH)
        send(b"".join(pending))
        stdout.flush()
        _done(handler, err)


def _done(handler: FilterHandler, err: BinaryIO) -> None:
    try:
        handler.request_done()
    except Exception as e:
        _report(err, "", e)


def _report(err: BinaryIO, pathname: str, e: BaseException) -> None:
    where = f"{pathname}: " if pathname else ""
    msg = str(e) if isinstance(e, AnnexError) else f"{type(e).__name__}: {e}"
    err.write(f"annexsync filter-process: {where}{msg}\n".encode("utf-8", "replace"))
    err.flush()
