"""Transfer information files and locks, exactly as git-annex keeps them.

Theory of operation
-------------------
A running transfer is announced in ``.git/annex/transfer/<direction>/<uuid>/``,
where ``<uuid>`` is the *other* repository (``/`` removed) and the file name is the
key file name:

* ``lck.<keyfile>``: an empty file holding an exclusive, non-blocking fcntl lock for
  as long as the transfer runs. Failing to take it means the same transfer is already
  running (here or in git-annex): we refuse with "transfer already in progress".
  Downloads also lock ``download/lck/lck.<keyfile>`` first, as current git-annex
  does, so the same key is never downloaded twice at once from different remotes.
* ``<keyfile>``: the info file. Line 1 is ``<started>[ <bytes>]`` (POSIX seconds
  with the fraction's trailing zeros dropped, then ``s``), line 2 the associated
  file (may be empty). It is rewritten when progress moved by at least 1% of the
  key's size (100 KiB when the size is unknown).
* At the end the info file, then the lock file are removed, then the lock released.
  A failure leaves the info (with the bytes reached) in
  ``failed/<direction>/<uuid>/<keyfile>``; a success removes any such record.

Observers (``info``, the assistant's status) list info files whose lock is held,
asking the kernel (``F_OFD_GETLK`` sees POSIX and OFD locks alike); files whose lock
is free are stale and are removed after taking the lock, as git-annex does.

The format functions are pure; :class:`TransferRecord` owns the files of one
running transfer.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from annexsync.annex.keys import Key
from annexsync.annex.locks import Lock, LockBusy, lock_file, lock_holder
from annexsync.annex.logs import Timestamp
from annexsync.errors import AnnexError, InvalidKeyError

__all__ = [
    "Direction",
    "Transfer",
    "TransferAlreadyRunning",
    "TransferInfo",
    "TransferRecord",
    "failed_transfers",
    "format_transfer_info",
    "parse_transfer_info",
    "transfers_in_progress",
]


class Direction(StrEnum):
    """Which way content moves, seen from the repository keeping the record."""

    UPLOAD = "upload"
    DOWNLOAD = "download"


@dataclass(frozen=True, slots=True)
class Transfer:
    """Identifies a transfer: direction, the other repository's UUID, the key."""

    direction: Direction
    uuid: str
    key: Key

    def _dir(self, annex_dir: Path) -> Path:
        return annex_dir / "transfer" / self.direction.value / self.uuid.replace("/", "")

    def info_path(self, annex_dir: Path) -> Path:
        return self._dir(annex_dir) / self.key.key_file

    def lock_path(self, annex_dir: Path) -> Path:
        return self._dir(annex_dir) / ("lck." + self.key.key_file)

    def key_lock_path(self, annex_dir: Path) -> Path:
        """The per-key lock every download also takes (any remote)."""
        return annex_dir / "transfer" / "download" / "lck" / ("lck." + self.key.key_file)

    def failed_path(self, annex_dir: Path) -> Path:
        return (annex_dir / "transfer" / "failed" / self.direction.value
                / self.uuid.replace("/", "") / self.key.key_file)


@dataclass(frozen=True, slots=True)
class TransferInfo:
    """What an info file says: when the transfer started, how far it got, for which file."""

    started: Timestamp | None
    bytes_complete: int | None = None
    associated_file: str | None = None


def format_transfer_info(info: TransferInfo) -> bytes:
    """The info file content: ``<started>[ <bytes>]\\n<file>\\n``."""
    first = info.started.format() if info.started is not None else ""
    if info.bytes_complete is not None:
        first += f" {info.bytes_complete}"
    af = info.associated_file or ""
    return (first + "\n" + af + "\n").encode("utf-8", "surrogateescape")


def parse_transfer_info(data: bytes) -> TransferInfo | None:
    """Parse an info file; None when line 1 is not what git-annex writes."""
    text = data.decode("utf-8", "surrogateescape")
    first, _, rest = text.partition("\n")
    bits = first.split(" ")
    try:
        started = Timestamp.parse(bits[0]) if bits[0] else None
    except ValueError:
        return None
    if started is None and len(bits) == 1:
        return None
    nbytes: int | None = None
    if len(bits) > 1:
        if not bits[1].isdigit():
            return None
        nbytes = int(bits[1])
    if rest.endswith("\n"):
        rest = rest[:-1]
    return TransferInfo(started, nbytes, rest or None)


class TransferAlreadyRunning(AnnexError):
    """The transfer lock is held by another process (or thread)."""

    def __init__(self) -> None:
        super().__init__("transfer already in progress, or unable to take transfer lock")


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def makedirs_within(base: Path, directory: Path) -> None:
    """Create ``directory`` and its parents, but only below an existing ``base``.

    ``base`` is an annex directory, possibly another repository's on a removable
    drive: if the drive went away, creating it again would plant a fake repository
    in the empty mount point, so a missing ``base`` raises FileNotFoundError.
    """
    rel = directory.relative_to(base)
    cur = base
    for part in rel.parts:
        cur = cur / part
        try:
            os.mkdir(cur)
        except FileExistsError:
            pass


def _lock_sane(path: Path, base: Path) -> Lock:
    """Take the lock on ``path``; make sure the file we locked is still the one there."""
    for _ in range(3):
        try:
            lk = lock_file(path, exclusive=True, blocking=False)
        except FileNotFoundError:
            makedirs_within(base, path.parent)
            continue
        except LockBusy:
            raise TransferAlreadyRunning() from None
        try:
            st = os.stat(path)
            fst = os.fstat(lk.fd)
        except FileNotFoundError:
            lk.release()
            continue  # removed by a finishing transfer between open and lock
        if (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev):
            return lk
        lk.release()
    raise TransferAlreadyRunning()


class TransferRecord:
    """The lock and info files of one running transfer (see the module docstring).

    Use :meth:`begin`, then :meth:`progress` as bytes move, then :meth:`finish`.
    """

    #: A deferred info file is written once the transfer has run this long.
    DEFER_SECONDS = 0.2

    def __init__(self, annex_dir: Path, transfer: Transfer, info: TransferInfo,
                 locks: list[Lock], *, info_written: bool = True) -> None:
        self.annex_dir = annex_dir
        self.transfer = transfer
        self.info = info
        self._locks = locks
        self._info_written = info_written
        self._started = time.monotonic()
        self._written = 0
        size = transfer.key.size
        self._mindelta = size // 100 if size is not None else 100 * 1024
        self.bytes_complete = 0

    @classmethod
    def begin(cls, annex_dir: Path, transfer: Transfer, associated_file: str | None,
              now_ns: int, *, key_lock: bool | None = None,
              defer_info: bool = False) -> TransferRecord:
        """Lock the transfer and write its info file.

        Raises :class:`TransferAlreadyRunning` when the lock is held elsewhere.
        ``key_lock`` (default: for downloads) also takes the per-key download lock.
        ``defer_info``: write the info file only if the transfer is still running after
        :attr:`DEFER_SECONDS` (small files finish before anyone could look, and
        creating and deleting the file costs more than moving their bytes). The lock,
        which is what keeps a second process from running the same transfer, is
        always taken at once.
        """
        if key_lock is None:
            key_lock = transfer.direction is Direction.DOWNLOAD
        locks: list[Lock] = []
        try:
            if key_lock:
                locks.append(_lock_sane(transfer.key_lock_path(annex_dir), annex_dir))
            locks.append(_lock_sane(transfer.lock_path(annex_dir), annex_dir))
            info = TransferInfo(Timestamp.from_ns(now_ns), None, associated_file)
            if not defer_info:
                _write(transfer.info_path(annex_dir), format_transfer_info(info))
        except BaseException:
            for lk in reversed(locks):
                _unlink(lk.path)
                lk.release()
            raise
        return cls(annex_dir, transfer, info, locks, info_written=not defer_info)

    def progress(self, bytes_complete: int) -> None:
        """Record progress; rewrites the info file only after a 1% step."""
        self.bytes_complete = bytes_complete
        if not self._info_written:
            if time.monotonic() - self._started < self.DEFER_SECONDS:
                return
            self._info_written = True
            self._written = -self._mindelta  # write now
        if bytes_complete - self._written >= self._mindelta and bytes_complete != self._written:
            self._written = bytes_complete
            info = TransferInfo(self.info.started, bytes_complete, self.info.associated_file)
            try:
                _write(self.transfer.info_path(self.annex_dir), format_transfer_info(info))
            except OSError:
                pass  # progress display only: never fail a transfer for it

    def finish(self, success: bool) -> None:
        """Remove the info and lock files and release the locks; record a failure."""
        t = self.transfer
        if self._info_written:
            _unlink(t.info_path(self.annex_dir))
        for lk in reversed(self._locks):
            _unlink(lk.path)
            lk.release()
        self._locks = []
        failed = t.failed_path(self.annex_dir)
        if success:
            _unlink(failed)
        else:
            info = TransferInfo(self.info.started, self.bytes_complete,
                                self.info.associated_file)
            try:
                makedirs_within(self.annex_dir, failed.parent)
                _write(failed, format_transfer_info(info))
            except OSError:
                pass

    def __enter__(self) -> TransferRecord:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if self._locks:
            self.finish(exc_type is None)


def _parse_name(direction: str, uuid: str, name: str) -> Transfer | None:
    if name.startswith("lck."):
        return None
    try:
        return Transfer(Direction(direction), uuid, Key.from_key_file(name))
    except (InvalidKeyError, ValueError):
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def transfers_in_progress(annex_dir: Path, *, cleanup_stale: bool = True
                          ) -> list[tuple[Transfer, TransferInfo]]:
    """Transfers whose lock is held right now, with their info (any process)."""
    out: list[tuple[Transfer, TransferInfo]] = []
    base = annex_dir / "transfer"
    for direction in ("download", "upload"):
        for uuid in sorted(_listdir(base / direction)):
            if uuid == "lck":
                continue
            udir = base / direction / uuid
            for name in sorted(_listdir(udir)):
                t = _parse_name(direction, uuid, name)
                if t is None:
                    continue
                lck = t.lock_path(annex_dir)
                try:
                    held = lock_holder(lck) is not None
                except OSError:
                    held = False
                if not held:
                    if cleanup_stale:
                        _remove_stale(t, annex_dir)
                    continue
                try:
                    info = parse_transfer_info((udir / name).read_bytes())
                except OSError:
                    continue
                if info is not None:
                    out.append((t, info))
    return out


def _remove_stale(t: Transfer, annex_dir: Path) -> None:
    lck = t.lock_path(annex_dir)
    try:
        lk = lock_file(lck, exclusive=True, blocking=False, create=False)
    except FileNotFoundError:
        _unlink(t.info_path(annex_dir))
        return
    except OSError as e:
        if isinstance(e, LockBusy) or e.errno in (errno.EACCES, errno.EAGAIN, errno.EROFS):
            return
        raise
    try:
        _unlink(t.info_path(annex_dir))
        _unlink(lck)
    finally:
        lk.release()


def failed_transfers(annex_dir: Path, uuid: str | None = None
                     ) -> list[tuple[Transfer, TransferInfo]]:
    """Recorded failed transfers (optionally only those with ``uuid``)."""
    out: list[tuple[Transfer, TransferInfo]] = []
    base = annex_dir / "transfer" / "failed"
    for direction in ("download", "upload"):
        uuids = [uuid.replace("/", "")] if uuid else sorted(_listdir(base / direction))
        for u in uuids:
            for name in sorted(_listdir(base / direction / u)):
                t = _parse_name(direction, u, name)
                if t is None:
                    continue
                try:
                    info = parse_transfer_info((base / direction / u / name).read_bytes())
                except OSError:
                    continue
                if info is not None:
                    out.append((t, info))
    return out
