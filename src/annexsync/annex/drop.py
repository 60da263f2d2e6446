"""Dropping content, here or from a remote, only when enough copies are proven.

Theory of operation
-------------------
*Dropping here*: first the exclusive content lock on our own copy (nobody may be
counting on it, and nobody can lock it as a proof while we drop). Then proofs are
collected from the repositories the location log names: trusted ones count
without contact (TrustedCopy); the others are tried cheapest first — a remote that
can lock content (a local git remote) is asked to, and its lock is *held until our
copy is gone* (LockedCopy); one that cannot (special remotes) is asked whether it
has the content (RecentlyVerifiedCopy). Collection stops once enough proofs are in.
:func:`annexsync.policy.numcopies.drop_decision` then says yes or no.

*Dropping from a remote*: our own copy, when present, is locked (shared) and is a
LockedCopy; the rest as above, never counting the remote being dropped from.

``force`` skips the proofs. Without it, no path drops a copy that the proofs do not
cover, so the last copy is never dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.keys import Key
from annexsync.annex.locks import LockBusy
from annexsync.annex.logs import parse_single_value_log
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.repos import RepoMap
from annexsync.annex.unlocked import UnlockedContent
from annexsync.git.attributes import CheckAttr
from annexsync.policy.numcopies import (
    CopyNeeds,
    DropDecision,
    Proof,
    ProofKind,
    drop_decision,
    resolve_needs,
)
from annexsync.remotes.base import RecentlyAvailable, Remote, RemoteError
from annexsync.transfers.locationlog import LocationRecorder

MOVE_HINT = "Rather than dropping this file, try using: annexsync move"


@dataclass
class DropResult:
    key: Key
    success: bool
    dropped: bool = False  # content was actually removed
    error: str | None = None
    unsafe: DropDecision | None = None


class Dropper:
    """Drops for one command; holds the settings and repository knowledge it needs."""

    def __init__(self, repo: AnnexRepo, branch: AnnexBranch, remotes: Sequence[Remote],
                 repos: RepoMap, recorder: LocationRecorder, *, force: bool = False,
                 numcopies: int | None = None, mincopies: int | None = None) -> None:
        self.repo = repo
        self.branch = branch
        self.remotes = list(remotes)
        self.repos = repos
        self.recorder = recorder
        self.force = force
        self.store = ObjectStore(repo.annex_dir, bare=repo.bare)
        logs = branch.read_many(["numcopies.log", "mincopies.log"])
        n = parse_single_value_log(logs["numcopies.log"])
        m = parse_single_value_log(logs["mincopies.log"])
        self._numcopies_log = n.value if n else None
        self._mincopies_log = m.value if m else None
        self._git_numcopies = repo.config.get("annex.numcopies")
        self._cli = (numcopies, mincopies)
        self._attrs = (CheckAttr(repo.git, ["annex.numcopies", "annex.mincopies"],
                                 keep_alive=True)
                       if not repo.bare else None)
        # Asked per key (an ssh remote answers with a new session): seen up lately
        # counts as up; one gone meanwhile fails its lock or check, which says so.
        self.available = RecentlyAvailable()
        # The attributes of each file asked about (a drop asks again for its decision).
        self._file_attrs: dict[str, tuple[str | None, str | None]] = {}
        self.peer_recorders: dict[str, LocationRecorder] = {}
        self._unlocked: UnlockedContent | None = None  # opened by the first drop that needs it

    def needs(self, files: Sequence[str]) -> CopyNeeds:
        """numcopies/mincopies for a key used by ``files``."""
        attrs: list[tuple[str | None, str | None]] = []
        if files and self._attrs is not None:
            cache = self._file_attrs
            missing = [f for f in files if f not in cache]
            for f, a in zip(missing, self._attrs.get_many(missing), strict=True):
                cache[f] = (a.get("annex.numcopies"), a.get("annex.mincopies"))
            attrs = [cache[f] for f in files]
        return resolve_needs(file_attrs=attrs, numcopies_log=self._numcopies_log,
                             mincopies_log=self._mincopies_log,
                             git_numcopies=self._git_numcopies,
                             cli_numcopies=self._cli[0], cli_mincopies=self._cli[1])

    def _proofs(self, key: Key, locations: set[str], exclude: str, need: int,
                stack: ExitStack, proofs: list[Proof]) -> list[str]:
        """Collect proofs into ``proofs`` (locks held by ``stack``); return lockless names."""
        trust = self.repos.trust_of
        for u in sorted(locations):
            if u != exclude and u != self.repos.here and trust(u) == "trusted":
                proofs.append(Proof(u, ProofKind.TRUSTED))
        lockless: list[str] = []
        for r in self.remotes:  # already cheapest first
            if len({p.uuid for p in proofs}) >= need:
                break
            u = r.info.uuid
            if u == exclude or u not in locations or trust(u) in ("untrusted", "dead"):
                continue
            if any(p.uuid == u for p in proofs):
                continue
            try:
                if not self.available(r):
                    continue
                if r.info.supports_locking:
                    if stack.enter_context(r.lock_content(key)):
                        proofs.append(Proof(u, ProofKind.LOCKED))
                elif r.check_present(key):
                    proofs.append(Proof(u, ProofKind.RECENTLY_VERIFIED))
                    lockless.append(r.info.name)
            except (RemoteError, OSError):
                continue
        return lockless

    def drop_here(self, key: Key, files: Sequence[str], locations: set[str], *,
                  moved_to: str | None = None) -> DropResult:
        """Drop our copy of ``key`` if enough other copies are proven (or ``force``).

        ``moved_to``: the UUID that just received a verified copy (``move``): the
        drop then never makes the number of copies worse, so, as in git-annex, it is
        allowed once that copy is proven even if numcopies is not met.
        """
        if not self.store.has(key):
            return DropResult(key, True)
        try:
            lock = self.store.lock_exclusive(key)
        except LockBusy:
            return DropResult(key, False, error="content is locked by another process "
                              "(in use for a transfer or a drop elsewhere)")
        with lock, ExitStack() as stack:
            if not self.force:
                needs = self.needs(files)
                proofs: list[Proof] = []
                need = max(needs.numcopies, needs.mincopies)
                lockless = self._proofs(key, locations, self.repos.here, need, stack, proofs)
                decision = drop_decision(proofs, needs, from_remote=False,
                                         lock_unsupported=lockless, move_hint=MOVE_HINT)
                if not decision.safe and not (moved_to and any(p.uuid == moved_to
                                                               for p in proofs)):
                    return DropResult(key, False, unsafe=decision)
            self.store.remove(key, lock)
        self.recorder.record(key, self.repos.here, False)
        if not self.repo.bare:
            # As git-annex: unlocked files holding the content (any the keys database
            # knows, not only ``files``) become pointers again; a modified one is left
            # alone (it is not this content any more).
            if self._unlocked is None:
                self._unlocked = UnlockedContent(self.repo)
            self._unlocked.depopulate(key)
        return DropResult(key, True, dropped=True)

    def drop_from(self, remote: Remote, key: Key, files: Sequence[str],
                  locations: set[str], *, moved_here: bool = False) -> DropResult:
        """Drop ``key`` from ``remote`` if enough other copies are proven (or ``force``).

        ``moved_here``: we just received a verified copy (``move --from``); see
        :meth:`drop_here`.
        """
        with ExitStack() as stack:
            if not self.force:
                needs = self.needs(files)
                proofs: list[Proof] = []
                if self.store.has(key):
                    try:
                        stack.enter_context(self.store.lock_shared(key))
                        if self.store.has(key):
                            proofs.append(Proof(self.repos.here, ProofKind.LOCKED))
                    except LockBusy:
                        pass
                lockless = self._proofs(key, locations, remote.info.uuid, needs.numcopies,
                                        stack, proofs)
                decision = drop_decision(proofs, needs, from_remote=True,
                                         lock_unsupported=lockless)
                if not decision.safe and not (moved_here and any(
                        p.uuid == self.repos.here for p in proofs)):
                    return DropResult(key, False, unsafe=decision)
            try:
                remote.remove(key)
            except (RemoteError, OSError) as e:
                return DropResult(key, False, error=str(e))
        self.recorder.record(key, remote.info.uuid, False)
        peer = getattr(remote, "location_recorder", None)
        if callable(peer):
            rec = self.peer_recorders.get(remote.info.uuid)
            if rec is None:
                rec = peer()
                self.peer_recorders[remote.info.uuid] = rec
            rec.record(key, remote.info.uuid, False)
        return DropResult(key, True, dropped=True)

    def close(self) -> None:
        """Flush the remotes' location logs (ours is flushed by its owner); restage
        unlocked files made pointers again."""
        if self._unlocked is not None:
            self._unlocked.close()
            self._unlocked = None
        for rec in self.peer_recorders.values():
            rec.flush()
        if self._attrs is not None:
            self._attrs.close()
