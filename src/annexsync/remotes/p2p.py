"""git-annex's P2P protocol: a sans-I/O codec, a client session, and a Remote over ssh.

Theory of operation
-------------------
*Codec* (no I/O). Messages are ``\\n``-terminated lines of space-separated words;
``DATA n`` is followed by exactly ``n`` raw bytes. :func:`format_message` turns a
message object into bytes; :class:`Decoder` is fed bytes in any chunking and
yields message objects and, after a ``DATA`` header, payload chunks (``bytes``)
until the announced length is consumed. Everything the peer sends is hostile:
lines are bounded (:data:`MAX_LINE`), numbers are canonical non-negative decimals
below 2**63, keys go through :meth:`Key.parse`, UUIDs are short and printable,
associated files are sanitized as git-annex does and may not be absolute.

*Client session* (:class:`P2PSession`). Over a :class:`Transport` (the pipes of an
``ssh … git-annex-shell p2pstdio`` process, or any pair of descriptors), the server
speaks first (``AUTH-SUCCESS uuid``); we check the UUID and negotiate
``VERSION 1`` (VALID/INVALID after data). A session runs one request at a time.
While content is locked (``LOCKCONTENT``) the server reads nothing but
``UNLOCKCONTENT``, so a lock owns its session until it is released. Any
protocol violation, I/O error or abort in the middle of a request leaves the
session in an unknown state: it is closed and never reused.

*Remote* (:class:`P2PRemote`). Implements the Remote seam with a small pool of
sessions created on demand by a ``connect`` callable and reused across keys (one
long-lived ssh session for a whole ``get`` of many files; a second one only while a
lock is held or requests run concurrently). :func:`ssh_git_remote` builds one for a
git remote reached over ssh, running ``annexsync-shell`` or, when the other host only
has git-annex, ``git-annex-shell`` (same protocol) over the cached ssh connection.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import os
import queue
import re
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from annexsync.annex.backends import hasher_for_key
from annexsync.annex.keys import Key
from annexsync.errors import InvalidKeyError
from annexsync.remotes.base import (
    KeyNotPresent,
    Meter,
    RemoteError,
    RemoteInfo,
    RemoteUnavailable,
    Sink,
    TransferAborted,
)
from annexsync.remotes.ssh import SshConnections, SshLocation, last_line, parse_ssh_url

if TYPE_CHECKING:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.remotes.registry import RemoteSpec

MAX_LINE = 32768
"""Longest protocol line accepted from a peer, newline included."""

MAX_VERSION = 1
"""Highest protocol version spoken here (git-annex 10.2026 speaks up to 4; 1 is safe)."""

CHUNK = 1 << 20
_MAX_NUMBER = 2**63 - 1
_NUMBER_RE = re.compile(rb"0|[1-9][0-9]{0,18}")
_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_F_SETPIPE_SZ = 1031
_MAX_ERROR = 400  # bytes of a peer's ERROR message kept (it ends up in our messages)


class ProtocolError(RemoteError):
    """The peer sent something that is not the P2P protocol, or not what was expected."""


class BadMessage(ProtocolError):
    """A complete line that is not a valid message (unknown verb, bad field)."""


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True)
class Auth:
    uuid: str
    token: str


@dataclass(frozen=True)
class AuthSuccess:
    uuid: str


@dataclass(frozen=True)
class AuthFailure:
    pass


@dataclass(frozen=True)
class Version:
    version: int


@dataclass(frozen=True)
class Connect:
    service: str  # git-upload-pack | git-receive-pack


@dataclass(frozen=True)
class ConnectDone:
    exit_code: int


@dataclass(frozen=True)
class NotifyChange:
    pass


@dataclass(frozen=True)
class Changed:
    refs: tuple[str, ...]


@dataclass(frozen=True)
class CheckPresent:
    key: Key


@dataclass(frozen=True)
class LockContent:
    key: Key


@dataclass(frozen=True)
class UnlockContent:
    pass


@dataclass(frozen=True)
class Remove:
    key: Key


@dataclass(frozen=True)
class Get:
    offset: int
    af: str | None
    key: Key


@dataclass(frozen=True)
class Put:
    af: str | None
    key: Key


@dataclass(frozen=True)
class PutFrom:
    offset: int


@dataclass(frozen=True)
class AlreadyHave:
    pass


@dataclass(frozen=True)
class Success:
    pass


@dataclass(frozen=True)
class Failure:
    pass


@dataclass(frozen=True)
class Data:
    length: int


@dataclass(frozen=True)
class Valid:
    pass


@dataclass(frozen=True)
class Invalid:
    pass


@dataclass(frozen=True)
class Error:
    message: str


Message = (
    Auth | AuthSuccess | AuthFailure | Version | Connect | ConnectDone | NotifyChange
    | Changed | CheckPresent | LockContent | UnlockContent | Remove | Get | Put | PutFrom
    | AlreadyHave | Success | Failure | Data | Valid | Invalid | Error
)

_SERVICES = ("git-upload-pack", "git-receive-pack")


# -- fields ----------------------------------------------------------------------------


def encode_af(af: str | None) -> str:
    """The associated-file field: whitespace becomes ``%``, ``%`` becomes ``%%``."""
    if not af:
        return ""
    return "".join("%%" if c == "%" else "%" if c.isspace() else c for c in af)


def decode_af(field: str) -> str | None:
    """Decode an associated-file field as git-annex does; None for "no file".

    ``%%`` is ``%``, a lone ``%`` (an encoded space) becomes ``_``, control characters
    become ``_``. An absolute path is refused (BadMessage).
    """
    out: list[str] = []
    i = 0
    while i < len(field):
        c = field[i]
        if c == "%":
            if field[i + 1 : i + 2] == "%":
                out.append("%")
                i += 2
                continue
            out.append("_")
        elif c.isspace() or c < " " or "\x7f" <= c <= "\x9f":
            out.append("_")  # Haskell's isControl (category Cc), and stray whitespace
        else:
            out.append(c)
        i += 1
    af = "".join(out)
    if not af:
        return None
    if af.startswith("/"):
        raise BadMessage("absolute associated file")
    return af


def _number(word: bytes) -> int:
    if not _NUMBER_RE.fullmatch(word):
        raise BadMessage(f"bad number {word[:30]!r}")
    n = int(word)
    if n > _MAX_NUMBER:
        raise BadMessage("number too large")
    return n


def _uuid(word: bytes) -> str:
    text = word.decode("ascii", "replace")
    if not _UUID_RE.fullmatch(text):
        raise BadMessage("bad uuid")
    return text


def check_uuid(uuid: str) -> str:
    """Validate a UUID that will become part of a path or command line."""
    if not _UUID_RE.fullmatch(uuid):
        raise ValueError(f"invalid repository uuid {uuid[:60]!r}")
    return uuid


def _key(word: bytes) -> Key:
    try:
        return Key.parse(word)
    except InvalidKeyError as e:
        raise BadMessage(f"invalid key: {e}") from None


def _text(word: bytes) -> str:
    text = word.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


_NULLARY: dict[bytes, Message] = {
    b"AUTH-FAILURE": AuthFailure(),
    b"NOTIFYCHANGE": NotifyChange(),
    b"UNLOCKCONTENT": UnlockContent(),
    b"ALREADY-HAVE": AlreadyHave(),
    b"SUCCESS": Success(),
    b"FAILURE": Failure(),
    b"VALID": Valid(),
    b"INVALID": Invalid(),
}


def parse_message(line: bytes) -> Message:
    """Parse one line (without its newline). Raises :class:`BadMessage`."""
    if len(line) >= MAX_LINE:
        raise BadMessage("line too long")
    verb, sep, rest = line.partition(b" ")
    if verb in _NULLARY:
        if sep:
            raise BadMessage(f"{verb.decode()} takes no parameters")
        return _NULLARY[verb]
    if verb == b"ERROR":
        return Error(_text(rest[:_MAX_ERROR]))
    if not sep:
        raise BadMessage(f"unknown or incomplete message {_text(line[:40])!r}")
    words = rest.split(b" ")
    if verb in (b"GET", b"PUT"):
        nfields = 3 if verb == b"GET" else 2
        # The key is the last field; only it could contain a space (and keys don't).
        words = rest.split(b" ", nfields - 1)
    elif verb in (b"CHANGED", b"AUTH"):
        pass
    else:
        words = [rest]
    try:
        if verb == b"AUTH-SUCCESS":
            return AuthSuccess(_uuid(words[0]))
        if verb == b"VERSION":
            return Version(_number(words[0]))
        if verb == b"DATA":
            return Data(_number(words[0]))
        if verb == b"PUT-FROM":
            return PutFrom(_number(words[0]))
        if verb == b"CHECKPRESENT":
            return CheckPresent(_key(words[0]))
        if verb == b"LOCKCONTENT":
            return LockContent(_key(words[0]))
        if verb == b"REMOVE":
            return Remove(_key(words[0]))
        if verb == b"GET":
            if len(words) != 3:
                raise BadMessage("GET needs offset, file and key")
            return Get(_number(words[0]), decode_af(words[1].decode("utf-8", "surrogateescape")),
                       _key(words[2]))
        if verb == b"PUT":
            if len(words) != 2:
                raise BadMessage("PUT needs file and key")
            return Put(decode_af(words[0].decode("utf-8", "surrogateescape")), _key(words[1]))
        if verb == b"AUTH":
            if len(words) != 2:
                raise BadMessage("AUTH needs uuid and token")
            return Auth(_uuid(words[0]), _text(words[1]))
        if verb == b"CONNECT":
            service = words[0].decode("ascii", "replace")
            if service not in _SERVICES:
                raise BadMessage("unknown service")
            return Connect(service)
        if verb == b"CONNECTDONE":
            code = _number(words[0])
            if code > 255:
                raise BadMessage("bad exit code")
            return ConnectDone(code)
        if verb == b"CHANGED":
            return Changed(tuple(_text(w) for w in words if w))
    except UnicodeError:
        raise BadMessage("undecodable field") from None
    raise BadMessage(f"unknown message {_text(verb[:40])!r}")


def _num(n: int) -> str:
    if type(n) is not int or not 0 <= n <= _MAX_NUMBER:
        raise ValueError(f"number out of range: {n!r}")
    return str(n)


def format_message(msg: Message) -> bytes:
    """The wire form of a message, newline included."""
    match msg:
        case AuthSuccess(uuid):
            words = ["AUTH-SUCCESS", check_uuid(uuid)]
        case Auth(uuid, token):
            words = ["AUTH", check_uuid(uuid), token]
        case Version(v):
            words = ["VERSION", _num(v)]
        case Data(n):
            words = ["DATA", _num(n)]
        case PutFrom(n):
            words = ["PUT-FROM", _num(n)]
        case CheckPresent(k):
            words = ["CHECKPRESENT", str(k)]
        case LockContent(k):
            words = ["LOCKCONTENT", str(k)]
        case Remove(k):
            words = ["REMOVE", str(k)]
        case Get(offset, af, k):
            words = ["GET", _num(offset), encode_af(af), str(k)]
        case Put(af, k):
            words = ["PUT", encode_af(af), str(k)]
        case Connect(service):
            words = ["CONNECT", service]
        case ConnectDone(code):
            words = ["CONNECTDONE", _num(code)]
        case Changed(refs):
            words = ["CHANGED", *refs]
        case Error(message):
            words = ["ERROR", " ".join(message.split())]
        case _:
            for verb, value in _NULLARY.items():
                if value == msg:
                    return verb + b"\n"
            raise TypeError(f"not a P2P message: {msg!r}")
    line = " ".join(words).encode("utf-8", "surrogateescape")
    if b"\n" in line or len(line) >= MAX_LINE:
        raise ValueError(f"{words[0]} message cannot be sent (newline or too long)")
    return line + b"\n"


# -- decoder -------------------------------------------------------------------------------


class Decoder:
    """Incremental parser: feed bytes, take messages and payload chunks.

    After a :class:`Data` message the next ``length`` bytes come out as ``bytes``
    chunks (``data_remaining`` counts down); then lines again.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._segments: collections.deque[bytes] = collections.deque()
        self._line = bytearray()
        self.data_remaining = 0
        self.buffered = 0

    def feed(self, data: bytes) -> None:
        """Add bytes received from the peer."""
        if data:
            self._segments.append(bytes(data))
            self.buffered += len(data)

    def next_event(self) -> Message | bytes | None:
        """The next message or payload chunk, or None until more bytes are fed.

        Raises :class:`BadMessage` for a bad complete line (the stream can continue)
        and :class:`ProtocolError` for an over-long line (it cannot).
        """
        if self.data_remaining:
            if not self._segments:
                return None
            seg = self._segments[0]
            if len(seg) <= self.data_remaining:
                self._segments.popleft()
                chunk = seg
            else:
                chunk = seg[: self.data_remaining]
                self._segments[0] = seg[self.data_remaining :]
            self.data_remaining -= len(chunk)
            self.buffered -= len(chunk)
            return chunk
        while self._segments:
            seg = self._segments.popleft()
            nl = seg.find(b"\n")
            if nl < 0:
                self._line += seg
                self.buffered -= len(seg)
                if len(self._line) >= self.max_line:
                    raise ProtocolError("protocol line too long")
                continue
            self._line += seg[:nl]
            rest = seg[nl + 1 :]
            if rest:
                self._segments.appendleft(rest)
            self.buffered -= nl + 1
            line = bytes(self._line)
            self._line.clear()
            if len(line) >= self.max_line:
                raise ProtocolError("protocol line too long")
            msg = parse_message(line)
            if isinstance(msg, Data):
                self.data_remaining = msg.length
            return msg
        return None

    @property
    def in_line(self) -> bool:
        """True if part of a line has been received (EOF now would cut a message)."""
        return bool(self._line) or (not self.data_remaining and bool(self._segments))

    def skip_data(self) -> None:
        """Forget the rest of a payload (the caller will not read it)."""
        self.data_remaining = 0


# -- transports -------------------------------------------------------------------------


class Transport(Protocol):
    """A byte stream to the peer."""

    def read(self, n: int, timeout: float | None = None) -> bytes | None:
        """Up to ``n`` bytes; b"" at EOF; None if ``timeout`` passed with nothing."""
        ...

    def write(self, data: bytes) -> None:
        """Write all of ``data``."""
        ...

    def send_file(self, fd: int, offset: int, count: int, meter: Meter) -> None:
        """Send ``count`` bytes of the file ``fd`` from ``offset`` (calls ``meter``)."""
        ...

    def failure(self) -> str:
        """Why the stream ended (the process's last error line), for messages."""
        ...

    def alive(self) -> bool:
        """False if an idle stream has ended (an idle server never speaks first)."""
        ...

    def abort(self) -> None:
        """From another thread: make blocked reads and writes fail now."""
        ...

    def close(self) -> None: ...


class FdTransport:
    """A transport over two file descriptors (pipes, a socket); closes them on close()."""

    def __init__(self, rfd: int, wfd: int, name: str = "peer") -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.name = name
        self._closed = False
        with contextlib.suppress(OSError):
            fcntl.fcntl(rfd, _F_SETPIPE_SZ, CHUNK)
        with contextlib.suppress(OSError):
            fcntl.fcntl(wfd, _F_SETPIPE_SZ, CHUNK)

    def read(self, n: int, timeout: float | None = None) -> bytes | None:
        if timeout is not None:
            ready, _, _ = select.select([self.rfd], [], [], timeout)
            if not ready:
                return None
        try:
            return os.read(self.rfd, n)
        except ConnectionResetError:
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.wfd, view)
            view = view[n:]

    def send_file(self, fd: int, offset: int, count: int, meter: Meter) -> None:
        end = offset + count
        pos = offset
        use_sendfile = True
        while pos < end:
            want = min(CHUNK, end - pos)
            n = 0
            if use_sendfile:
                try:
                    n = os.sendfile(self.wfd, fd, pos, want)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        raise
                    use_sendfile = False
            if not use_sendfile:
                data = os.pread(fd, want, pos)
                if data:
                    self.write(data)
                n = len(data)
            if n == 0:
                raise RemoteError("file shrank while it was being sent")
            pos += n
            meter(n)

    def failure(self) -> str:
        return f"connection to {self.name} lost"

    def alive(self) -> bool:
        if self._closed:
            return False
        ready, _, _ = select.select([self.rfd], [], [], 0)
        return not ready

    def abort(self) -> None:
        # Only sockets can be woken up from another thread; pipes come from processes,
        # which ProcessTransport kills instead.
        for fd in {self.rfd, self.wfd}:
            try:
                dup = os.dup(fd)
            except OSError:
                continue
            try:
                sock = socket.socket(fileno=dup)
            except OSError:
                os.close(dup)
                continue
            with sock, contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in {self.rfd, self.wfd}:
            with contextlib.suppress(OSError):
                os.close(fd)


class ProcessTransport(FdTransport):
    """The stdin/stdout of a child process (``ssh … p2pstdio``); stderr kept for errors."""

    def __init__(self, argv: Sequence[str], name: str, env: dict[str, str] | None = None) -> None:
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, bufsize=0, start_new_session=True,
            )
        except OSError as e:
            raise RemoteUnavailable(f"cannot run {argv[0]}: {e.strerror}") from None
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        super().__init__(self.proc.stdout.fileno(), self.proc.stdin.fileno(), name)
        self._stderr = collections.deque[bytes](maxlen=64)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True,
                                       name=f"p2p-stderr-{name}")
        self._drain.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            self._stderr.append(data[-2048:])

    def stderr_text(self) -> bytes:
        return b"".join(self._stderr)

    def alive(self) -> bool:
        return self.proc.poll() is None and super().alive()

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def exit_status(self, wait: float = 2.0) -> int | None:
        try:
            return self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return None

    def failure(self) -> str:
        rc = self.exit_status()
        self._drain.join(timeout=1)
        err = self.stderr_text()
        why = last_line(err) if err.strip() else (f"exit status {rc}" if rc is not None
                                                  else "no error message")
        return f"connection to {self.name} lost: {why}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Closing both pipes ends the session even if the server is blocked writing.
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.join(timeout=1)
        if self.proc.stderr is not None:
            with contextlib.suppress(OSError):
                self.proc.stderr.close()


PIPELINE_MIN = 4 << 20
"""Payloads at least this big are read by a thread while the caller writes and hashes."""

_PIPELINE_DEPTH = 32  # chunks of up to CHUNK bytes in flight between the two threads


def pump(t: Transport, length: int, sink: Sink, meter: Meter,
         lost: Callable[[], RemoteError]) -> None:
    """Copy exactly ``length`` payload bytes from ``t`` to ``sink``, pipelined.

    A reader thread keeps the stream drained (so ssh never waits for our hashing and
    disk writes) while this thread writes to the sink and calls the meter. The
    reader never reads past the payload. An exception from the sink or the meter
    stops the reader; the caller must then discard the stream (it is mid-payload).
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(_PIPELINE_DEPTH)
    stop = threading.Event()

    def put(item: bytes | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        left = length
        try:
            while left and not stop.is_set():
                data = t.read(min(CHUNK, left))
                if not data:
                    put(lost())
                    return
                left -= len(data)
                if not put(data):
                    return
            put(None)
        except BaseException as e:  # handed to the consumer, re-raised there
            put(e)

    th = threading.Thread(target=reader, daemon=True, name="p2p-reader")
    th.start()
    done = False
    try:
        while True:
            item = chunks.get()
            if item is None:
                done = True
                return
            if isinstance(item, BaseException):
                raise item
            sink.write(item)
            meter(len(item))
    finally:
        stop.set()
        if not done:
            t.abort()  # the reader may be blocked in a read; the stream is lost anyway
        th.join(timeout=5)


# -- client session ---------------------------------------------------------------------


class P2PSession:
    """One client session (see the module docstring). Not thread-safe: one user at a time."""

    def __init__(self, transport: Transport, name: str) -> None:
        self.t = transport
        self.name = name
        self.dec = Decoder()
        self.server_uuid: str | None = None
        self.version = 0
        self.broken = False
        self.locked = False
        self.aborted = False

    def abort(self) -> None:
        """Stop the request running in another thread (it raises TransferAborted)."""
        self.aborted = True
        self.broken = True
        self.t.abort()

    def _lost(self, detail: str = "") -> RemoteError:
        self.broken = True
        if self.aborted:
            return TransferAborted("transfer aborted")
        return RemoteUnavailable(self.t.failure() + detail)

    # -- plumbing ------------------------------------------------------------------
    def _send(self, msg: Message) -> None:
        try:
            self.t.write(format_message(msg))
        except OSError as e:
            raise self._lost() from e

    def _fill(self, timeout: float | None = None) -> bool:
        """Read more bytes into the decoder; False on timeout. Raises on EOF."""
        try:
            data = self.t.read(CHUNK, timeout)
        except OSError as e:
            raise self._lost(f" ({e.strerror})") from e
        if data is None:
            return False
        if not data:
            raise self._lost()
        self.dec.feed(data)
        return True

    def _recv(self) -> Message:
        while True:
            try:
                ev = self.dec.next_event()
            except ProtocolError as e:
                self.broken = True
                raise type(e)(f"{self.name}: {e}") from None
            if ev is None:
                self._fill()
                continue
            if isinstance(ev, bytes):  # pragma: no cover - callers consume payloads
                self.broken = True
                raise ProtocolError(f"{self.name}: unexpected data")
            return ev

    def _fail(self, expected: str, got: Message) -> ProtocolError:
        """The server sent something else: tell it, and give up on this session."""
        self.broken = True
        with contextlib.suppress(RemoteError, ValueError):
            self._send(Error(f"expected {expected}"))
        if isinstance(got, Error):
            return ProtocolError(f"{self.name}: {got.message}")
        return ProtocolError(f"{self.name}: expected {expected}, got {type(got).__name__}")

    def _expect_success(self, what: str) -> bool:
        reply = self._recv()
        if isinstance(reply, Success):
            return True
        if isinstance(reply, Failure):
            return False
        raise self._fail("SUCCESS or FAILURE", reply)

    # -- protocol ----------------------------------------------------------------------
    def start(self, expected_uuid: str | None) -> None:
        """Read the server's AUTH-SUCCESS, check its UUID and negotiate the version."""
        try:
            first = self._recv()
        except BadMessage as e:
            self.broken = True
            raise ProtocolError(f"{self.name}: not a P2P server ({e})") from None
        if isinstance(first, AuthFailure):
            self.broken = True
            raise RemoteUnavailable(f"{self.name}: authentication failed")
        if not isinstance(first, AuthSuccess):
            raise self._fail("AUTH-SUCCESS", first)
        if expected_uuid and first.uuid != expected_uuid:
            self.broken = True
            raise RemoteError(f"{self.name}: expected repository UUID {expected_uuid} "
                              f"but found {first.uuid}")
        self.server_uuid = first.uuid
        self._send(Version(MAX_VERSION))
        reply = self._recv()
        if isinstance(reply, Version):
            if reply.version > MAX_VERSION:
                raise self._fail(f"VERSION <= {MAX_VERSION}", reply)
            self.version = reply.version
        elif isinstance(reply, Error):
            self.version = 0  # a server older than VERSION
        else:
            raise self._fail("VERSION", reply)

    def check_present(self, key: Key) -> bool:
        self._send(CheckPresent(key))
        reply = self._recv()
        if isinstance(reply, Success):
            return True
        if isinstance(reply, Failure):
            return False
        if isinstance(reply, Error):
            raise RemoteError(f"{self.name}: checking {key}: {reply.message}")
        raise self._fail("SUCCESS or FAILURE", reply)

    def lock_content(self, key: Key) -> bool:
        """LOCKCONTENT; True when locked (call :meth:`unlock_content` later)."""
        self._send(LockContent(key))
        reply = self._recv()
        if isinstance(reply, Success):
            self.locked = True
            return True
        if isinstance(reply, Failure | Error):
            return False
        raise self._fail("SUCCESS or FAILURE", reply)

    def unlock_content(self) -> None:
        if self.locked:
            self.locked = False
            self._send(UnlockContent())

    def remove(self, key: Key) -> bool:
        self._send(Remove(key))
        reply = self._recv()
        if isinstance(reply, Error):
            raise RemoteError(f"{self.name}: removing {key}: {reply.message}")
        if isinstance(reply, Success):
            return True
        if isinstance(reply, Failure):
            return False
        raise self._fail("SUCCESS or FAILURE", reply)

    def get(self, key: Key, sink: Sink, offset: int, meter: Meter,
            af: str | None = None) -> None:
        """GET from ``offset``; bytes go to ``sink``. Raises KeyNotPresent and friends."""
        if offset < 0 or (key.size is not None and offset > key.size):
            raise RemoteError(f"bad resume offset {offset} for {key}")
        self._send(Get(offset, af, key))
        reply = self._recv()
        if isinstance(reply, Error):
            raise RemoteError(f"{self.name}: {key}: {reply.message}")
        if not isinstance(reply, Data):
            raise self._fail("DATA", reply)
        length = reply.length
        if key.size is not None and offset + length != key.size and length != 0:
            # Refuse before reading: the peer announces more (or less) than the key holds.
            self.broken = True
            raise ProtocolError(f"{self.name}: sent {length} bytes from offset {offset} "
                                f"for a key of {key.size} bytes")
        try:
            self._receive_payload(sink, meter)
        except BaseException:
            self.broken = True
            raise
        valid = True
        if self.version >= 1:
            v = self._recv()
            if isinstance(v, Invalid):
                valid = False
            elif not isinstance(v, Valid):
                raise self._fail("VALID or INVALID", v)
        if length == 0 and not valid:
            self._send(Failure())
            raise KeyNotPresent(f"{self.name} does not have {key}")
        complete = key.size is None or offset + length == key.size
        # INVALID: the file changed while it was sent. Only a hash can vouch for it.
        ok = complete and (valid or hasher_for_key(key) is not None)
        self._send(Success() if ok else Failure())
        if not complete:
            raise RemoteError(f"{self.name}: sent incomplete content of {key}")
        if not ok:
            raise RemoteError(f"{self.name}: {key} changed while it was being sent")

    def _receive_payload(self, sink: Sink, meter: Meter) -> None:
        # What the decoder already holds first, then the rest straight from the stream.
        while self.dec.data_remaining:
            ev = self.dec.next_event()
            if ev is None:
                break
            assert isinstance(ev, bytes)
            sink.write(ev)
            meter(len(ev))
        left = self.dec.data_remaining
        if not left:
            return
        if left < PIPELINE_MIN:
            while self.dec.data_remaining:
                ev = self.dec.next_event()
                if ev is None:
                    self._fill()
                    continue
                assert isinstance(ev, bytes)
                sink.write(ev)
                meter(len(ev))
            return
        self.dec.skip_data()
        pump(self.t, left, sink, meter, self._lost)

    def put(self, key: Key, src: Path, meter: Meter, af: str | None = None) -> None:
        """PUT the content of ``src``; returns when the server has stored (or had) it."""
        fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            size = st.st_size
            if key.size is not None and size != key.size:
                raise RemoteError(f"{src}: size {size} does not match {key}")
            self._send(Put(af, key))
            reply = self._recv()
            if isinstance(reply, AlreadyHave):
                return
            if isinstance(reply, Error):
                raise RemoteError(f"{self.name}: storing {key}: {reply.message}")
            if not isinstance(reply, PutFrom):
                raise self._fail("PUT-FROM or ALREADY-HAVE", reply)
            offset = reply.offset
            if offset > size:
                raise self._fail(f"PUT-FROM <= {size}", reply)
            self._send(Data(size - offset))
            try:
                self.t.send_file(fd, offset, size - offset, meter)
            except OSError as e:
                raise self._lost() from e
            except BaseException:
                self.broken = True
                raise
            if self.version >= 1:
                after = os.fstat(fd)
                unchanged = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
                self._send(Valid() if unchanged else Invalid())
            if not self._expect_success("PUT"):
                raise RemoteError(f"{self.name} failed to store {key} "
                                  "(verification failed or disk full there)")
        finally:
            os.close(fd)

    def close(self) -> None:
        """End the session (the server sees EOF and exits)."""
        self.broken = True
        self.t.close()


# -- the Remote ---------------------------------------------------------------------------


class P2PRemote:
    """A git remote served by ``p2pstdio`` (see the module docstring)."""

    def __init__(self, info: RemoteInfo, connect: Callable[[], P2PSession],
                 max_idle: int = 2, on_close: Callable[[], None] | None = None) -> None:
        self.info = info
        self._connect = connect
        self._on_close = on_close
        self._idle: list[P2PSession] = []
        self._active: set[P2PSession] = set()
        self._mutex = threading.Lock()
        self._max_idle = max_idle
        self._closed = False

    @contextlib.contextmanager
    def session(self) -> Iterator[P2PSession]:
        """A session for one request: an idle one, or a new one. Broken ones are dropped."""
        with self._mutex:
            if self._closed:
                raise RemoteError(f"{self.info.name}: remote is closed")
            s = self._idle.pop() if self._idle else None
        if s is not None and not s.t.alive():
            s.close()
            s = None
        if s is None:
            s = self._connect()
        with self._mutex:
            self._active.add(s)
        try:
            yield s
        except BaseException as e:
            # A clean refusal (KeyNotPresent...) leaves the session usable.
            if s.broken or s.locked or not isinstance(e, RemoteError):
                with self._mutex:
                    self._active.discard(s)
                s.close()
            else:
                self._release(s)
            raise
        self._release(s)

    def _release(self, s: P2PSession) -> None:
        with self._mutex:
            self._active.discard(s)
        if s.broken or s.locked:
            s.close()
            return
        with self._mutex:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(s)
                return
        s.close()

    def available(self) -> bool:
        """Can a new session be started now (host up, repository there)?

        Always a fresh session, since an idle one may outlive its repository (an
        unmounted drive over there); it is kept for the next request.
        """
        try:
            s = self._connect()
        except RemoteError:
            with self._mutex:
                idle, self._idle = self._idle, []
            for old in idle:
                old.close()
            return False
        self._release(s)
        return True

    def check_present(self, key: Key) -> bool:
        with self.session() as s:
            return s.check_present(key)

    def retrieve(self, key: Key, sink: Sink, offset: int, meter: Meter) -> None:
        with self.session() as s:
            s.get(key, sink, offset, meter)

    def store(self, key: Key, src: Path, meter: Meter) -> None:
        with self.session() as s:
            s.put(key, src, meter)

    def remove(self, key: Key) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        with self.session() as s:
            if not s.remove(key):
                raise RemoteError(f"{self.info.name}: could not remove {key} "
                                  "(it is locked by another repository, or in use)")

    @contextlib.contextmanager
    def lock_content(self, key: Key) -> Iterator[bool]:
        with self.session() as s:
            locked = s.lock_content(key)
            try:
                yield locked
            finally:
                if locked and not s.broken:
                    # The unlock is best effort: closing the session unlocks as well.
                    try:
                        s.unlock_content()
                    except RemoteError:
                        s.broken = True

    def abort_transfers(self) -> None:
        """Stop running requests now (the transfer layer's stall watchdog calls this)."""
        with self._mutex:
            active = [s for s in self._active if not s.locked]
        for s in active:
            s.abort()

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
        for s in idle:
            s.close()
        if self._on_close is not None:
            self._on_close()


# -- over ssh -----------------------------------------------------------------------------

SHELLS = ("annexsync-shell", "git-annex-shell")
"""Programs tried on the other host, in order, when none is configured."""

_NOT_FOUND = 127


def p2pstdio_command(shell: str, directory: str, client_uuid: str,
                     remote_uuid: str | None) -> list[str]:
    """The words of the remote command (``git-annex-shell 'p2pstdio' DIR UUID --uuid R``)."""
    words = [shell, "p2pstdio", directory, check_uuid(client_uuid)]
    if remote_uuid:
        words += ["--uuid", check_uuid(remote_uuid)]
    return words


class SshP2PConnector:
    """Makes :class:`P2PSession` s to one ssh remote (callable; see :func:`ssh_git_remote`)."""

    def __init__(self, loc: SshLocation, conns: SshConnections, client_uuid: str,
                 remote_uuid: str | None, name: str, shell: str | None = None) -> None:
        self.loc = loc
        self.conns = conns
        self.client_uuid = check_uuid(client_uuid)
        self.remote_uuid = check_uuid(remote_uuid) if remote_uuid else None
        self.name = name
        self.shells: list[str] = [shell] if shell else list(SHELLS)
        self._master_checked = 0.0

    def _argv(self, shell: str) -> list[str]:
        words = p2pstdio_command(shell, self.loc.annex_shell_dir, self.client_uuid,
                                 self.remote_uuid)
        # Words are quoted for the remote shell; the shell name may carry a path.
        return self.conns.ssh_argv(self.loc, words)

    def __call__(self) -> P2PSession:
        if time.monotonic() - self._master_checked > 5:
            self.conns.ensure_master(self.loc)
            self._master_checked = time.monotonic()
        last: RemoteError | None = None
        for shell in list(self.shells):
            t = ProcessTransport(self._argv(shell), self.name)
            s = P2PSession(t, self.name)
            try:
                s.start(self.remote_uuid)
            except RemoteUnavailable as e:
                s.close()
                if t.exit_status(0) == _NOT_FOUND and len(self.shells) > 1:
                    self.shells.remove(shell)  # not installed there; remember
                    last = e
                    continue
                self._master_checked = 0.0
                raise
            except BaseException:
                s.close()
                raise
            if len(self.shells) > 1:
                self.shells = [shell]
            if self.remote_uuid is None:
                self.remote_uuid = s.server_uuid
            return s
        assert last is not None
        raise RemoteUnavailable(f"{self.name}: neither {' nor '.join(SHELLS)} found there "
                                f"({last})")


def ssh_configlist(conns: SshConnections, loc: SshLocation,
                   shell: str = "git-annex-shell") -> dict[str, str]:
    """``configlist`` on the other host: its ``annex.uuid`` and friends."""
    argv = conns.ssh_argv(loc, [shell, "configlist", loc.annex_shell_dir])
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RemoteUnavailable(f"ssh to {loc.destination}: {e}") from None
    if proc.returncode != 0:
        raise RemoteUnavailable(f"{loc.url()}: configlist failed: {last_line(proc.stderr)}")
    out: dict[str, str] = {}
    for line in proc.stdout[:65536].decode("utf-8", "replace").splitlines():
        name, eq, value = line.partition("=")
        if eq and re.fullmatch(r"[a-z0-9.-]+", name):
            out[name] = value
    return out


def ssh_git_remote(info: RemoteInfo, client_uuid: str, conns: SshConnections,
                   shell: str | None = None, own_connections: bool = False) -> P2PRemote:
    """A :class:`P2PRemote` for a git remote whose URL (``info.url``) is ssh.

    ``shell`` is the program on the other host (``remote.NAME.annex-shell``); by
    default ``annexsync-shell`` is tried, then ``git-annex-shell``. With
    ``own_connections`` the remote's :meth:`~P2PRemote.close` also stops the host's
    ssh master when no other process uses it (git-annex does so after each command).
    """
    if not info.url:
        raise RemoteError(f"{info.name}: no URL")
    loc = parse_ssh_url(info.url)
    connector = SshP2PConnector(loc, conns, client_uuid, info.uuid or None, info.name, shell)

    def stop_master() -> None:
        conns.stop_master(loc.destination, loc.port)
        conns.release()

    return P2PRemote(info, connector, on_close=stop_master if own_connections else None)


def ssh_remote_factory(spec: RemoteSpec, repo: AnnexRepo) -> P2PRemote:
    """The registry's factory for git remotes whose URL is ssh.

    Uses ``remote.NAME.annex-shell`` (git-annex's setting) when set, and the
    repository's cached ssh connections with ``remote.NAME.annex-ssh-options``.
    """
    conns = SshConnections.for_repo(repo.git_dir, repo.config, remote=spec.name)
    shell = spec.git_config.get("annex-shell") or None
    return ssh_git_remote(spec.info(kind="git", supports_locking=True), repo.uuid, conns,
                          shell=shell, own_connections=True)


def discover_ssh_uuid(repo: AnnexRepo, name: str, url: str, shell: str | None = None,
                      cache: bool = True) -> str | None:
    """The ``annex.uuid`` of an ssh remote (``configlist``), cached in
    ``remote.NAME.annex-uuid`` as git-annex does; None if it has none or is unreachable."""
    from annexsync.git.config import set_config

    conns = SshConnections.for_repo(repo.git_dir, repo.config, remote=name)
    try:
        loc = parse_ssh_url(url)
        found = None
        for candidate in ([shell] if shell else list(SHELLS)):
            try:
                found = ssh_configlist(conns, loc, candidate).get("annex.uuid") or None
                break
            except RemoteUnavailable:
                continue
    except ValueError:
        return None
    finally:
        conns.release()
    if found and cache:
        set_config(repo.git, f"remote.{name}.annex-uuid", check_uuid(found))
    return found
