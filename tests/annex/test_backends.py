"""Backends: hashing files into keys, verifying content, and agreement with git-annex."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from annexsync.annex import backends
from annexsync.annex.backends import (
    BACKENDS,
    DEFAULT_BACKEND,
    FileChangedError,
    get_backend,
    hash_file,
    hasher_for_key,
    verify_file,
)
from annexsync.annex.keys import Key, sanitize_key_name
from annexsync.errors import AnnexError
from annexsync.testing.gitenv import git_annex_binary, hermetic_env

HAVE_BLAKE3 = importlib.util.find_spec("blake3") is not None
HAVE_XXHASH = importlib.util.find_spec("xxhash") is not None
HELLO_SHA256 = hashlib.sha256(b"hello").hexdigest()


def test_registry() -> None:
    assert next(iter(BACKENDS)) == DEFAULT_BACKEND == "SHA256E"
    for name in ["SHA256E", "SHA256", "SHA512E", "SHA512", "SHA384E", "SHA384", "SHA224E",
                 "SHA224", "SHA1E", "SHA1", "MD5E", "MD5", "BLAKE2B256E", "BLAKE2B256",
                 "BLAKE2B512E", "BLAKE2B512", "BLAKE2S256E", "BLAKE2S256", "SHA3_256E",
                 "SHA3_256", "SHA3_512E", "SHA3_512", "WORM"]:
        backend = get_backend(name)
        assert backend.name == name
        assert backend.has_extension == name.endswith("E")
        assert backend.is_hash == (name != "WORM")
    assert ("BLAKE3_256E" in BACKENDS) == HAVE_BLAKE3
    assert ("XXH3E" in BACKENDS) == HAVE_XXHASH
    assert "URL" not in BACKENDS and "SKEIN256E" not in BACKENDS


def test_unknown_backend() -> None:
    with pytest.raises(AnnexError, match=r"unknown backend NOPE; known: SHA256E SHA256 "):
        get_backend("NOPE")


@pytest.mark.parametrize(("name", "expected"), [
    ("SHA256", hashlib.sha256(b"hello").hexdigest()),
    ("SHA512", hashlib.sha512(b"hello").hexdigest()),
    ("MD5", hashlib.md5(b"hello").hexdigest()),
    ("SHA1", hashlib.sha1(b"hello").hexdigest()),
    ("BLAKE2B256", hashlib.blake2b(b"hello", digest_size=32).hexdigest()),
    ("BLAKE2S256", hashlib.blake2s(b"hello").hexdigest()),
    ("SHA3_256", hashlib.sha3_256(b"hello").hexdigest()),
])
def test_hashers(name: str, expected: str) -> None:
    hasher = get_backend(name + "E").new_hasher()
    hasher.update(b"hel")
    hasher.update(memoryview(b"lo"))
    assert hasher.hexdigest() == expected


def test_worm_has_no_hasher() -> None:
    with pytest.raises(AnnexError):
        get_backend("WORM").new_hasher()
    with pytest.raises(AnnexError):
        get_backend("WORM").key_from_digest("00", 1, "x")


def test_key_from_digest() -> None:
    e = get_backend("SHA256E")
    assert str(e.key_from_digest(HELLO_SHA256, 5, "a/b.tar.gz")) == (
        f"SHA256E-s5--{HELLO_SHA256}.tar.gz")
    assert e.key_from_digest(HELLO_SHA256, 5, "x.c.tar.gz", max_extensions=3).name.endswith(
        ".c.tar.gz")
    assert e.key_from_digest(HELLO_SHA256, 5, "x.12345", max_length=5).name.endswith(".12345")
    assert e.key_from_digest(HELLO_SHA256, 5, None).name == HELLO_SHA256
    plain = get_backend("SHA256").key_from_digest(HELLO_SHA256, 5, "a.txt")
    assert str(plain) == f"SHA256-s5--{HELLO_SHA256}"


# ---------------------------------------------------------------- hash_file


@pytest.mark.parametrize("bufsize", [1, 7, 4096, 1 << 20])
def test_hash_file_matches_hashlib(tmp_path: Path, bufsize: int) -> None:
    data = random.Random(bufsize).randbytes(50_000)
    path = tmp_path / "data.tar.gz"
    path.write_bytes(data)
    key, st = hash_file(path, "SHA256E", bufsize=bufsize)
    assert key == Key("SHA256E", hashlib.sha256(data).hexdigest() + ".tar.gz", 50_000)
    assert st.st_size == 50_000 and st.st_ino == path.stat().st_ino


def test_hash_file_defaults_and_names(tmp_path: Path) -> None:
    path = tmp_path / "hello.TXT"
    path.write_bytes(b"hello")
    assert hash_file(path)[0].name == HELLO_SHA256 + ".TXT"
    assert hash_file(str(path), get_backend("SHA256"))[0].name == HELLO_SHA256
    # The extension can come from another name (a temp file being added as x.jpg).
    assert hash_file(path, filename_for_ext="x.jpg")[0].name == HELLO_SHA256 + ".jpg"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert str(hash_file(empty, "MD5")[0]) == f"MD5-s0--{hashlib.md5(b'').hexdigest()}"


def test_hash_file_non_utf8_name(tmp_path: Path) -> None:
    path = os.path.join(os.fsencode(tmp_path), b"bad\xffname.t\xe9t")
    with open(path, "wb") as f:
        f.write(b"hello")
    key, _ = hash_file(path)  # type: ignore[arg-type]
    assert os.fsencode(str(key)).endswith(b".t\xe9t")


def test_hash_file_worm(tmp_path: Path) -> None:
    path = tmp_path / "worm file,é.txt"
    path.write_bytes(b"hi")
    os.utime(path, ns=(1_795_594_201_900_000_000, 1_795_594_201_900_000_000))
    key, st = hash_file(path, "WORM", relpath_for_worm="sub/worm file,é.txt")
    assert str(key) == "WORM-s2-m1795594201--sub/worm,32file,,,233.txt"
    assert st.st_size == 2
    with pytest.raises(AnnexError, match="repository path"):
        hash_file(path, "WORM")


def test_hash_file_refuses_non_regular_files(tmp_path: Path) -> None:
    with pytest.raises(AnnexError, match="not a regular file"):
        hash_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "missing")


def test_hash_file_detects_growth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"x" * 1000)
    real = backends.hash_fd

    def append_then_hash(fd: int, hasher: backends.Hasher, **kw: object) -> int:
        with open(path, "ab") as f:
            f.write(b"more")
        return real(fd, hasher, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(backends, "hash_fd", append_then_hash)
    with pytest.raises(FileChangedError):
        hash_file(path)


# ---------------------------------------------------------------- verification


def test_verify_file(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(b"hello")
    key, _ = hash_file(path, "SHA256E")
    assert verify_file(path, key)
    assert verify_file(path, hash_file(path, "BLAKE2B256")[0], bufsize=2)
    path.write_bytes(b"jello")
    assert not verify_file(path, key)
    path.write_bytes(b"hello!")
    assert not verify_file(path, key)
    with pytest.raises(FileNotFoundError):
        verify_file(tmp_path / "missing", key)


def test_verify_unverifiable_keys(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert verify_file(path, Key("WORM", "f", 5, 1))
    assert verify_file(path, Key("URL", "http:%%x", None))
    assert verify_file(path, Key("SKEIN256E", "0" * 64 + ".x", 5))
    assert not verify_file(path, Key("SKEIN256E", "0" * 64 + ".x", 6))
    # A chunk's content does not hash to its key's name, and its size is the chunk's.
    assert verify_file(path, Key("SHA256E", "0" * 64, 100, None, 5, 3))


def test_hasher_for_key() -> None:
    key = Key("SHA256E", HELLO_SHA256 + ".txt", 5)
    hasher = hasher_for_key(key)
    assert hasher is not None
    hasher.update(b"hello")
    assert hasher.hexdigest() == key.hash_digest
    assert hasher_for_key(Key("WORM", "x", 1, 1)) is None
    assert hasher_for_key(Key("URL", "x")) is None
    assert hasher_for_key(Key("SKEIN512", "0" * 128, 1)) is None
    assert hasher_for_key(Key("SHA256E", HELLO_SHA256, 10, None, 5, 1)) is None
    assert hasher_for_key(Key("BLAKE3_256", "0" * 64, 1)) is None or HAVE_BLAKE3


# ---------------------------------------------------------------- interop

# File names from the extension table and the awkward corners of file naming.
CORPUS: list[bytes] = [os.fsencode(n) for n in [
    "hello.txt", "archive.tar.gz", "name.tar.GZ", "c.tar.bz2.xz", "file.ab.cd.ef.gh",
    "foo.ab.c-d.ef", "e.x.longer.gz", "x.12345", "y.1234", "weird.verylongextension",
    "a.b-c", "a.b_c", "sp ace.t x", "a.b.c.d", "a..b", "a.x..b", "trailing.", "d.é.txt",
    "ÄÖ.日本", ".hidden.txt", "..dots", "noext", "with space.txt", "new\nline.txt",
    "-leading-dash.md", "...three.dots.md", "tab\there.c", "comma,name.txt",
    "pct%amp&col:on.txt", "emoji😀.😀", "UPPER.TXT", "x." + "é" * 40, "long" * 30 + ".txt",
    "empty", "large.bin", "sub/dir/nested.tar.gz", "sub/dir/-dash dir/ü.md",
]] + [b"bad\xffname.t\xe9t"]

INTEROP_BACKENDS = ["SHA256E", "SHA256", "SHA512E", "MD5E", "SHA1E", "BLAKE2B256E", "WORM"]
OPTIONAL_BACKENDS = [pytest.param("BLAKE3_256E", marks=pytest.mark.skipif(
                         not HAVE_BLAKE3, reason="blake3 package not installed")),
                     pytest.param("XXH3E", marks=pytest.mark.skipif(
                         not HAVE_XXHASH, reason="xxhash package not installed"))]


def _content(name: bytes) -> bytes:
    if name == b"empty":
        return b""
    if name == b"large.bin":
        # Over three default read buffers, and not a multiple of one.
        return random.Random(7).randbytes(3 * (1 << 20) + 12345)
    return name * 3 + b"\n"


@pytest.fixture(scope="module")
def corpus_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A git-annex repo holding the corpus files, and the hermetic env to run in it."""
    binary = git_annex_binary()
    if binary is None:
        pytest.skip("real git-annex not installed")
    base = tmp_path_factory.mktemp("backends-interop")
    env = hermetic_env(base / "home")
    env["PATH"] = str(Path(binary).parent) + os.pathsep + env.get("PATH", "")
    repo = base / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], env=env, check=True)
    subprocess.run([binary, "init", "-q"], cwd=repo, env=env, check=True)
    for name in CORPUS:
        path = os.path.join(os.fsencode(repo), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(_content(name))
    yield repo, env


def _calckeys(repo: Path, env: dict[str, str], backend: str) -> list[bytes]:
    proc = subprocess.run(
        ["git", "annex", "calckey", "--batch", "-z", "--backend", backend],
        cwd=repo, env=env, input=b"".join(n + b"\0" for n in CORPUS), capture_output=True,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    # Key names never contain newlines, so the output splits cleanly.
    keys = proc.stdout.split(b"\n")[:-1]
    assert len(keys) == len(CORPUS), proc.stdout
    return keys


@pytest.mark.interop
@pytest.mark.parametrize("backend", INTEROP_BACKENDS + OPTIONAL_BACKENDS)
def test_calckey_agrees(corpus_repo: tuple[Path, dict[str, str]], backend: str) -> None:
    repo, env = corpus_repo
    assert len(CORPUS) >= 25
    for name, theirs in zip(CORPUS, _calckeys(repo, env, backend), strict=True):
        path = os.path.join(os.fsencode(repo), name)
        ours, _ = hash_file(path, backend, relpath_for_worm=name)  # type: ignore[arg-type]
        assert os.fsencode(str(ours)) == theirs, name
        assert Key.parse(theirs) == ours
        if backend != "WORM":
            assert verify_file(path, ours)  # type: ignore[arg-type]


@pytest.mark.interop
def test_calckey_agrees_on_every_other_backend(corpus_repo: tuple[Path, dict[str, str]]) -> None:
    """One file through every backend we compute, so none is wired to the wrong hash."""
    repo, env = corpus_repo
    name = b"archive.tar.gz"
    for backend in BACKENDS:
        proc = subprocess.run(["git", "annex", "calckey", "--backend", backend, name],
                              cwd=repo, env=env, capture_output=True, check=True)
        ours, _ = hash_file(repo / os.fsdecode(name), backend, relpath_for_worm=name)
        assert os.fsencode(str(ours)) + b"\n" == proc.stdout, backend


def test_worm_long_path_matches_sanitizer(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    rel = "very/" * 20 + "long.txt"
    key, _ = hash_file(path, "WORM", relpath_for_worm=rel)
    assert key.name == sanitize_key_name(rel) and len(key.name) == 64


def test_big_files_hash_the_same_with_the_read_ahead_thread(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(1 << 20) * 17 + b"tail"  # past THREADED_READ, not whole MiBs
    assert len(data) >= backends.THREADED_READ
    path.write_bytes(data)
    key, _ = hash_file(path)
    assert key.hash_digest == hashlib.sha256(data).hexdigest() and key.size == len(data)
    assert verify_file(path, key)
    path.write_bytes(data[:-1] + b"!")
    assert not verify_file(path, key)
