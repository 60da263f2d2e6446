"""Keys: serialization, validation, keyFile escaping, hash dirs, pointers and links."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from annexsync.annex.keys import (
    HASH_DIGEST_LENGTHS,
    Key,
    key_extension,
    parse_pointer,
    parse_symlink_target,
    pointer_content,
    sanitize_key_name,
    symlink_target,
)
from annexsync.errors import InvalidKeyError
from annexsync.testing.gitenv import git_annex_binary, hermetic_env

HEX64 = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
TXT_KEY = f"SHA256E-s12--{HEX64}.txt"
WORM_KEY = "WORM-s2-m1795594201--sub/dir/x.y"
URL_KEY = "URL--http://example.com/some/path/file.bin,63x,611,38y,612"
CHUNK_KEY = (
    "SHA256E-s3145728-S1048576-C2--"
    "f73fd02b6e39e6416e2e55b8c983a4ff97d633561e40e97bf9d0f9072ff5af71.bin"
)


# ---------------------------------------------------------------- serialization


@pytest.mark.parametrize("s", [TXT_KEY, WORM_KEY, URL_KEY, CHUNK_KEY,
                               "URL--http://example.com/a/very/long/-483477ccaafc3fd2802aff70a4fc9240",
                               f"SHA256E-s4--{HEX64[:-3]}adc.tar.gz", f"SHA256-s0--{HEX64}",
                               "XBLAKE3E-s5--abc.txt", "GITBUNDLE--x", "WORM-s0-m0--a-b--c"])
def test_parse_format_examples(s: str) -> None:
    assert str(Key.parse(s)) == s


def test_fields() -> None:
    k = Key.parse(CHUNK_KEY)
    assert (k.backend, k.size, k.mtime, k.chunk_size, k.chunk_num) == (
        "SHA256E", 3145728, None, 1048576, 2)
    assert k.name.endswith(".bin")
    assert k.is_chunk and not k.without_chunk().is_chunk
    assert str(k.without_chunk()) == CHUNK_KEY.replace("-S1048576-C2", "")
    w = Key.parse(WORM_KEY)
    assert (w.backend, w.name, w.size, w.mtime) == ("WORM", "sub/dir/x.y", 2, 1795594201)
    assert w.without_chunk() is w


def test_backend_properties() -> None:
    k = Key.parse(TXT_KEY)
    assert k.has_extension_backend and k.hash_digest == HEX64
    plain = Key.parse(f"SHA256-s12--{HEX64}")
    assert not plain.has_extension_backend and plain.hash_digest == HEX64
    assert not Key.parse(WORM_KEY).has_extension_backend
    assert Key.parse(WORM_KEY).hash_digest is None
    assert Key.parse(URL_KEY).hash_digest is None
    assert not Key.parse("GITBUNDLE--x.y").has_extension_backend


def test_parse_accepts_bytes_with_non_utf8_extension() -> None:
    raw = f"SHA256E-s1--{HEX64}.t".encode() + b"\xe9t"
    k = Key.parse(raw)
    assert k.name.endswith(".t\udce9t")
    assert os.fsencode(str(k)) == raw


def test_keys_are_hashable_values() -> None:
    assert Key.parse(TXT_KEY) == Key.parse(TXT_KEY)
    assert len({Key.parse(TXT_KEY), Key.parse(TXT_KEY), Key.parse(WORM_KEY)}) == 2


HOSTILE = [
    "", "../etc/passwd", "/etc/passwd", "--name", "-s1--x", "SHA256E", "SHA256E-s1-",
    "SHA256E-s1--", f"SHA256E-s1--{HEX64}/../../x", "SHA256E-s1--../../etc/passwd",
    f"SHA256-s1--{HEX64}/x", "WORM-s1--.", "WORM-s1--..", "WORM-s1--a\x00b", "WORM-s1--a\nb",
    "WORM-s1--a\rb", "WORM-s1--a b", "WORM-s1--a\tb", "WORM-s1--a\x7fb", "WORM-s1--x\n",
    f"sha256e-s1--{HEX64}", f"Sha256E-s1--{HEX64}", "Xfoo_bar--x", "W.ORM-s1--x", "W/M--x",
    f"SHA256E-s99999999999999999999--{HEX64}", f"SHA256E-s9223372036854775808--{HEX64}",
    f"SHA256E-s01--{HEX64}", f"SHA256E-s-1--{HEX64}", f"SHA256E-s+1--{HEX64}",
    f"SHA256E-s\u0661--{HEX64}", f"SHA256E-s 1--{HEX64}", f"SHA256E-x1--{HEX64}",
    f"SHA256E-C2-S5--{HEX64}", f"SHA256E-S5--{HEX64}", f"SHA256E-C2--{HEX64}",
    f"SHA256E-S5-C0--{HEX64}", f"SHA256E-s1-m1-S5-C1-X1--{HEX64}",
    f"SHA256E-s1--{HEX64.upper()}", "SHA256E-s1--abc", f"SHA256E-s1--{HEX64}0",
    f"SHA256-s1--{HEX64}.txt", f"MD5-s1--{HEX64}", f"SHA1E-s1--{HEX64[:39]}g.x",
    f"SHA256E-s1--{HEX64}." + "a" * 64, "FOOE--x." + "a" * 70, "XfooE--x." + "a" * 70,
    "WORM-s1--\udc80\ud800",
]


@pytest.mark.parametrize("s", HOSTILE)
def test_hostile_keys_rejected(s: str) -> None:
    with pytest.raises(InvalidKeyError) as err:
        Key.parse(s)
    assert "\n" not in str(err.value)


def test_hostile_keys_rejected_as_key_files() -> None:
    for s in ["../x", "WORM-s1--a/b", "WORM-s1--a&xb", "WORM-s1--a&", "WORM-s1--a&&ab",
              "WORM-s1--sub/dir%x.y", "WORM-s1--..", "%%", "&c&c"]:
        with pytest.raises(InvalidKeyError):
            Key.from_key_file(s)


def test_extension_limit_is_64_bytes() -> None:
    assert Key.parse(f"SHA256E-s1--{HEX64}." + "a" * 63)
    # git-annex measures bytes: 32 two-byte characters are 64 bytes plus the dot.
    with pytest.raises(InvalidKeyError):
        Key.parse(f"SHA256E-s1--{HEX64}." + "é" * 32)
    # Only *E keys are limited; GITBUNDLE ends in E but carries no extension.
    assert Key.parse("FOO--x." + "a" * 70) and Key.parse("GITBUNDLE--x." + "a" * 70)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(InvalidKeyError):
        Key("SHA256E", "../../x", 1, None, None, None)
    with pytest.raises(InvalidKeyError):
        Key("WORM", "x", -1, None, None, None)
    with pytest.raises(InvalidKeyError):
        Key("WORM", "x", True, None, None, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        Key("WORM", "x", 1, None, 5, None)
    assert str(Key("WORM", "x", 1, 2, None, None)) == "WORM-s1-m2--x"


def test_all_hash_backends_have_digest_lengths() -> None:
    for backend, n in HASH_DIGEST_LENGTHS.items():
        assert str(Key.parse(f"{backend}-s1--{'0' * n}")) == f"{backend}-s1--{'0' * n}"
        assert Key.parse(f"{backend}E-s1--{'0' * n}.x").hash_digest == "0" * n
        with pytest.raises(InvalidKeyError):
            Key.parse(f"{backend}-s1--{'0' * (n + 2)}")


# ---------------------------------------------------------------- §1.2 extensions

EXTENSION_TABLE = [
    ("hello.txt", ".txt"),
    ("archive.tar.gz", ".tar.gz"),
    ("name.tar.GZ", ".tar.GZ"),
    ("c.tar.bz2.xz", ".bz2.xz"),
    ("file.ab.cd.ef.gh", ".ef.gh"),
    ("foo.ab.c-d.ef", ".ab.ef"),
    ("e.x.longer.gz", ".gz"),
    ("x.12345", ""),
    ("y.1234", ".1234"),
    ("weird.verylongextension", ""),
    ("a.b-c", ""),
    ("a.b_c", ""),
    ("sp ace.t x", ""),
    ("a.b.c.d", ".c.d"),
    ("a..b", ".b"),
    ("trailing.", ""),
    ("d.é.txt", ".é.txt"),
    ("ÄÖ.日本", ""),
    (".hidden.txt", ".txt"),
    ("..dots", ""),
    ("noext", ""),
    # Beyond the table: empty parts count towards the two kept (verified by calckey).
    ("a.x..b", ".b"),
    ("dir.d/file", ""),
    ("dir/file.md", ".md"),
]


@pytest.mark.parametrize(("filename", "ext"), EXTENSION_TABLE)
def test_extension_table(filename: str, ext: str) -> None:
    assert key_extension(filename) == ext
    assert key_extension(os.fsencode(filename)) == ext


def test_extension_parameters_and_bytes() -> None:
    assert key_extension("x.12345", max_length=5) == ".12345"
    assert key_extension("c.tar.bz2.xz", max_extensions=3) == ".tar.bz2.xz"
    assert key_extension("c.tar.bz2.xz", max_extensions=1) == ".xz"
    assert key_extension(b"bad\xffname.t\xe9t") == ".t\udce9t"


# ---------------------------------------------------------------- §1.3 sanitizing


@pytest.mark.parametrize(("raw", "name"), [
    ("sub/dir/x.y", "sub/dir/x.y"),
    ("worm file,é.txt", "worm,32file,,,233.txt"),
    ("http://example.com/some/path/file.bin?x=1&y=2",
     "http://example.com/some/path/file.bin,63x,611,38y,612"),
    ("a%b:c_d-e.f", "a%b:c_d-e.f"),
    ("tab\there", "tab,9here"),
])
def test_sanitize_examples(raw: str, name: str) -> None:
    assert sanitize_key_name(raw) == name


def test_sanitize_long_names_are_truncated_with_md5() -> None:
    url = "http://example.com/a/very/long/path/" + "x" * 40 + "?q=1"
    assert len(url.encode()) > 64
    md5 = hashlib.md5(url.encode()).hexdigest()
    assert sanitize_key_name(url) == "http://example.com/a/very/long/-" + md5
    # The limit is on the original's UTF-8 bytes: 33 two-byte chars exceed 64 bytes.
    assert sanitize_key_name("é" * 32) == ",233" * 32
    assert sanitize_key_name("é" * 33).endswith("-" + hashlib.md5(("é" * 33).encode()).hexdigest())
    assert sanitize_key_name(b"bad\xffname") == "bad,56575name"


# ---------------------------------------------------------------- §1.4 / §1.5


@pytest.mark.parametrize(("s", "kf"), [
    (URL_KEY, "URL--http&c%%example.com%some%path%file.bin,63x,611,38y,612"),
    (WORM_KEY, "WORM-s2-m1795594201--sub%dir%x.y"),
    (TXT_KEY, TXT_KEY),
    ("WORM-s1--a&b%c:d/e", "WORM-s1--a&ab&sc&cd%e"),
])
def test_key_file_examples(s: str, kf: str) -> None:
    key = Key.parse(s)
    assert key.key_file == kf
    assert Key.from_key_file(kf) == key


@pytest.mark.parametrize(("s", "mixed", "lower"), [
    (TXT_KEY, "J7/0G/", "e7d/d01/"),
    (WORM_KEY, "3j/0F/", "ccf/001/"),
])
def test_hashdir_examples(s: str, mixed: str, lower: str) -> None:
    key = Key.parse(s)
    assert (key.hashdir_mixed, key.hashdir_lower) == (mixed, lower)


def test_object_paths() -> None:
    key = Key.parse(WORM_KEY)
    kf = key.key_file
    assert key.object_path() == f"objects/3j/0F/{kf}/{kf}"
    assert key.object_path(bare=True) == f"objects/ccf/001/{kf}/{kf}"


def test_chunks_share_the_parent_hash_directory() -> None:
    chunk = Key.parse(CHUNK_KEY)
    parent = chunk.without_chunk()
    assert chunk.hashdir_mixed == parent.hashdir_mixed
    assert chunk.hashdir_lower == parent.hashdir_lower
    assert chunk.object_path().endswith(f"/{CHUNK_KEY}/{CHUNK_KEY}")


# ---------------------------------------------------------------- §2.2 / §2.3

TXT = Key.parse(TXT_KEY)


def test_pointer_content_round_trip() -> None:
    data = pointer_content(TXT)
    assert data == f"/annex/objects/{TXT_KEY}\n".encode()
    assert parse_pointer(data) == TXT
    worm = Key.parse(WORM_KEY)
    assert pointer_content(worm) == b"/annex/objects/WORM-s2-m1795594201--sub%dir%x.y\n"
    assert parse_pointer(pointer_content(worm)) == worm


@pytest.mark.parametrize(("data", "ok"), [
    (f"/annex/objects/{TXT_KEY}".encode(), True),
    (f"/annex/objects/{TXT_KEY}\r\n".encode(), True),
    (f"../.git/annex/objects/J7/0G/{TXT_KEY}/{TXT_KEY}\n".encode(), True),
    (f"/annex/objects/{TXT_KEY}\n/annex/extra\n".encode(), True),
    (f"/annex/objects/{TXT_KEY}\nmore /annex/ data\nx/annex/y\n".encode(), True),
    (f"/annex/objects/{TXT_KEY}\n/annex/extra".encode(), False),
    (f"/annex/objects/{TXT_KEY}\nappended data\n".encode(), False),
    (f"/annex/objects/{TXT_KEY}\n\n".encode(), False),
    (f"/annex/objects/{TXT_KEY}\n".encode() + b"/annex/" * 4700 + b"\n", False),
    (f"annex/objects/{TXT_KEY}\n".encode(), False),
    (f"/annex/objects/{TXT_KEY} \n".encode(), False),
    (b"/annex/objects/../../etc/passwd\n", False),
    (b"/annex/objects/WORM-s1--x\x00\n", False),
    (b"", False),
    (b"hello world\n", False),
])
def test_parse_pointer(data: bytes, ok: bool) -> None:
    assert (parse_pointer(data) == TXT) if ok else parse_pointer(data) is None


def test_symlink_targets() -> None:
    worm = Key.parse(WORM_KEY)
    kf = worm.key_file
    assert symlink_target(TXT, "hello.txt") == (
        f".git/annex/objects/J7/0G/{TXT_KEY}/{TXT_KEY}")
    assert symlink_target(worm, "sub/dir/x.y") == f"../../.git/annex/objects/3j/0F/{kf}/{kf}"
    assert symlink_target(worm, "./sub//x.y") == f"../.git/annex/objects/3j/0F/{kf}/{kf}"
    for bad in ["/abs", "../out", "a/../../b", ".", ""]:
        with pytest.raises(ValueError):
            symlink_target(worm, bad)


def test_parse_symlink_target() -> None:
    target = symlink_target(TXT, "a/b/c")
    assert parse_symlink_target(target) == TXT
    assert parse_symlink_target(target.encode()) == TXT
    assert parse_symlink_target("/elsewhere/annex/objects/x/" + TXT_KEY) == TXT
    assert parse_symlink_target("../some/where/else") is None
    assert parse_symlink_target(".git/annex/objects/J7/0G/x/not-a-key") is None
    assert parse_symlink_target(".git/annex/objects/../../etc/passwd") is None


# ---------------------------------------------------------------- properties

# Explicit alphabets: fast to draw, and rich in the characters that matter here.
NAME_CHARS = "aZ09._-/%:&,+=?~ \t\n\r\x00\x7féÄ日😀\u2028\udcff"
names = st.text(alphabet=NAME_CHARS, max_size=40)


def _hex(n: int) -> st.SearchStrategy[str]:
    return st.text(alphabet="0123456789abcdef", min_size=n, max_size=n)


@st.composite
def keys(draw: st.DrawFn) -> Key:
    kind = draw(st.sampled_from(["hash", "hashE", "worm", "url", "other"]))
    size = draw(st.none() | st.integers(0, 2**63 - 1))
    chunk = draw(st.none() | st.tuples(st.integers(0, 2**40), st.integers(1, 10**6)))
    cs, cn = chunk if chunk else (None, None)
    if kind.startswith("hash"):
        base = draw(st.sampled_from(sorted(HASH_DIGEST_LENGTHS)))
        name = draw(_hex(HASH_DIGEST_LENGTHS[base]))
        if kind == "hashE":
            name += key_extension(draw(names))
            base += "E"
        return Key(base, name, size, None, cs, cn)
    if kind in ("worm", "url"):
        raw = draw(names.filter(bool) | st.text(alphabet=NAME_CHARS, min_size=60, max_size=90))
        name = sanitize_key_name(raw)
        if name in (".", ".."):
            name = "x" + name
        mtime = draw(st.integers(0, 2**40)) if kind == "worm" else None
        return Key(kind.upper(), name, size, mtime, cs, cn)
    backend = draw(
        st.text(alphabet="ABCEFXZ019_", min_size=1, max_size=12)
        | st.text(alphabet="AEXabz09", min_size=1, max_size=12).map(lambda b: "X" + b)
    )
    name = draw(st.text(alphabet=NAME_CHARS.replace(" ", "")[:-8] + "éÄ日😀\udcff", min_size=1))
    try:
        return Key(backend, name, size, None, cs, cn)
    except InvalidKeyError:
        # The generated backend happened to be a hash backend (or *E with a long
        # extension); those are covered above.
        return Key("OTHER", "fallback", size, None, cs, cn)


@given(keys())
def test_round_trip(key: Key) -> None:
    s = str(key)
    assert Key.parse(s) == key
    assert str(Key.parse(s)) == s
    assert Key.parse(os.fsencode(s)) == key


@given(keys())
def test_key_file_round_trip(key: Key) -> None:
    kf = key.key_file
    assert "/" not in kf and kf not in (".", "..")
    assert Key.from_key_file(kf) == key
    assert parse_pointer(pointer_content(key)) == key
    assert parse_symlink_target(symlink_target(key, "d/f")) == key


# Strings that look a lot like keys, with the characters that matter for paths.
key_like = st.builds(
    lambda prefix, body: prefix + body,
    st.sampled_from(["", "WORM-s1--", "SHA256E-s1--", f"SHA256E-s1--{HEX64}", "URL--",
                     "WORM-", "X", "SHA256-"]),
    st.text(alphabet="-/.%&:acsmSCE0123456789\x00\n\r é", max_size=40),
)


@given(key_like | st.text(alphabet=NAME_CHARS + "SHAWORM-", max_size=80))
@example("WORM-s1--..")
@example("WORM-s1--../..")
def test_parse_never_yields_unsafe_keys(s: str) -> None:
    for parse, render in ((Key.parse, str), (Key.from_key_file, lambda k: k.key_file)):
        try:
            key = parse(s)
        except InvalidKeyError:
            continue
        kf = key.key_file
        assert "/" not in kf and kf not in (".", "..") and "\x00" not in kf
        assert "\n" not in kf and "\r" not in kf
        assert render(key) == s


# ---------------------------------------------------------------- interop


def _annex(repo: Path, env: dict[str, str], *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run([str(a) for a in args], cwd=repo, env=env, input=input,
                          capture_output=True)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, dict[str, str]]]:
    """A non-bare and a bare git-annex repo, with the hermetic env to run in them."""
    binary = git_annex_binary()
    if binary is None:
        pytest.skip("real git-annex not installed")
    base = tmp_path_factory.mktemp("keys-interop")
    env = hermetic_env(base / "home")
    env["PATH"] = str(Path(binary).parent) + os.pathsep + env.get("PATH", "")
    work, bare = base / "work", base / "bare.git"
    _annex(base, env, "git", "init", "-q", str(work))
    _annex(base, env, "git", "init", "-q", "--bare", str(bare))
    for repo in (work, bare):
        _annex(repo, env, binary, "init", "-q", "test")
    yield work, bare, env


def _random_keys(n: int) -> list[Key]:
    rng = random.Random(20261026)
    exts = ["", ".txt", ".tar.gz", ".é.txt", ".JPG", ".a.b"]
    out: list[Key] = []
    backends = sorted(HASH_DIGEST_LENGTHS)
    for i in range(n):
        size = rng.choice([None, 0, rng.randrange(10**12)])
        chunk = (rng.randrange(1, 10**7), rng.randrange(1, 50)) if i % 5 == 0 else (None, None)
        kind = i % 4
        if kind == 0:
            base = backends[i % len(backends)]
            digest = "".join(rng.choice("0123456789abcdef")
                             for _ in range(HASH_DIGEST_LENGTHS[base]))
            out.append(Key(base + "E", digest + rng.choice(exts), size, None, *chunk))
        elif kind == 1:
            base = rng.choice(backends)
            digest = "".join(rng.choice("0123456789abcdef")
                             for _ in range(HASH_DIGEST_LENGTHS[base]))
            out.append(Key(base, digest, size, None, *chunk))
        elif kind == 2:
            path = "/".join(rng.choice(["sub", "a b", "x,y", "é", "q&a", "100%", "c:d"])
                            for _ in range(rng.randrange(1, 4))) + rng.choice(exts)
            out.append(Key("WORM", sanitize_key_name(path), size or 1,
                           rng.randrange(2**31), *chunk))
        else:
            url = f"https://example.com/{rng.randrange(10**6)}/f?x={i}&y=%20" + "z" * (i % 50)
            out.append(Key("URL", sanitize_key_name(url), size, None, *chunk))
    return out


@pytest.mark.interop
def test_examinekey_agrees(repos: tuple[Path, Path, dict[str, str]]) -> None:
    work, bare, env = repos
    sample = _random_keys(48)
    batch = "".join(f"{k}\n" for k in sample).encode()
    for repo, prefix, is_bare in ((work, ".git/annex/", False), (bare, "./annex/", True)):
        out = _annex(repo, env, "git", "annex", "examinekey", "--json", "--batch", input=batch)
        lines = out.decode().splitlines()
        assert len(lines) == len(sample)
        for key, line in zip(sample, lines, strict=True):
            info = json.loads(line)
            assert info["key"] == str(key)
            assert info["hashdirlower"] == key.hashdir_lower
            assert info["hashdirmixed"] == key.hashdir_mixed
            assert info["objectpath"] == prefix + key.object_path(bare=is_bare)
            assert info["objectpointer"].encode() == pointer_content(key)
            assert info["objectpath"].rsplit("/", 1)[1] == key.key_file


@pytest.mark.interop
def test_add_makes_our_links_and_pointers(repos: tuple[Path, Path, dict[str, str]]) -> None:
    work, _, env = repos
    (work / "sub" / "dir").mkdir(parents=True, exist_ok=True)
    (work / "sub" / "dir" / "x,y.tar.gz").write_bytes(b"locked content\n")
    (work / "unlocked.txt").write_bytes(b"unlocked content\n")
    _annex(work, env, "git", "annex", "add", "-q", "sub/dir/x,y.tar.gz")
    _annex(work, env, "git", "-c", "annex.addunlocked=true", "annex", "add", "-q",
           "unlocked.txt")
    locked = Key("SHA256E", hashlib.sha256(b"locked content\n").hexdigest() + ".tar.gz", 15)
    target = os.readlink(work / "sub" / "dir" / "x,y.tar.gz")
    assert target == symlink_target(locked, "sub/dir/x,y.tar.gz")
    assert parse_symlink_target(target) == locked
    assert (work / ".git" / "annex" / locked.object_path()).is_file()
    unlocked = Key("SHA256E", hashlib.sha256(b"unlocked content\n").hexdigest() + ".txt", 17)
    blob = _annex(work, env, "git", "cat-file", "blob", ":unlocked.txt")
    assert blob == pointer_content(unlocked)
    assert parse_pointer(blob) == unlocked
