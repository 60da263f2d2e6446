"""git-annex keys: parsing, formatting, and the file names derived from them.

A key names one piece of content. Its serialization is
``BACKEND[-sSIZE][-mMTIME][-SCHUNKSIZE-CCHUNKNUM]--NAME``; everything a repository
stores about content (object paths, symlink targets, pointer files, branch log
names) is derived from that string by the pure functions in this module.

Keys arrive from untrusted places (remotes, git trees, pointer files), and they
become file names, so every :class:`Key` is validated when it is built: a ``Key``
object that exists is safe to turn into a path. Validation is stricter than
git-annex's own parser where git-annex never *generates* what we refuse
(whitespace and control characters, non-canonical numbers, hash names that are not
the backend's hex digest), and the same where it matters for interoperability (the
64-byte extension limit of ``*E`` keys).

Text model: names are ``str``; bytes that are not valid UTF-8 (from non-UTF-8 file
names) are carried as lone surrogates (``surrogateescape``, what ``os.fsdecode``
does on POSIX), so ``str -> bytes`` is always ``_enc``.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import struct
from dataclasses import dataclass, field, replace

from annexsync.errors import InvalidKeyError

__all__ = [
    "HASH_DIGEST_LENGTHS",
    "MAX_EXTENSION_BYTES",
    "Key",
    "key_extension",
    "parse_pointer",
    "parse_symlink_target",
    "pointer_content",
    "sanitize_key_name",
    "symlink_target",
]

#: Hex digest length of every hash backend git-annex knows (the ``E`` variants
#: have the same digest, followed by an extension).
HASH_DIGEST_LENGTHS: dict[str, int] = {
    **{f"SHA{bits}": bits // 4 for bits in (224, 256, 384, 512)},
    **{f"SHA3_{bits}": bits // 4 for bits in (224, 256, 384, 512)},
    **{f"SKEIN{bits}": bits // 4 for bits in (256, 512)},
    **{f"BLAKE2B{bits}": bits // 4 for bits in (160, 224, 256, 384, 512)},
    "BLAKE2BP512": 128,
    **{f"BLAKE2S{bits}": bits // 4 for bits in (160, 224, 256)},
    **{f"BLAKE2SP{bits}": bits // 4 for bits in (224, 256)},
    "BLAKE3_256": 64,
    "XXH3": 16,
    "SHA1": 40,
    "MD5": 32,
}

#: git-annex refuses ``*E`` keys whose extension (from the first ``.``) is longer.
MAX_EXTENSION_BYTES = 64

# Numbers above this cannot be sizes or times; refusing them keeps keys canonical
# and bounded (git-annex itself uses unbounded Integers).
_MAX_NUMBER = 2**63 - 1

_KEY_RE = re.compile(
    r"(?P<backend>[^-]+)"
    r"(?:-s(?P<size>[0-9]+))?"
    r"(?:-m(?P<mtime>[0-9]+))?"
    r"(?:-S(?P<chunk_size>[0-9]+))?"
    r"(?:-C(?P<chunk_num>[0-9]+))?"
    r"--(?P<name>.*)",
    re.DOTALL,
)
_BACKEND_RE = re.compile(r"[A-Z0-9_]+|X[A-Za-z0-9]+")
# Space and ASCII control characters: git-annex never generates them in a key,
# and they would break the line- and space-separated formats keys travel in.
_BAD_CHAR_RE = re.compile(r"[\x00-\x20\x7f]")
_HEX_RE = re.compile(r"[0-9a-f]+")
# GITBUNDLE ends in E but is not an extension-carrying backend.
_NOT_EXT_BACKENDS = frozenset({"GITBUNDLE"})

_MIXED_ALPHABET = "0123456789zqjxkmvwgpfZQJXKMVWGPF"
_KEY_FILE_ESCAPES = str.maketrans({"&": "&a", "%": "&s", ":": "&c", "/": "%"})
_KEY_FILE_UNESCAPES = {"a": "&", "s": "%", "c": ":"}
_ANNEX_OBJECTS = "/annex/objects/"
_MAX_POINTER_BYTES = 32768


def _enc(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _show(s: str) -> str:
    """A key for an error message: quoted, escaped, and short."""
    r = repr(s)
    return r if len(r) <= 120 else r[:100] + "…" + r[-10:]


def _hash_base(backend: str) -> str | None:
    """The digest table entry of a hash backend (``SHA256E`` -> ``SHA256``), else None."""
    if backend in HASH_DIGEST_LENGTHS:
        return backend
    if backend.endswith("E") and backend[:-1] in HASH_DIGEST_LENGTHS:
        return backend[:-1]
    return None


@dataclass(frozen=True, slots=True)
class Key:
    """A validated git-annex key; construction raises :class:`InvalidKeyError`."""

    backend: str
    name: str
    size: int | None = None
    mtime: int | None = None
    chunk_size: int | None = None
    chunk_num: int | None = None
    # Derived strings, computed once: a get or add of many files asks for each several
    # times (object paths, lock names, log names). Not part of equality or hashing.
    _str: str = field(default="", init=False, repr=False, compare=False)
    _file: str = field(default="", init=False, repr=False, compare=False)
    _mixed: str = field(default="", init=False, repr=False, compare=False)
    _lower: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)

    def __str__(self) -> str:
        s = self._str
        if not s:
            parts = [self.backend]
            if self.size is not None:
                parts.append(f"-s{self.size}")
            if self.mtime is not None:
                parts.append(f"-m{self.mtime}")
            if self.chunk_size is not None:
                parts.append(f"-S{self.chunk_size}-C{self.chunk_num}")
            parts.append("--")
            parts.append(self.name)
            s = "".join(parts)
            object.__setattr__(self, "_str", s)
        return s

    @classmethod
    def parse(cls, s: str | bytes) -> Key:
        """Parse a serialized key, refusing anything malformed or unsafe.

        Only canonical serializations are accepted, so ``str(Key.parse(s)) == s``.
        """
        if isinstance(s, bytes):
            s = _dec(s)
        m = _KEY_RE.fullmatch(s)
        if m is None:
            raise InvalidKeyError(f"invalid key {_show(s)}: not BACKEND[-sN][-mN][-SN-CN]--NAME")
        return cls(
            backend=m["backend"],
            name=m["name"],
            size=_number(s, m["size"]),
            mtime=_number(s, m["mtime"]),
            chunk_size=_number(s, m["chunk_size"]),
            chunk_num=_number(s, m["chunk_num"]),
        )

    @property
    def key_file(self) -> str:
        """The key as a single file name component (git-annex's keyFile escaping)."""
        kf = self._file
        if not kf:
            kf = str(self)
            if any(c in kf for c in "&%:/"):
                kf = kf.translate(_KEY_FILE_ESCAPES)
            object.__setattr__(self, "_file", kf)
        return kf

    @classmethod
    def from_key_file(cls, s: str | bytes) -> Key:
        """Reverse :attr:`key_file`; only the canonical escaping of a valid key is accepted."""
        if isinstance(s, bytes):
            s = _dec(s)
        segments = []
        for segment in s.split("%"):
            first, *rest = segment.split("&")
            out = [first]
            for piece in rest:
                if not piece or piece[0] not in _KEY_FILE_UNESCAPES:
                    raise InvalidKeyError(f"invalid key file name {_show(s)}: bad & escape")
                out.append(_KEY_FILE_UNESCAPES[piece[0]] + piece[1:])
            segments.append("".join(out))
        key = cls.parse("/".join(segments))
        if key.key_file != s:
            raise InvalidKeyError(f"invalid key file name {_show(s)}: not canonically escaped")
        return key

    @property
    def is_chunk(self) -> bool:
        """True for a chunk key of a chunked special remote."""
        return self.chunk_size is not None

    def without_chunk(self) -> Key:
        """The parent key of a chunk key (the key itself otherwise)."""
        if not self.is_chunk:
            return self
        return replace(self, chunk_size=None, chunk_num=None)

    @property
    def has_extension_backend(self) -> bool:
        """True for ``*E`` hash backends, whose name is digest + file extension."""
        return (
            _hash_base(self.backend) is not None and self.backend not in HASH_DIGEST_LENGTHS
        )

    @property
    def hash_digest(self) -> str | None:
        """The hex digest a hash key names (without extension); None for other backends."""
        if _hash_base(self.backend) is None:
            return None
        return self.name.split(".", 1)[0] if self.has_extension_backend else self.name

    @property
    def hashdir_lower(self) -> str:
        """Two-level lower-case hash directory, e.g. ``e7d/d01/`` (bare repos, branch)."""
        if self._lower:
            return self._lower
        h = hashlib.md5(_enc(str(self.without_chunk())), usedforsecurity=False).hexdigest()
        d = f"{h[:3]}/{h[3:6]}/"
        object.__setattr__(self, "_lower", d)
        return d

    @property
    def hashdir_mixed(self) -> str:
        """Two-level mixed-case hash directory, e.g. ``J7/0G/`` (non-bare object store)."""
        if self._mixed:
            return self._mixed
        digest = hashlib.md5(_enc(str(self.without_chunk())), usedforsecurity=False).digest()
        (w,) = struct.unpack("<I", digest[:4])
        # git-annex steps 6 bits but masks 5, then swaps each adjacent pair.
        cs = [_MIXED_ALPHABET[(w >> (6 * x)) & 31] for x in range(4)]
        h = f"{cs[1]}{cs[0]}/{cs[3]}{cs[2]}/"
        object.__setattr__(self, "_mixed", h)
        return h

    def object_path(self, bare: bool = False) -> str:
        """Path of the object relative to the annex dir (``.git/annex`` or ``annex``)."""
        kf = self.key_file
        hashdir = self.hashdir_lower if bare else self.hashdir_mixed
        return f"objects/{hashdir}{kf}/{kf}"


def _number(key: str, digits: str | None) -> int | None:
    if digits is None:
        return None
    if (len(digits) > 1 and digits[0] == "0") or len(digits) > 19:
        raise InvalidKeyError(f"invalid key {_show(key)}: non-canonical or huge number {digits}")
    return int(digits)


def _invalid(key: Key, problem: str) -> InvalidKeyError:
    return InvalidKeyError(f"invalid key {_show(str(key))}: {problem}")


def _validate(key: Key) -> None:
    """Raise InvalidKeyError unless ``key`` is well-formed and safe as a path component."""
    if not isinstance(key.backend, str) or not isinstance(key.name, str):
        raise InvalidKeyError("invalid key: backend and name must be strings")
    if not _BACKEND_RE.fullmatch(key.backend):
        raise _invalid(key, "backend must be upper-case letters, digits and _")
    for attr in ("size", "mtime", "chunk_size", "chunk_num"):
        value = getattr(key, attr)
        if value is None:
            continue
        if type(value) is not int or not 0 <= value <= _MAX_NUMBER:
            raise _invalid(key, f"{attr} must be a non-negative integer")
    if (key.chunk_size is None) != (key.chunk_num is None):
        raise _invalid(key, "chunk size and chunk number go together")
    if key.chunk_num == 0:
        raise _invalid(key, "chunk numbers start at 1")
    name = key.name
    if not name:
        raise _invalid(key, "empty name")
    if name in (".", ".."):
        raise _invalid(key, f"name is {name}")
    if _BAD_CHAR_RE.search(name):
        raise _invalid(key, "name contains whitespace or a control character")
    try:
        _enc(name)
    except UnicodeEncodeError:
        raise _invalid(key, "name is not encodable as bytes")
    if key.backend.endswith("E") and key.backend not in _NOT_EXT_BACKENDS:
        dot = name.find(".")
        if dot >= 0 and len(_enc(name[dot:])) > MAX_EXTENSION_BYTES:
            raise _invalid(key, f"extension longer than {MAX_EXTENSION_BYTES} bytes")
    base = _hash_base(key.backend)
    if base is not None:
        digest = name.split(".", 1)[0] if base != key.backend else name
        if len(digest) != HASH_DIGEST_LENGTHS[base] or not _HEX_RE.fullmatch(digest):
            raise _invalid(
                key, f"{key.backend} name must start with "
                f"{HASH_DIGEST_LENGTHS[base]} lower-case hex digits"
            )
        if "/" in name:
            raise _invalid(key, "hash key name contains /")
    # Defence in depth: keyFile escaping guarantees these, but a path must never escape.
    kf = key.key_file
    if "/" in kf or kf in (".", ".."):
        raise _invalid(key, "unsafe as a file name")


def key_extension(filename: str | bytes, max_length: int = 4, max_extensions: int = 2) -> str:
    """The extension a ``*E`` key gets for ``filename``, e.g. ``".tar.gz"`` or ``""``.

    git-annex's rule, on bytes: strip leading dots from the basename, split what
    follows the first dot on ``.``, scan from the end *stopping* at a part longer than
    ``max_length`` bytes, *skip* parts with bytes other than ASCII alphanumerics and
    bytes >= 0x80, keep at most ``max_extensions`` (empty parts count), drop empties.
    """
    b = filename if isinstance(filename, bytes) else _enc(filename)
    base = b.rsplit(b"/", 1)[-1].lstrip(b".")
    dot = base.find(b".")
    if dot < 0:
        return ""
    kept: list[bytes] = []
    for part in reversed(base[dot:].split(b".")):
        if len(part) > max_length:
            break
        if all(c >= 0x80 or chr(c).isalnum() for c in part):
            kept.append(part)
    kept = [p for p in reversed(kept[:max_extensions]) if p]
    return _dec(b"".join(b"." + p for p in kept))


_SANITIZE_KEEP = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/%:")


def sanitize_key_name(s: str | bytes) -> str:
    """The NAME of a WORM or URL key for a repo-relative path or a URL.

    Keeps ASCII alphanumerics and ``.-_/%:``, doubles ``,`` and writes any other
    character as ``,`` + its decimal code point; an input over 64 UTF-8 bytes becomes
    the first 31 sanitized characters, ``-`` and the md5 of the input.
    """
    raw = s if isinstance(s, bytes) else _enc(s)
    text = _dec(raw) if isinstance(s, bytes) else s
    out = "".join(
        c if c in _SANITIZE_KEEP else ",," if c == "," else f",{ord(c)}" for c in text
    )
    if len(raw) > 64:
        return out[:31] + "-" + hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return out


def pointer_content(key: Key) -> bytes:
    """The git blob of an unlocked file whose content is ``key``."""
    return b"/annex/objects/" + _enc(key.key_file) + b"\n"


def parse_pointer(data: bytes) -> Key | None:
    """The key of a pointer file, or None if ``data`` is not a valid pointer file.

    git-annex's rules: at most 32768 bytes; the first line contains ``/annex/objects/``
    and ends in the key file name (a trailing CR is ignored); every further line
    contains ``/annex/`` and ends in a newline.
    """
    if len(data) > _MAX_POINTER_BYTES:
        return None
    first, nl, rest = data.partition(b"\n")
    if first.endswith(b"\r"):
        first = first[:-1]
    if _ANNEX_OBJECTS.encode() not in first:
        return None
    if nl and rest:
        lines = rest.split(b"\n")
        # The text after the last newline must be empty: every line is terminated.
        if lines[-1] or not all(b"/annex/" in line for line in lines[:-1]):
            return None
    try:
        return Key.from_key_file(first.rsplit(b"/", 1)[-1])
    except InvalidKeyError:
        return None


def symlink_target(key: Key, file_relpath: str) -> str:
    """The target of a locked file's symlink: relative, from the file's directory.

    ``file_relpath`` is the file's path relative to the work tree top, whose
    ``.git`` directory holds the annex.
    """
    rel = posixpath.normpath(file_relpath)
    if rel.startswith("/") or rel == ".." or rel.startswith("../") or rel == ".":
        raise ValueError(f"not a path inside the work tree: {file_relpath!r}")
    depth = rel.count("/")
    return "../" * depth + ".git/annex/" + key.object_path()


def parse_symlink_target(target: str | bytes) -> Key | None:
    """The key a symlink target points to, or None if it is not a valid annex link."""
    if isinstance(target, bytes):
        target = _dec(target)
    if _ANNEX_OBJECTS not in target:
        return None
    try:
        return Key.from_key_file(target.rsplit("/", 1)[-1])
    except InvalidKeyError:
        return None
