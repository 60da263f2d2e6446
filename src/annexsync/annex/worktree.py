"""Which work-tree files are annexed, and with which key.

Read from the index (``ls-files -s``): symlink blobs are annex links when they point
into ``/annex/objects/``; small regular blobs are pointer files (unlocked) when their
content parses as one. Blobs are fetched in pipelined batches; blob sizes are
checked first so large git files are never read.

:func:`iter_annexed_chunks` streams: ``ls-files`` output is read as it comes and
handled ``chunk`` entries at a time (one ``cat-file`` batch per chunk), so a scan of
a 100,000-file tree never holds the whole index listing, its blobs or its results
in memory at once. :func:`annexed_files` is the list of all of it.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from annexsync.annex.keys import Key, parse_pointer, parse_symlink_target
from annexsync.annex.repo import AnnexRepo
from annexsync.git.catfile import check_many
from annexsync.git.index import MODE_SYMLINK, StagedFile
from annexsync.git.runner import Git, GitError

MAX_POINTER_SIZE = 32768


@dataclass(frozen=True, slots=True)
class AnnexedFile:
    file: str
    key: Key
    locked: bool


def annexed_files(repo: AnnexRepo, paths: Sequence[str] = ()) -> list[AnnexedFile]:
    """Annexed files in the index under ``paths`` (relative to the top), in index order."""
    return [f for chunk in iter_annexed_chunks(repo, paths) for f in chunk]


def iter_annexed_chunks(repo: AnnexRepo, paths: Sequence[str] = (), *,
                        chunk: int = 5000) -> Iterator[list[AnnexedFile]]:
    """Annexed files in the index under ``paths``, in index order, a list per ``chunk``
    index entries (streamed: see the module docstring)."""
    batch: list[StagedFile] = []
    for s in _stream_staged(repo.git, paths):
        if s.stage in (0, 2) and s.mode in (MODE_SYMLINK, "100644", "100755"):
            batch.append(s)
            if len(batch) >= chunk:
                yield _annexed(repo, batch)
                batch = []
    if batch:
        yield _annexed(repo, batch)


def _stream_staged(git: Git, paths: Sequence[str]) -> Iterator[StagedFile]:
    """``ls-files -s -z`` entries, parsed as git writes them."""
    args = ("ls-files", "-s", "-z", "--full-name", "--", *paths)
    proc = git.popen(*args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    ok = False
    try:
        rest = b""
        while True:
            data = proc.stdout.read1(1 << 16)
            if not data:
                break
            records = (rest + data).split(b"\0")
            rest = records.pop()
            for rec in records:
                if rec:
                    meta, path = rec.split(b"\t", 1)
                    mode, oid, stage = meta.decode().split(" ")
                    yield StagedFile(mode, oid, int(stage),
                                     path.decode("utf-8", "surrogateescape"))
        ok = True
    finally:
        if not ok:
            proc.kill()
        proc.stdout.close()
        err = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait()
    if code != 0:
        raise GitError(list(args), code, err)


def _annexed(repo: AnnexRepo, staged: list[StagedFile]) -> list[AnnexedFile]:
    symlinks = [s for s in staged if s.mode == MODE_SYMLINK]
    regular = [s for s in staged if s.mode != MODE_SYMLINK]
    sizes = check_many(repo.git, {s.oid for s in regular}) if regular else {}
    maybe_pointers = [s for s in regular
                      if (sz := sizes.get(s.oid)) is not None and sz[1] <= MAX_POINTER_SIZE]
    want = {s.oid for s in symlinks} | {s.oid for s in maybe_pointers}
    blobs = {oid: (obj.data if obj else b"") for oid, obj in repo.catfile.get_many(want)}
    out: list[AnnexedFile] = []
    for s in staged:
        if s.mode == MODE_SYMLINK:
            key = parse_symlink_target(blobs.get(s.oid, b""))
            if key is not None:
                out.append(AnnexedFile(s.path, key, True))
        elif s.oid in blobs:
            key = parse_pointer(blobs[s.oid])
            if key is not None:
                out.append(AnnexedFile(s.path, key, False))
    return out


def staged_literal(git: Git, paths: Sequence[str]) -> list[StagedFile]:
    """Index entries of exactly these paths (no pathspec magic), in batches."""
    out: list[StagedFile] = []
    for i in range(0, len(paths), 500):
        chunk = paths[i:i + 500]
        raw = git.run("ls-files", "-s", "-z", "--full-name", "--", *chunk,
                      env={"GIT_LITERAL_PATHSPECS": "1"})
        for rec in raw.split(b"\0"):
            if not rec:
                continue
            meta, path = rec.split(b"\t", 1)
            mode, oid, stage = meta.decode().split(" ")
            out.append(StagedFile(mode, oid, int(stage), path.decode("utf-8", "surrogateescape")))
    return out


def unlocked_in_index(repo: AnnexRepo, files: Sequence[str]) -> dict[str, Key]:
    """Of ``files``, those staged as unlocked (pointer blob) and their keys.

    One ``cat-file --batch-check`` for all of them, then one batched read of the
    pointer-sized blobs. (A pointer blob ends in a newline; an annex symlink's
    target never does.)
    """
    plain = [f for f in files if "\n" not in f]
    if not plain:
        return {}
    out = repo.git.run("cat-file", "--batch-check",
                       input=b"".join(b":" + f.encode("utf-8", "surrogateescape") + b"\n"
                                      for f in plain))
    oids: dict[str, str] = {}
    for f, line in zip(plain, out.split(b"\n"), strict=False):
        parts = line.split(b" ")
        if len(parts) == 3 and parts[1] == b"blob" and int(parts[2]) <= MAX_POINTER_SIZE:
            oids[f] = parts[0].decode()
    if not oids:
        return {}
    blobs = {oid: obj.data for oid, obj in repo.catfile.get_many(set(oids.values())) if obj}
    result: dict[str, Key] = {}
    for f, oid in oids.items():
        data = blobs.get(oid, b"")
        key = parse_pointer(data) if data.endswith(b"\n") else None
        if key is not None:
            result[f] = key
    return result


def read_pointer_file(path: str | os.PathLike[str]) -> Key | None:
    """The key a work-tree file points to when it is a pointer file (content absent).

    Never follows symlinks and never reads more than a pointer can be; a populated
    unlocked file, a directory or a missing file give None.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_POINTER_SIZE:
            return None
        data = os.read(fd, MAX_POINTER_SIZE + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_pointer(data)


def work_path(repo: AnnexRepo, file: str) -> Path:
    """The absolute work-tree path of a top-relative file."""
    return repo.top / file
