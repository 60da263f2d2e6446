"""numcopies, mincopies and drop safety: git-annex's rules as pure functions.

Where the values come from (highest priority first):

* numcopies: ``--numcopies``; the ``annex.numcopies`` gitattribute of the file;
  ``numcopies.log`` (``git annex numcopies N``); the deprecated ``annex.numcopies``
  git config; default 1.
* mincopies: ``--mincopies``; the ``annex.mincopies`` gitattribute; ``mincopies.log``;
  default 1.

A value of 0 or less counts as 1. For a key used by several files the maximum over
those files applies, so a file in a stricter directory protects shared content.

Drop safety takes *proofs* that other repositories have the content:
``LockedCopy`` (content locked there for the duration of the drop, or our own
locked copy when dropping from a remote), ``TrustedCopy`` (a trusted repository,
believed without contact) and ``RecentlyVerifiedCopy`` (the remote answered that it
has it; all special remotes can give). Dropping here needs proofs from at least
max(numcopies, mincopies) distinct other repositories; dropping from a remote needs
numcopies proofs of which at least mincopies are Locked or Trusted, so concurrent
drops can never push the count below mincopies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "CopyNeeds",
    "DropDecision",
    "Proof",
    "ProofKind",
    "auto_drop_allowed",
    "count_copies",
    "drop_decision",
    "parse_copies",
    "resolve_needs",
]


def parse_copies(value: str | None) -> int | None:
    """An integer setting, None when unset or unparsable; <= 0 is forced to 1."""
    if value is None:
        return None
    try:
        n = int(value.strip())
    except ValueError:
        return None
    return max(n, 1)


@dataclass(frozen=True, slots=True)
class CopyNeeds:
    """How many copies a key must keep."""

    numcopies: int = 1
    mincopies: int = 1


def resolve_needs(*, file_attrs: Iterable[tuple[str | None, str | None]] = (),
                  numcopies_log: str | None = None, mincopies_log: str | None = None,
                  git_numcopies: str | None = None, cli_numcopies: int | None = None,
                  cli_mincopies: int | None = None) -> CopyNeeds:
    """Resolve numcopies/mincopies for one key.

    ``file_attrs`` holds ``(annex.numcopies, annex.mincopies)`` attribute values of
    every file using the key (an empty iterable when none is known).
    """
    base_n = parse_copies(numcopies_log) or parse_copies(git_numcopies) or 1
    base_m = parse_copies(mincopies_log) or 1
    attrs = list(file_attrs) or [(None, None)]
    n = max((cli_numcopies and max(cli_numcopies, 1)) or parse_copies(a) or base_n
            for a, _ in attrs)
    m = max((cli_mincopies and max(cli_mincopies, 1)) or parse_copies(b) or base_m
            for _, b in attrs)
    return CopyNeeds(n, m)


class ProofKind(Enum):
    RECENTLY_VERIFIED = "RecentlyVerifiedCopy"
    TRUSTED = "TrustedCopy"
    LOCKED = "LockedCopy"


@dataclass(frozen=True, slots=True)
class Proof:
    """Evidence that repository ``uuid`` has the content."""

    uuid: str
    kind: ProofKind


@dataclass(frozen=True, slots=True)
class DropDecision:
    """Whether a drop is safe, and git-annex's explanation when it is not."""

    safe: bool
    have: int
    need: int
    lines: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return "\n".join(self.lines)


def _copies(n: int) -> str:
    return "copy" if n == 1 else "copies"


def drop_decision(proofs: Iterable[Proof], needs: CopyNeeds, *, from_remote: bool,
                  lock_unsupported: Iterable[str] = (), move_hint: str | None = None
                  ) -> DropDecision:
    """Decide a drop from proofs (see the module docstring).

    ``from_remote``: dropping from a remote (our own copy may be among the proofs)
    rather than from here. ``lock_unsupported`` names remotes that could only give
    RecentlyVerifiedCopy proofs (for the message).
    """
    best: dict[str, ProofKind] = {}
    rank = {ProofKind.RECENTLY_VERIFIED: 0, ProofKind.TRUSTED: 1, ProofKind.LOCKED: 2}
    for p in proofs:
        if p.uuid not in best or rank[p.kind] > rank[best[p.uuid]]:
            best[p.uuid] = p.kind
    have = len(best)
    strong = sum(1 for k in best.values() if k is not ProofKind.RECENTLY_VERIFIED)
    if from_remote:
        need = needs.numcopies
        safe = have >= need and strong >= needs.mincopies
    else:
        need = max(needs.numcopies, needs.mincopies)
        safe = have >= need
    if safe:
        return DropDecision(True, have, need)
    lines: list[str] = []
    if have < need:
        if have == 0:
            lines.append(f"Could not verify the existence of the {need} necessary "
                         f"{_copies(need)}.")
        else:
            lines.append(f"Could only verify the existence of {have} out of {need} "
                         f"necessary {_copies(need)}")
        if move_hint:
            lines.append(move_hint)
    else:
        m = needs.mincopies
        lines.append(f"Unable to lock down {m} {_copies(m)} of file necessary to safely "
                     "drop it.")
        unsupported = sorted(set(lock_unsupported))
        if unsupported:
            lines.append("These remotes do not support locking: " + ", ".join(unsupported))
        else:
            lines.append("(This could have happened because of a concurrent drop, or "
                         "because a remote has too old a version of git-annex-shell "
                         "installed.)")
    lines.append("(Use --force to override this check, or adjust numcopies.)")
    return DropDecision(False, have, need, tuple(lines))


def count_copies(locations: Iterable[str], trust: Mapping[str, str]) -> int:
    """Copies that count: locations that are neither untrusted nor dead."""
    return sum(1 for u in set(locations) if trust.get(u, "semitrusted")
               not in ("untrusted", "dead"))


def auto_drop_allowed(have: int, needs: CopyNeeds, *, dropping_untrusted: bool = False) -> bool:
    """The ``--auto`` pre-check: more copies than both numcopies and mincopies.

    ``have`` counts non-untrusted locations including the repository dropped from;
    when that repository is itself untrusted, ``>=`` is used.
    """
    if dropping_untrusted:
        return have >= needs.numcopies and have >= needs.mincopies
    return have > needs.numcopies and have > needs.mincopies
