"""Copying content between local files at disk speed while hashing what was written.

Theory of operation
-------------------
The bytes that matter are the ones that land in *our* temp file, so that is what is
hashed: a remote that changes its file while we copy cannot slip unverified bytes
past us. Three strategies, fastest first:

1. *Reflink* (``FICLONE``) when the filesystem supports it and the whole file is
   wanted: the copy is free, the hash is one read of the clone.
2. ``copy_file_range`` in large chunks (the kernel moves the data, no user-space
   copy), with a second thread hashing each chunk of the destination right after
   it is written (still in the page cache). Copy and hash overlap, so the wall time
   is about max(copy, hash) instead of their sum.
3. ``read``/``write`` through one buffer, hashing the buffer (small files, other
   filesystems, or when a bandwidth limit wants small steady chunks).

On resume the existing prefix of the destination is hashed first. The meter is
called after every chunk with the number of bytes moved; it may sleep (bandwidth
limit) or raise (stall, cancel), which stops the copy with the partial file kept.

:func:`start_writeback` (``sync_file_range(SYNC_FILE_RANGE_WRITE)``) lets a writer
that receives a big file piece by piece (the ssh sink in :mod:`.runner`) start the
disk early, so the ``fsync`` before the content enters the store waits only for
the tail. The kernel copy here does not use it: measured side by side it did not
help (the copy is CPU-bound on a loaded machine, and the fsync after it is short).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import queue
import threading
from collections.abc import Callable

from annexsync.annex.backends import Hasher

FICLONE = 0x40049409
SMALL = 1 << 20
CHUNK = 16 << 20
_BUF = 1 << 20
_FALLBACK_ERRNOS = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                    errno.ENOTSUP, errno.EBADF, errno.EPERM, errno.ETXTBSY}


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range: Callable[[int, int, int, int], int] | None = None
_sync_file_range_known = False


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``fd[offset:offset+length]`` to disk, without waiting (best effort)."""
    global _sync_file_range, _sync_file_range_known
    if not _sync_file_range_known:
        _sync_file_range_known = True
        try:
            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            fn.restype = ctypes.c_int
            _sync_file_range = fn
        except (AttributeError, OSError):
            _sync_file_range = None
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # errors: fsync reports


def hash_prefix(fd: int, length: int, hasher: Hasher | None) -> None:
    """Feed the first ``length`` bytes of ``fd`` to ``hasher`` (resume)."""
    if hasher is None or length <= 0:
        return
    buf = bytearray(_BUF)
    view = memoryview(buf)
    pos = 0
    while pos < length:
        n = os.preadv(fd, [view[: min(_BUF, length - pos)]], pos)
        if n <= 0:
            raise OSError(errno.EIO, "partial file shrank while it was being hashed")
        hasher.update(view[:n])
        pos += n


def _copy_rw(src: int, dst: int, start: int, end: int | None, hasher: Hasher | None,
             meter: Callable[[int], None], chunk: int) -> int:
    buf = bytearray(min(chunk, _BUF) if chunk < _BUF else _BUF)
    view = memoryview(buf)
    pos = start
    step = min(chunk, len(buf))
    while end is None or pos < end:
        want = step if end is None else min(step, end - pos)
        n = os.preadv(src, [view[:want]], pos)
        if n == 0:
            break
        data = view[:n]
        w = 0
        while w < n:
            w += os.pwrite(dst, data[w:], pos + w)
        if hasher is not None:
            hasher.update(data)
        pos += n
        meter(n)
    return pos


class _Unsupported(Exception):
    """copy_file_range cannot copy between these files (nothing was copied)."""


def _copy_cfr(src: int, dst: int, start: int, end: int, hasher: Hasher | None,
              meter: Callable[[int], None], chunk: int, writeback: bool = True) -> int:
    """copy_file_range with a hashing thread chasing the writer; each chunk's writeback
    to disk starts at once, so the final fsync finds little left to do."""
    todo: queue.Queue[tuple[int, int] | None] = queue.Queue()
    failure: list[BaseException] = []

    def hash_worker() -> None:
        buf = bytearray(_BUF)
        view = memoryview(buf)
        try:
            while (item := todo.get()) is not None:
                off, length = item
                done = 0
                while done < length:
                    n = os.preadv(dst, [view[: min(_BUF, length - done)]], off + done)
                    if n <= 0:
                        raise OSError(errno.EIO, "short read of the copied data")
                    assert hasher is not None
                    hasher.update(view[:n])
                    done += n
        except BaseException as e:  # reported by the copying thread
            failure.append(e)
            while todo.get() is not None:
                pass

    worker = threading.Thread(target=hash_worker, daemon=True) if hasher else None
    if worker is not None:
        worker.start()
    pos = start
    try:
        while pos < end:
            try:
                n = os.copy_file_range(src, dst, min(chunk, end - pos), pos, pos)
            except OSError as e:
                if pos == start and e.errno in _FALLBACK_ERRNOS:
                    raise _Unsupported() from e
                raise
            if n == 0:
                break
            if worker is not None:
                todo.put((pos, n))
            if writeback:
                start_writeback(dst, pos, n)
            pos += n
            meter(n)
            if failure:
                break
    finally:
        if worker is not None:
            todo.put(None)
            worker.join()
    if failure:
        raise failure[0]
    return pos


def _try_reflink(src: int, dst: int) -> bool:
    try:
        fcntl.ioctl(dst, FICLONE, src)
        return True
    except OSError as e:
        if e.errno in _FALLBACK_ERRNOS or e.errno == errno.ENOTTY:
            return False
        raise


def copy_verify(src: int, dst: int, *, start: int, size: int | None, hasher: Hasher | None,
                meter: Callable[[int], None], chunk: int = CHUNK,
                allow_fast: bool = True) -> int:
    """Copy ``src[start:]`` to ``dst`` at the same offset, hashing everything in ``dst``.

    ``dst[:start]`` must already hold the earlier part (it is hashed first).
    ``size`` is the expected total (None: copy to the end of ``src``). Returns the
    resulting length of ``dst``. ``allow_fast`` False forces read/write (e.g. under
    a bandwidth limit, with ``chunk`` small).
    """
    if size is None:
        size = os.fstat(src).st_size
    fast = allow_fast and size - start >= SMALL
    if fast and start == 0 and _try_reflink(src, dst):
        length = os.fstat(dst).st_size
        hash_prefix(dst, length, hasher)
        meter(length)
        return length
    hash_prefix(dst, start, hasher)
    if fast:
        try:
            pos = _copy_cfr(src, dst, start, size, hasher, meter, chunk)
        except _Unsupported:
            pass  # nothing copied or hashed past ``start``: fall back below
        else:
            if pos >= size:
                # A source longer than the key's size: copy the rest so the size
                # check rejects it rather than silently truncating.
                return _copy_rw(src, dst, pos, None, hasher, meter, _BUF)
            return pos
    return _copy_rw(src, dst, start, None, hasher, meter, chunk)
