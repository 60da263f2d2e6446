"""fsck: verify annexed content, repair what can be repaired, report the rest.

Theory of operation
-------------------
For each annexed file under the given paths (its key from the index), in order:

1. *Content here*: the object is hashed against its key (``--fast``: only its size is
   checked). Bad content is moved aside to ``.git/annex/bad/<keyfile>`` (a numbered
   name if that exists: nothing is ever deleted) under the object's exclusive content
   lock, and the key counts as absent.
2. *Repair from the work tree*: when the object is absent but an unlocked work-tree
   file of the key holds the content (proven by hashing it, or with ``--fast`` by its
   inode cache), a copy goes back into the store. (git-annex leaves such content
   only in the work tree.)
3. *Location log*: present but not logged here -> logged present; logged here but
   absent -> logged absent, and the file fails (git-annex: "was expected to be
   present").
4. *Work tree*: an unlocked file that is still a pointer while its content is present
   is filled in ("fixing worktree content").
5. *Copies*: fewer non-untrusted, non-dead copies than numcopies fails the file.

Each key is checked once even when several files use it. ``--from REMOTE`` checks a
remote instead: its presence is asked, and unless ``--fast`` the content is
downloaded to a temp file and hashed; the location log for that remote is fixed to
match. A bad remote copy is downloaded into ``.git/annex/bad`` for inspection and
logged as missing there, but never removed from the remote.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from annexsync.annex.backends import hasher_for_key, verify_file
from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.keysdb import InodeCache
from annexsync.annex.location import locations_many, log_presence, now
from annexsync.annex.locks import LockBusy
from annexsync.annex.logs import parse_single_value_log
from annexsync.annex.objects import ObjectStore, remove_empty_key_dirs
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.repos import RepoMap
from annexsync.annex.unlocked import UnlockedContent, copy_fd
from annexsync.annex.worktree import AnnexedFile, annexed_files, read_pointer_file
from annexsync.errors import AnnexError
from annexsync.git.attributes import CheckAttr
from annexsync.util.fs import make_writable_dir


@dataclass
class FsckResult:
    """The verdict on one file."""

    file: str
    key: Key
    success: bool
    notes: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    untrusted: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


@dataclass
class _KeyState:
    present: bool
    ok: bool
    notes: list[str]
    messages: list[str]


def bad_path_for(annex_dir: Path, key: Key) -> Path:
    """Where bad content of ``key`` goes: ``bad/<keyfile>``, numbered if taken."""
    bad = annex_dir / "bad"
    dest = bad / key.key_file
    n = 1
    while os.path.lexists(dest):
        dest = bad / f"{key.key_file}.{n}"
        n += 1
    return dest


class Fsck:
    """Checks files of one repository (or of one remote, with ``remote``)."""

    def __init__(self, repo: AnnexRepo, *, fast: bool = False, remote: object | None = None
                 ) -> None:
        self.repo = repo
        self.fast = fast
        self.remote = remote
        self.branch = AnnexBranch(repo)
        self.store = ObjectStore(repo.annex_dir, bare=repo.bare)
        self.uuid = repo.uuid
        self.repos = RepoMap.load(repo, self.branch)
        self._where: dict[Key, set[str]] = {}
        entry = parse_single_value_log(self.branch.read("numcopies.log"))
        self.numcopies = _int(entry.value if entry else None) or \
            _int(repo.config.get("annex.numcopies")) or 1

    def run(self, paths: Sequence[str]) -> Iterator[FsckResult]:
        files = annexed_files(self.repo, paths)
        if not files:
            return
        attrs = self._numcopies_attrs(files)
        where = locations_many(self.branch, [f.key for f in files])
        self._where = where
        by_key: dict[Key, list[AnnexedFile]] = {}
        for af in files:
            by_key.setdefault(af.key, []).append(af)
        done: dict[Key, _KeyState] = {}
        uc = UnlockedContent(self.repo) if not self.repo.bare else None
        try:
            for af in files:
                state = done.get(af.key)
                if state is None:
                    if self.remote is not None:
                        state = self._check_remote(af, where[af.key])
                    else:
                        state = self._check_here(af, by_key[af.key], where[af.key], uc)
                    done[af.key] = state
                    first = True
                else:
                    first = False
                res = FsckResult(af.file, af.key, state.ok,
                                 list(state.notes) if first else [],
                                 [m.replace("{file}", af.file) for m in state.messages])
                if not af.locked and uc is not None and self.remote is None \
                        and state.present \
                        and read_pointer_file(self.repo.top / af.file) == af.key \
                        and uc.populate_file(af.key, af.file):
                    res.notes.append("fixing worktree content")
                self._check_copies(res, attrs.get(af.file))
                yield res
        finally:
            if uc is not None:
                uc.close()
            self.branch.commit()

    # -- content here ----------------------------------------------------------------
    def _check_here(self, af: AnnexedFile, users: list[AnnexedFile], logged: set[str],
                    uc: UnlockedContent | None) -> _KeyState:
        key = af.key
        notes: list[str] = []
        messages: list[str] = []
        ok = True
        obj = self.store.find(key)
        if obj is not None:
            if not self.fast and hasher_for_key(key) is not None:
                notes.append("checksum...")
            good = self._verify(obj, key)
            if not good:
                ok = False
                try:
                    dest = self._move_bad(key, obj)
                except (LockBusy, OSError) as e:
                    why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
                    messages.append(f"{{file}}: Bad file content; could not move it aside "
                                    f"({why})")
                    return _KeyState(True, False, notes, messages)
                rel = os.path.relpath(dest, self.repo.top)
                messages.append(f"{{file}}: Bad file content; moved to {rel}")
                obj = None
                # Like git-annex's moveBad: the log says absent right away (no
                # "fixing location log" for it).
                if self.uuid in logged:
                    log_presence(self.branch, key, self.uuid, False, now())
                    logged.discard(self.uuid)
        if obj is None and uc is not None:
            source = self._restore_from_worktree(key, users, uc)
            if source is not None:
                notes.append(f"content restored from {source}")
                obj = self.store.find(key)
        present = obj is not None
        here_logged = self.uuid in logged
        if present and not here_logged:
            notes.insert(0, "fixing location log")
            log_presence(self.branch, key, self.uuid, True, now())
            logged.add(self.uuid)
        elif not present and here_logged:
            notes.insert(0, "fixing location log")
            log_presence(self.branch, key, self.uuid, False, now())
            logged.discard(self.uuid)
            if ok:
                messages.append("** Based on the location log, {file}\n"
                                "** was expected to be present, but its content is missing.")
            ok = False
        return _KeyState(present, ok, notes, messages)

    def _verify(self, path: Path, key: Key) -> bool:
        try:
            if self.fast:
                st = os.stat(path)
                return key.size is None or key.is_chunk or st.st_size == key.size
            return verify_file(path, key)
        except (OSError, AnnexError):
            return False

    def _move_bad(self, key: Key, obj: Path) -> Path:
        with self.store.lock_exclusive(key):
            dest = bad_path_for(self.repo.annex_dir, key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            keydir = obj.parent
            make_writable_dir(keydir)
            os.rename(obj, dest)
            for p in (obj.with_name(obj.name + ".lck"),):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            remove_empty_key_dirs(keydir)
        return dest

    def _restore_from_worktree(self, key: Key, users: list[AnnexedFile],
                               uc: UnlockedContent) -> str | None:
        for af in users:
            if af.locked:
                continue
            path = self.repo.top / af.file
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or read_pointer_file(path) is not None:
                continue
            ic = InodeCache.from_stat(st)
            if self.fast:
                if not uc.db.is_unmodified_cheap(key, ic):
                    continue
            elif hasher_for_key(key) is None or not verify_file(path, key):
                continue
            if self._copy_in(key, path, st):
                return af.file
        return None

    def _copy_in(self, key: Key, path: Path, st: os.stat_result) -> bool:
        tmpdir = self.repo.annex_path("tmp")
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"fsck.{os.getpid()}.{key.key_file}"[:255]
        src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o444)
            try:
                copy_fd(src, dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        # The copy is what enters the store, so it is the copy that gets verified.
        if hasher_for_key(key) is not None and not verify_file(tmp, key):
            os.unlink(tmp)
            return False
        os.chmod(tmp, 0o555 if st.st_mode & 0o100 else 0o444)
        self.store.move_in(key, tmp, durable=True)
        return True

    # -- a remote --------------------------------------------------------------------
    def _check_remote(self, af: AnnexedFile, logged: set[str]) -> _KeyState:
        from annexsync.remotes.base import RemoteError

        remote = self.remote
        info = remote.info  # type: ignore[attr-defined]
        key = af.key
        notes: list[str] = []
        messages: list[str] = []
        try:
            present = bool(remote.check_present(key))  # type: ignore[attr-defined]
        except RemoteError as e:
            return _KeyState(False, False, notes, [f"{{file}}: cannot check {info.name}: {e}"])
        ok = True
        if present and not self.fast and hasher_for_key(key) is not None:
            notes.append("checksum...")
            try:
                good, tmp = self._download_verify(key)
            except RemoteError as e:
                return _KeyState(True, False, notes,
                                 [f"{{file}}: cannot read it from {info.name}: {e}"])
            if not good:
                dest = bad_path_for(self.repo.annex_dir, key)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tmp, dest)
                messages.append(f"{{file}}: Bad file content on {info.name}; a copy is in "
                                f"{os.path.relpath(dest, self.repo.top)} (the remote copy was "
                                "left in place)")
                ok = False
                present = False
            elif tmp is not None:
                os.unlink(tmp)
        was = info.uuid in logged
        if present != was:
            notes.insert(0, "fixing location log")
            log_presence(self.branch, key, info.uuid, present, now())
            (logged.add if present else logged.discard)(info.uuid)
        if not present and was and ok:
            messages.append(f"** Based on the location log, {{file}}\n"
                            f"** was expected to be present in {info.name}, but its content "
                            "is missing.")
            ok = False
        return _KeyState(present, ok, notes, messages)

    def _download_verify(self, key: Key) -> tuple[bool, Path | None]:
        hasher = hasher_for_key(key)
        tmpdir = self.repo.annex_path("tmp")
        tmpdir.mkdir(parents=True, exist_ok=True)
        tmp = tmpdir / f"fsck.{os.getpid()}.{key.key_file}"[:255]
        total = 0
        with open(tmp, "wb") as fh:
            class _Sink:
                def write(self, data: bytes) -> int:
                    nonlocal total
                    if hasher is not None:
                        hasher.update(data)
                    total += len(data)
                    return fh.write(data)
            self.remote.retrieve(key, _Sink(), 0, lambda n: None)  # type: ignore[attr-defined]
        good = (key.size is None or total == key.size) and (
            hasher is None or hasher.hexdigest() == key.hash_digest)
        return good, tmp

    # -- copies --------------------------------------------------------------------------
    def _numcopies_attrs(self, files: list[AnnexedFile]) -> dict[str, int]:
        names = [f.file for f in files if "\n" not in f.file]
        if not names:
            return {}
        values = CheckAttr(self.repo.git, ["annex.numcopies"]).get_many(names)
        out: dict[str, int] = {}
        for f, v in zip(names, values, strict=True):
            n = _int(v.get("annex.numcopies"))
            if n is not None:
                out[f] = n
        return out

    def _check_copies(self, res: FsckResult, attr: int | None) -> None:
        needed = attr or self.numcopies
        locs = self._where.get(res.key, set())
        trust = self.repos.trust
        res.untrusted = sorted(u for u in locs if trust.get(u) == "untrusted")
        res.dead = sorted(u for u in locs if trust.get(u) == "dead")
        have = len([u for u in locs if trust.get(u, "semitrusted") not in ("untrusted", "dead")])
        if have >= needed:
            return
        res.success = False
        if have == 0:
            res.messages.append(f"** No known copies exist of {res.file}")
        else:
            res.messages.append(f"Only {have} of {needed} trustworthy copies exist of "
                                f"{res.file}\nBack it up with git-annex copy.")


def _int(v: str | None) -> int | None:
    if v is None:
        return None
    try:
        return max(int(v.strip()), 1)
    except ValueError:
        return None
