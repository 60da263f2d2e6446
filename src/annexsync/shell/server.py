"""The server side of the P2P protocol (``annexsync-shell p2pstdio``).

Theory of operation
-------------------
One :class:`P2PServer` serves one client session on a pair of descriptors
(stdin/stdout under ssh) for one repository, the way ``git-annex-shell p2pstdio``
does, so git-annex's client and ours both work against it:

* It speaks first (``AUTH-SUCCESS <our uuid>``), answers ``VERSION`` with
  ``min(theirs, 1)``, then handles one request at a time until EOF or a client
  ``ERROR``. A bad line gets ``ERROR`` and the session goes on (as in git-annex),
  except when framing is lost (over-long line, bad ``DATA``): then it ends.
* ``GET`` streams the object with ``sendfile`` and says ``VALID`` only if the file
  is unchanged afterwards; a missing object is ``DATA 0`` + ``INVALID``.
* ``PUT`` answers ``ALREADY-HAVE`` or ``PUT-FROM <size of .git/annex/tmp/KEY>``
  (resume), writes and hashes the bytes as they arrive, and only a file that
  verifies against the key is renamed into the store (``SUCCESS``). A cut
  connection keeps the partial file for the next ``PUT``; a wrong hash deletes it.
* ``LOCKCONTENT`` holds the shared content lock until ``UNLOCKCONTENT`` or EOF;
  ``REMOVE`` takes the exclusive lock without waiting (a locked copy is never
  dropped) and removes the object.
* Transfers are recorded in ``.git/annex/transfer`` from this side (a GET served is
  an *upload* to the client's UUID, a PUT a *download*), and the location log
  changes are journalled and committed to the git-annex branch in batches: when
  the client has been idle for half a second, and when the session ends.
* Read-only mode refuses PUT and REMOVE, append-only refuses REMOVE, with
  git-annex's error texts.

Every object path is checked to stay inside the repository's git directory and is
opened with ``O_NOFOLLOW``.
"""

from __future__ import annotations

import contextlib
import enum
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from annexsync.annex.backends import hasher_for_key
from annexsync.annex.keys import Key
from annexsync.annex.locks import Lock, LockBusy
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.errors import AnnexError
from annexsync.remotes.base import RemoteError
from annexsync.remotes.p2p import (
    CHUNK,
    MAX_VERSION,
    AlreadyHave,
    AuthSuccess,
    BadMessage,
    CheckPresent,
    Connect,
    Data,
    Decoder,
    Error,
    Failure,
    FdTransport,
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
    format_message,
)
from annexsync.transfers.info import (
    Direction,
    Transfer,
    TransferAlreadyRunning,
    TransferRecord,
)
from annexsync.transfers.locationlog import LocationRecorder

IDLE_COMMIT_SECONDS = 0.5


class Mode(enum.Enum):
    """What a client may do (git-annex's ServerMode)."""

    READ_ONLY = "readonly"
    APPEND_ONLY = "appendonly"
    READ_WRITE = "readwrite"


READONLY_ERROR = "this repository is read-only; write access denied"
APPENDONLY_ERROR = "this repository is append-only; removal denied"


class _Progress:
    """Meter for a served transfer: counts bytes into the transfer record."""

    def __init__(self, rec: TransferRecord | None) -> None:
        self.rec = rec
        self.done = 0
        self.ok = True

    def __call__(self, n: int) -> None:
        self.done += n
        if self.rec is not None:
            self.rec.progress(self.done)

    def failed(self) -> None:
        self.ok = False


class _SessionEnd(Exception):
    """The client went away or framing is lost: stop serving."""


def _inside(path: Path, top: Path) -> bool:
    try:
        return os.path.commonpath([os.path.realpath(path), top]) == str(top)
    except ValueError:
        return False


class P2PServer:
    """Serve one P2P session for ``repo`` to the client ``client_uuid``."""

    def __init__(self, repo: AnnexRepo, client_uuid: str, mode: Mode = Mode.READ_WRITE,
                 rfd: int = 0, wfd: int = 1) -> None:
        self.repo = repo
        self.uuid = repo.uuid
        self.client_uuid = client_uuid
        self.mode = mode
        self.t = FdTransport(rfd, wfd, "client")
        self.dec = Decoder()
        self.version = 0
        self.store = ObjectStore(repo.annex_dir, bare=repo.bare)
        self.git_top = Path(os.path.realpath(repo.git_dir))
        st = os.stat(self.git_top)
        self._identity = (st.st_dev, st.st_ino)
        self.recorder = LocationRecorder(repo, mode="commit")
        self.dirty = False
        self.content_changed = False

    # -- wire ----------------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        try:
            self.t.write(format_message(msg))
        except OSError as e:
            raise _SessionEnd(f"client went away ({e.strerror})") from None

    def _fill(self, timeout: float | None = None) -> bool:
        data = self.t.read(CHUNK, timeout)
        if data is None:
            return False
        if not data:
            raise _SessionEnd("end of input")
        self.dec.feed(data)
        return True

    def recv(self, *, idle_commit: bool = False) -> Message:
        """The next message; BadMessage is answered here and skipped."""
        while True:
            try:
                ev = self.dec.next_event()
            except BadMessage as e:
                self.send(Error(f"unknown command ({e})"))
                continue
            except ProtocolError as e:
                raise _SessionEnd(str(e)) from None
            if isinstance(ev, bytes):
                raise _SessionEnd("unexpected data")
            if ev is not None:
                return ev
            if idle_commit and self.dirty:
                if not self._fill(IDLE_COMMIT_SECONDS):
                    self.commit()
                continue
            self._fill()

    # -- session ---------------------------------------------------------------------------
    def serve(self) -> None:
        """Run the session to its end; commits the journal before returning."""
        try:
            self.send(AuthSuccess(self.uuid))
            while True:
                msg = self.recv(idle_commit=True)
                if isinstance(msg, Error):
                    break  # the client gave up; its state is unknown
                self.handle(msg)
        except _SessionEnd:
            pass
        finally:
            self.commit()
            self.t.close()

    def repo_still_there(self) -> bool:
        """False once the repository moved or vanished (a drive unmounted under us):
        from then on nothing may be written, or it would recreate it at the old path."""
        try:
            st = os.stat(self.git_top)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def handle(self, msg: Message) -> None:
        if not self.repo_still_there():
            raise _SessionEnd("the repository is gone")
        match msg:
            case Version(v):
                self.version = min(v, MAX_VERSION)
                self.send(Version(self.version))
            case CheckPresent(key):
                self.send(Success() if self.find(key) else Failure())
            case LockContent(key):
                self.lock_content(key)
            case Remove(key):
                self.remove(key)
            case Get(offset, af, key):
                self.get(offset, af, key)
            case Put(af, key):
                self.put(af, key)
            case Connect():
                self.send(Error("git service tunnelling is not supported; use git over ssh"))
            case NotifyChange():
                self.send(Error("change notification not available"))
            case _:
                self.send(Error("unexpected command"))

    # -- content ---------------------------------------------------------------------------
    def find(self, key: Key) -> Path | None:
        """The object of ``key`` if present: a regular file, inside the git directory."""
        for p in self.store.candidate_paths(key):
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and _inside(p, self.git_top):
                return p
        return None

    def lock_content(self, key: Key) -> None:
        lock: Lock | None = None
        if self.find(key) is not None:
            try:
                lock = self.store.lock_shared(key, blocking=False)
            except (LockBusy, OSError):
                lock = None
            if lock is not None and self.find(key) is None:
                lock.release()  # dropped while we were locking
                lock = None
        if lock is None:
            self.send(Failure())
            return
        try:
            self.send(Success())
            nxt = self.recv(idle_commit=True)
            if not isinstance(nxt, UnlockContent):
                self.send(Error("expected UNLOCKCONTENT"))
        finally:
            lock.release()

    def remove(self, key: Key) -> None:
        if self.mode is Mode.READ_ONLY:
            self.send(Error(READONLY_ERROR))
            return
        if self.mode is Mode.APPEND_ONLY:
            self.send(Error(APPENDONLY_ERROR))
            return
        if self.find(key) is None:
            self.send(Success())
            return
        try:
            lock = self.store.lock_exclusive(key, blocking=False)
        except (LockBusy, OSError):
            self.send(Failure())  # someone counts on this copy right now
            return
        try:
            self.store.remove(key, lock)
        finally:
            lock.release()
        self.log(key, present=False)
        self.send(Success())

    def get(self, offset: int, af: str | None, key: Key) -> None:
        path = self.find(key)
        fd = -1
        if path is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                fd = -1
        if fd < 0:
            self.send(Data(0))
            if self.version >= 1:
                self.send(Invalid())
            self.recv()  # the client's SUCCESS/FAILURE
            return
        try:
            before = os.fstat(fd)
            length = max(0, before.st_size - offset)
            with self._record(Direction.UPLOAD, key, af) as rec:
                self.send(Data(length))
                try:
                    self.t.send_file(fd, min(offset, before.st_size), length, rec)
                except RemoteError as e:
                    raise _SessionEnd(str(e)) from None
                except OSError as e:
                    raise _SessionEnd(f"client went away ({e.strerror})") from None
                if self.version >= 1:
                    self.send(Valid() if self._unchanged(path, before) else Invalid())
                reply = self.recv()
                if not isinstance(reply, Success):
                    rec.failed()
        finally:
            os.close(fd)

    @staticmethod
    def _unchanged(path: Path, before: os.stat_result) -> bool:
        try:
            now = os.lstat(path)
        except OSError:
            return False
        return (now.st_ino, now.st_size, now.st_mtime_ns) == (
            before.st_ino, before.st_size, before.st_mtime_ns)

    def _tmp_dir(self) -> Path:
        tmp = self.store.tmp_dir
        tmp.mkdir(parents=True, exist_ok=True)
        if tmp.is_symlink() or not _inside(tmp, self.git_top):
            raise AnnexError(f"{tmp} leaves the repository")
        return tmp

    def put(self, af: str | None, key: Key) -> None:
        if self.mode is Mode.READ_ONLY:
            self.send(Error(READONLY_ERROR))
            return
        if self.find(key) is not None:
            self.send(AlreadyHave())
            return
        try:
            tmp = self._tmp_dir() / key.key_file
            with self._record(Direction.DOWNLOAD, key, af) as rec:
                self._receive(key, tmp, rec)
        except TransferAlreadyRunning:
            self.send(Error(f"transfer of {key} already in progress"))
        except (OSError, AnnexError) as e:
            self.send(Error(f"cannot receive {key}: {e}"))

    def _receive(self, key: Key, tmp: Path, rec: _Progress) -> None:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            offset = os.fstat(fd).st_size
            if key.size is not None and offset > key.size:
                os.ftruncate(fd, 0)
                offset = 0
            hasher = hasher_for_key(key)
            if hasher is not None and offset:
                pos = 0
                while pos < offset:
                    chunk = os.pread(fd, min(CHUNK, offset - pos), pos)
                    if not chunk:
                        break
                    hasher.update(chunk)
                    pos += len(chunk)
            rec(offset)
            self.send(PutFrom(offset))
            msg = self.recv()
            if not isinstance(msg, Data):
                self.send(Error("expected DATA"))
                rec.failed()
                return
            if key.size is not None and offset + msg.length != key.size:
                rec.failed()
                raise _SessionEnd(f"client announced {msg.length} bytes from {offset} "
                                  f"for a key of {key.size} bytes")
            write_error: OSError | None = None
            pos = offset
            while self.dec.data_remaining:
                ev = self.dec.next_event()
                if ev is None:
                    try:
                        self._fill()
                    except _SessionEnd:
                        rec.failed()  # partial data stays in tmp for a resume
                        raise
                    continue
                assert isinstance(ev, bytes)
                if write_error is None:
                    try:
                        _pwrite_all(fd, ev, pos)
                    except OSError as e:
                        write_error = e  # keep reading to stay in step with the client
                if hasher is not None:
                    hasher.update(ev)
                pos += len(ev)
                rec(len(ev))
            valid = True
            if self.version >= 1:
                v = self.recv()
                valid = isinstance(v, Valid)
                if not isinstance(v, Valid | Invalid):
                    self.send(Error("expected VALID or INVALID"))
                    rec.failed()
                    return
            ok = write_error is None and (key.size is None or pos == key.size)
            if ok and hasher is not None:
                ok = hasher.hexdigest() == key.hash_digest
            elif ok and not valid:
                ok = False  # changed while sent, and no hash to vouch for it
            if not ok:
                if write_error is None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)  # wrong bytes are never resumed from
                rec.failed()
                self.send(Failure())
                return
            try:
                os.fsync(fd)
                self.store.move_in(key, tmp, durable=True)
            except (OSError, AnnexError):
                rec.failed()
                self.send(Failure())
                return
            self.log(key, present=True)
            self.send(Success())
        finally:
            os.close(fd)

    # -- bookkeeping ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _record(self, direction: Direction, key: Key, af: str | None) -> Iterator[_Progress]:
        """Record the transfer in .git/annex/transfer from this side while it runs.

        Raises TransferAlreadyRunning for a second download of the same key; a second
        upload of one key runs unrecorded (git-annex's alwaysUpload).
        """
        transfer = Transfer(direction, self.client_uuid, key)
        try:
            rec: TransferRecord | None = TransferRecord.begin(
                self.repo.annex_dir, transfer, af, time.time_ns())
        except TransferAlreadyRunning:
            if direction is Direction.DOWNLOAD:
                raise
            rec = None
        prog = _Progress(rec)
        try:
            yield prog
        except BaseException:
            prog.ok = False
            raise
        finally:
            if rec is not None:
                rec.finish(prog.ok)

    def log(self, key: Key, present: bool) -> None:
        self.recorder.record(key, self.uuid, present)
        self.dirty = True
        self.content_changed = True

    def commit(self) -> None:
        """Commit pending location log changes (one commit for many)."""
        if not self.dirty:
            return
        self.dirty = False
        if not self.repo_still_there():
            print(f"annexsync-shell: {self.repo.top} is gone; location log changes of "
                  "this session are lost (fsck there repairs them)", file=sys.stderr)
            return
        try:
            self.recorder.flush()
        except AnnexError as e:
            print(f"annexsync-shell: committing the git-annex branch: {e}", file=sys.stderr)
        if self.content_changed:
            self.content_changed = False
            _run_content_hook(self.repo)


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view = view[n:]
        pos += n


def _run_content_hook(repo: AnnexRepo) -> None:
    """``hooks/annex-content``, as git-annex-shell runs it after content changes."""
    hook = repo.git_dir / "hooks" / "annex-content"
    if os.access(hook, os.X_OK):
        with contextlib.suppress(OSError):
            subprocess.run([str(hook)], cwd=repo.top, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, timeout=300)


def serve_p2p(repo: AnnexRepo, client_uuid: str, mode: Mode) -> int:
    """Serve a p2pstdio session on stdin/stdout; the exit status."""
    try:
        P2PServer(repo, client_uuid, mode).serve()
    finally:
        repo.close()
    return 0
