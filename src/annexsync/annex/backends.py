"""Key/value backends: turning file content into keys, and checking content against keys.

A backend is a name plus, for hash backends, a hasher factory. :data:`BACKENDS`
holds every backend this process can compute: the hashlib ones always, BLAKE3 and
XXH3 when the optional ``blake3`` / ``xxhash`` packages are importable. Keys of
other backends (SKEIN, BLAKE2BP, external ``X*``...) can still be stored and moved;
they just cannot be generated or verified here.

Hashing reads a file once, with ``readinto`` into one preallocated buffer, so the
cost is the hash function's and not Python's: no per-block ``bytes`` objects, and
hashlib drops the GIL while it digests a block.
"""

from __future__ import annotations

import functools
import hashlib
import os
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from annexsync.annex.keys import Key, key_extension, sanitize_key_name
from annexsync.errors import AnnexError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Backend",
    "FileChangedError",
    "Hasher",
    "get_backend",
    "hash_file",
    "hasher_for_key",
    "verify_file",
]

DEFAULT_BACKEND = "SHA256E"


class Hasher(Protocol):
    """The part of the hashlib interface that hashing needs."""

    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class FileChangedError(AnnexError):
    """The file changed size while it was being hashed."""


@dataclass(frozen=True, slots=True)
class Backend:
    """A git-annex key/value backend that this process can compute."""

    name: str
    is_hash: bool
    has_extension: bool
    factory: Callable[[], Hasher] | None = None

    def new_hasher(self) -> Hasher:
        """A fresh incremental hasher for this backend (hash backends only)."""
        if self.factory is None:
            raise AnnexError(f"backend {self.name} does not hash content")
        return self.factory()

    def key_from_digest(
        self,
        hexdigest: str,
        size: int,
        filename_for_ext: str | bytes | None,
        max_length: int = 4,
        max_extensions: int = 2,
    ) -> Key:
        """The key of content with this digest and size; ``*E`` backends add the
        extension of ``filename_for_ext`` (see :func:`key_extension`)."""
        if not self.is_hash:
            raise AnnexError(f"backend {self.name} does not make keys from digests")
        name = hexdigest
        if self.has_extension and filename_for_ext:
            name += key_extension(filename_for_ext, max_length, max_extensions)
        return Key(backend=self.name, name=name, size=size)


def _registry() -> dict[str, Backend]:
    factories: dict[str, Callable[[], Hasher]] = {
        "SHA256": hashlib.sha256,
        "SHA512": hashlib.sha512,
        "SHA384": hashlib.sha384,
        "SHA224": hashlib.sha224,
        "SHA3_256": hashlib.sha3_256,
        "SHA3_512": hashlib.sha3_512,
        "SHA3_384": hashlib.sha3_384,
        "SHA3_224": hashlib.sha3_224,
        "BLAKE2B256": functools.partial(hashlib.blake2b, digest_size=32),
        "BLAKE2B512": functools.partial(hashlib.blake2b, digest_size=64),
        "BLAKE2B160": functools.partial(hashlib.blake2b, digest_size=20),
        "BLAKE2B224": functools.partial(hashlib.blake2b, digest_size=28),
        "BLAKE2B384": functools.partial(hashlib.blake2b, digest_size=48),
        "BLAKE2S256": functools.partial(hashlib.blake2s, digest_size=32),
        "BLAKE2S160": functools.partial(hashlib.blake2s, digest_size=20),
        "BLAKE2S224": functools.partial(hashlib.blake2s, digest_size=28),
    }
    try:
        import blake3  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        factories["BLAKE3_256"] = blake3.blake3
    try:
        import xxhash  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        factories["XXH3"] = xxhash.xxh3_64
    # Not for security here: they only name content, as in git-annex.
    factories["SHA1"] = functools.partial(hashlib.sha1, usedforsecurity=False)
    factories["MD5"] = functools.partial(hashlib.md5, usedforsecurity=False)

    registry: dict[str, Backend] = {}
    for name, factory in factories.items():
        registry[name + "E"] = Backend(name + "E", True, True, factory)
        registry[name] = Backend(name, True, False, factory)
    registry["WORM"] = Backend("WORM", False, False)
    return registry


#: Every backend that can generate keys here, by name (default first).
BACKENDS: dict[str, Backend] = _registry()


def get_backend(name: str) -> Backend:
    """The backend called ``name``; AnnexError if it is unknown or unavailable here."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise AnnexError(f"unknown backend {name}; known: {' '.join(BACKENDS)}")


def hasher_for_key(key: Key) -> Hasher | None:
    """A fresh hasher to verify content of ``key`` incrementally, or None if it cannot
    be verified here (WORM, URL, chunk keys, backends we cannot compute).

    Compare the result's ``hexdigest()`` with ``key.hash_digest`` (and the byte count
    with ``key.size``).
    """
    if key.is_chunk or key.hash_digest is None:
        return None
    backend = BACKENDS.get(key.backend)
    if backend is None or not backend.is_hash:
        return None
    return backend.new_hasher()


def _open_regular(path: str | os.PathLike[str]) -> tuple[int, os.stat_result]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AnnexError(f"{os.fspath(path)}: not a regular file")
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


THREADED_READ = 16 << 20
"""Files from this size are read by a second thread while they are hashed."""


def hash_fd(fd: int, hasher: Hasher, *, size: int | None = None,
            buf: bytearray | None = None) -> int:
    """Feed ``fd`` from its current offset to ``hasher``; the number of bytes read.

    ``buf`` (1 MiB if not given) is the read buffer. A file of at least
    :data:`THREADED_READ` bytes (by ``size``) is read by a second thread while it is
    hashed: copying out of the page cache costs about a fifth of SHA-256, and both
    release the GIL, so a big file then costs the hash alone.
    """
    if size is not None and size >= THREADED_READ:
        return _hash_with_reader(fd, hasher)
    view = memoryview(buf if buf is not None else bytearray(1 << 20))
    total = 0
    with open(fd, "rb", buffering=0, closefd=False) as f:
        while n := f.readinto(view):
            hasher.update(view[:n])
            total += n
    return total


def _hash_with_reader(fd: int, hasher: Hasher) -> int:
    free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    for _ in range(4):
        free.put(bytearray(1 << 20))
    stop = threading.Event()

    def reader() -> None:
        try:
            with open(fd, "rb", buffering=0, closefd=False) as fh:
                while not stop.is_set():
                    b = free.get()
                    n = fh.readinto(b) or 0
                    full.put((b, n))
                    if not n:
                        return
        except BaseException as e:  # re-raised by the hashing thread
            full.put(e)

    t = threading.Thread(target=reader, daemon=True, name="hash-read")
    t.start()
    total = 0
    try:
        while True:
            item = full.get()
            if isinstance(item, BaseException):
                raise item
            b, n = item
            if not n:
                break
            hasher.update(memoryview(b)[:n])
            total += n
            free.put(b)
    finally:
        stop.set()
        free.put(bytearray(0))  # wakes the reader if it waits for a buffer
        t.join()
    return total


def hash_file(
    path: str | os.PathLike[str],
    backend: Backend | str = DEFAULT_BACKEND,
    *,
    relpath_for_worm: str | bytes | None = None,
    filename_for_ext: str | bytes | None = None,
    max_length: int = 4,
    max_extensions: int = 2,
    bufsize: int = 1 << 20,
) -> tuple[Key, os.stat_result]:
    """Compute the key of a file in one pass; also return its fstat from before reading.

    ``*E`` backends take the extension from ``filename_for_ext`` (default: the
    basename of ``path``). WORM keys need ``relpath_for_worm``, the file's path
    relative to the work tree top, and read no content. Raises
    :class:`FileChangedError` if the file's size changed while it was read.
    """
    if isinstance(backend, str):
        backend = get_backend(backend)
    fd, st = _open_regular(path)
    try:
        if not backend.is_hash:
            if relpath_for_worm is None:
                raise AnnexError(f"{backend.name} keys need the file's repository path")
            mtime = st.st_mtime_ns // 1_000_000_000
            key = Key(backend.name, sanitize_key_name(relpath_for_worm), st.st_size, mtime)
            return key, st
        hasher = backend.new_hasher()
        total = hash_fd(fd, hasher, size=st.st_size, buf=bytearray(bufsize))
    finally:
        os.close(fd)
    if total != st.st_size:
        raise FileChangedError(f"{os.fspath(path)}: changed while it was being hashed")
    if filename_for_ext is None:
        filename_for_ext = os.path.basename(os.fsencode(path))
    key = backend.key_from_digest(
        hasher.hexdigest(), total, filename_for_ext, max_length, max_extensions
    )
    return key, st


def verify_file(path: str | os.PathLike[str], key: Key, *, bufsize: int = 1 << 20) -> bool:
    """True if the file's content matches ``key``.

    A size mismatch is False without reading. Keys that cannot be verified here
    (WORM, URL, chunks, backends we cannot compute) are True once the size matches.
    OSError (missing file, I/O error) propagates: it is not a mismatch.
    """
    fd, st = _open_regular(path)
    try:
        if key.size is not None and not key.is_chunk and st.st_size != key.size:
            return False
        hasher = hasher_for_key(key)
        if hasher is None:
            return True
        total = hash_fd(fd, hasher, size=st.st_size, buf=bytearray(bufsize))
    finally:
        os.close(fd)
    return (key.size is None or total == key.size) and hasher.hexdigest() == key.hash_digest
