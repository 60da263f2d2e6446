"""Automatic resolution of merge conflicts: every side is kept, named as git-annex names it.

Theory of operation
-------------------
Given the two sides of a conflicted path (either may be missing: a delete), decide
the entries the merged tree gets. Pure: no I/O, the caller reads the index and the
blobs and applies the result.

The rules (git-annex's ``resolveMerge``, extended so that no conflict is left for
the user):

* both sides annexed, same key: keep the name; locked if both were locked;
* both sides annexed, different keys: each side becomes a *variant*
  ``name.variant-XXXX.ext`` where XXXX is the first 4 hex digits of md5(key), inserted
  before the last extension (``foo.tar.gz`` -> ``foo.tar.variant-XXXX.gz``);
* one side annexed, the other a plain file, a directory or deleted: the plain side
  (if any) keeps the name, the annexed side becomes a variant;
* neither side annexed (git-annex leaves these for the user): each surviving side
  becomes a variant named by md5 of its blob id, so the user finds both;
* a path that already has ``.variant-`` in it uses the whole key file name (or blob id)
  instead of 4 hex digits, so variants of variants cannot collide.

Because names depend only on content (keys, blob ids), two clones that resolve the
same conflict independently produce the same tree and never conflict over it again.
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass

from annexsync.annex.keys import Key

VARIANT_MARKER = ".variant-"


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a conflicted path as found in the index."""

    mode: str  # "100644", "100755", "120000"
    oid: str
    key: Key | None  # set when the blob is an annex symlink or pointer file

    @property
    def annexed(self) -> bool:
        return self.key is not None

    @property
    def locked(self) -> bool:
        return self.mode == "120000"


@dataclass(frozen=True, slots=True)
class Entry:
    """A stage-0 index entry the resolution produces."""

    path: str
    mode: str
    oid: str
    key: Key | None


def _split_ext(path: str) -> tuple[str, str]:
    """Like Haskell's splitExtension: the last extension; ``.bashrc`` is all extension."""
    directory, base = posixpath.split(path)
    dot = base.rfind(".")
    if dot == -1:
        return path, ""
    stem, ext = base[:dot], base[dot:]
    return posixpath.join(directory, stem) if directory else stem, ext


def variant_name(path: str, tag_source: str, *, full: str | None = None) -> str:
    """``path`` with ``.variant-XXXX`` before its last extension.

    ``tag_source`` is hashed (md5, first 4 hex digits); if ``path`` is already a
    variant, ``full`` (or ``tag_source``) is used whole instead.
    """
    stem, ext = _split_ext(path)
    if VARIANT_MARKER in posixpath.basename(path):
        tag = full if full is not None else tag_source
    else:
        tag = hashlib.md5(tag_source.encode("utf-8", "surrogateescape")).hexdigest()[:4]
    return f"{stem}{VARIANT_MARKER}{tag}{ext}"


def _variant_of(path: str, side: Side) -> Entry:
    if side.key is not None:
        name = variant_name(path, str(side.key), full=side.key.key_file)
    else:
        name = variant_name(path, side.oid)
    return Entry(name, side.mode, side.oid, side.key)


def resolve(path: str, ours: Side | None, theirs: Side | None, *,
            directory_here: bool = False) -> list[Entry]:
    """Entries replacing the conflicted ``path``.

    ``directory_here`` means the merged tree has a directory at ``path`` (a
    file/directory conflict): then no file may keep the name.
    """
    sides = [s for s in (ours, theirs) if s is not None]
    if not sides:
        return []
    if len(sides) == 2 and ours is not None and theirs is not None:
        if ours.annexed and theirs.annexed and ours.key == theirs.key and not directory_here:
            keep = ours if ours.locked and theirs.locked else (
                ours if not ours.locked else theirs)
            return [Entry(path, keep.mode, keep.oid, keep.key)]
        if ours.mode == theirs.mode and ours.oid == theirs.oid and not directory_here:
            return [Entry(path, ours.mode, ours.oid, ours.key)]
    plain = [s for s in sides if not s.annexed]
    annexed = [s for s in sides if s.annexed]
    out: list[Entry] = []
    if len(sides) == 2 and len(plain) == 1 and not directory_here:
        # The plain side keeps the name; the annexed one becomes a variant.
        out.append(Entry(path, plain[0].mode, plain[0].oid, None))
        out.append(_variant_of(path, annexed[0]))
        return out
    for s in sides:
        out.append(_variant_of(path, s))
    # Identical variants (same content on both sides under different modes) collapse.
    seen: dict[str, Entry] = {}
    for e in out:
        seen.setdefault(e.path, e)
    return sorted(seen.values(), key=lambda e: e.path)
