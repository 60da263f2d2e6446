"""Preferred content: which repository wants which content. One place for the decision.

Theory of operation
-------------------
:class:`ContentPolicy` is built from a snapshot of the git-annex branch's settings
(preferred-content.log, required-content.log, group.log, trust.log,
group-preferred-content.log, numcopies.log) and then answers, without I/O:

* :meth:`wants` — does repository U want the content of (file, key), given where the
  content is now? (git-annex's ``wantGet`` / ``wantGetBy``)
* :meth:`wants_drop` — may U drop it? Evaluated as if U had already dropped it (U is
  left out of the copy counts); required content always blocks. (``wantDrop``)

A repository without an expression is governed by the caller's ``default``:
``sync --content`` and the assistant pass True ("wants everything"), the ``--auto``
forms of get/copy/drop pass False. Every later router (the network map's least-cost
routes) asks this object what each repository wants.

git-annex's rules, checked against ``git annex find --want-get`` / ``--want-drop``
of 10.20261026 (tests/cli/test_config_cmds.py):

* **Required content is also preferred.** A repository's preferred expression is its
  ``wanted`` expression or-ed with its ``required`` one; when only one is set (or the
  other is empty) it is that one alone, so a repository with only ``required`` set
  wants just its required content, whatever the caller's default.
* **Unparsable expressions** (written by a newer git-annex) mean ``present``: keep
  what is here, fetch nothing. If either of wanted/required fails to parse, the
  combined preferred expression is ``present``; a referenced ``groupwanted`` that
  fails to parse makes the whole expression ``present``.
* **groupwanted** uses the expression of the repository's group only when exactly one
  of its groups has one (otherwise it behaves like ``present``).
* **Unstable negation.** An expression in which ``present`` (directly, or inside the
  ``standard``/``groupwanted`` it expands to, including their ``present`` fallback) or
  a ``balanced`` term is negated would flip-flop (get, then drop, then get...);
  git-annex refuses to use it: it matches nothing ("not stable due to negated use").
* A **dead** repository wants nothing (annexsync's rule: content is never sent to it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache

from annexsync.annex.keys import Key
from annexsync.annex.logs import (
    current_uuid_values,
    parse_map_log,
    parse_single_value_log,
    parse_uuid_log,
    trust_levels,
)
from annexsync.policy.expression import (
    And,
    Balanced,
    Expr,
    ExpressionError,
    GroupWanted,
    MatchContext,
    Not,
    Or,
    Present,
    Standard,
    Term,
    TrustLevel,
    matches,
    parse,
    standard_expression,
    standard_group,
)

_TRUST: dict[str, TrustLevel] = {"1": "trusted", "?": "semitrusted", "0": "untrusted",
                                 "X": "dead"}
_PRESENT = Present()


@cache
def _standard_expr(group: str) -> Expr | None:
    text = standard_expression(group)
    return parse(text) if text else None


def _combine(a: Expr | None, b: Expr | None) -> Expr | None:
    """git-annex's ``combineMatchers``: an empty side yields the other, else ``a or b``."""
    if a is None or a.is_empty:
        return b if b is not None else a
    if b is None or b.is_empty:
        return a
    return Or(a, b)


def _negated_terms(e: Expr, negated: bool = False) -> Iterator[Term]:
    """git-annex's ``findNegated``: the terms under an odd number of ``not``."""
    if isinstance(e, Not):
        yield from _negated_terms(e.operand, not negated)
    elif isinstance(e, And | Or):
        yield from _negated_terms(e.left, negated)
        yield from _negated_terms(e.right, negated)
    elif negated and isinstance(e, Term):
        yield e


@dataclass
class ContentPolicy:
    """Preferred/required content of every repository, evaluated purely."""

    wanted: dict[str, Expr] = field(default_factory=dict)
    required: dict[str, Expr] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    trust: dict[str, TrustLevel] = field(default_factory=dict)
    groupwanted: dict[str, Expr] = field(default_factory=dict)
    numcopies: int = 1
    errors: dict[str, str] = field(default_factory=dict)  # uuid -> bad expression message

    @classmethod
    def from_logs(cls, logs: Mapping[str, bytes]) -> ContentPolicy:
        """Build from branch file contents (missing files may be absent or empty)."""
        p = cls()

        def uuid_map(name: str) -> dict[str, str]:
            return {u: line.value for u, line in
                    current_uuid_values(parse_uuid_log(logs.get(name, b""))).items()}

        for u, code in trust_levels(parse_uuid_log(logs.get("trust.log", b""))).items():
            p.trust[u] = _TRUST.get(code, "semitrusted")
        for u, text in uuid_map("group.log").items():
            p.groups[u] = frozenset(text.split())
        for name, target in (("preferred-content.log", p.wanted),
                             ("required-content.log", p.required)):
            for u, text in uuid_map(name).items():
                try:
                    target[u] = parse(text)
                except ExpressionError as e:
                    target[u] = _PRESENT
                    p.errors[u] = f"{name}: {e}"
        for group, (_, text) in parse_map_log(logs.get("group-preferred-content.log",
                                                       b"")).items():
            try:
                p.groupwanted[group] = parse(text)
            except ExpressionError as e:
                p.errors[f"group {group}"] = str(e)
        nc = parse_single_value_log(logs.get("numcopies.log", b""))
        if nc is not None:
            try:
                p.numcopies = max(1, int(nc.value))
            except ValueError:
                pass
        return p

    LOGS = ("preferred-content.log", "required-content.log", "group.log", "trust.log",
            "group-preferred-content.log", "numcopies.log")

    # -- expressions -----------------------------------------------------------------
    def _groupwanted_group(self, uuid: str) -> str | None:
        """The one group of ``uuid`` that has a groupwanted expression (parsable or not)."""
        mine = [g for g in self.groups.get(uuid, frozenset())
                if g in self.groupwanted or f"group {g}" in self.errors]
        return mine[0] if len(mine) == 1 else None

    def _groupwanted_expr(self, uuid: str) -> Expr | None:
        g = self._groupwanted_group(uuid)
        return None if g is None else self.groupwanted.get(g)

    def _standard_of(self, uuid: str) -> Expr | None:
        g = standard_group(self.groups.get(uuid, frozenset()))
        return _standard_expr(g) if g else None

    def _resolved(self, uuid: str, expr: Expr) -> Expr:
        """``expr``, or ``present`` when a groupwanted it uses does not parse."""
        if any(isinstance(t, GroupWanted) for t in expr.terms()):
            g = self._groupwanted_group(uuid)
            if g is not None and g not in self.groupwanted:
                return _PRESENT
        return expr

    def may_drop_anything(self) -> bool:
        """Could any repository want to drop content? Only one with a preferred or
        required content expression can (without one, content is kept)."""
        return bool(self.wanted) or bool(self.required)

    def preferred_expression(self, uuid: str) -> Expr | None:
        """The expression git-annex evaluates for ``uuid``'s preferred content (wanted
        or-ed with required), or None when neither is configured."""
        if uuid not in self.wanted and uuid not in self.required:
            return None
        if uuid in self.errors:
            return _PRESENT
        combined = _combine(self.wanted.get(uuid), self.required.get(uuid))
        return None if combined is None else self._resolved(uuid, combined)

    def required_expression(self, uuid: str) -> Expr | None:
        """``uuid``'s required content expression, or None when not configured."""
        expr = self.required.get(uuid)
        return None if expr is None else self._resolved(uuid, expr)

    def _unstable(self, uuid: str, expr: Expr) -> bool:
        """Does ``expr`` negate ``present`` (or a ``balanced`` term), directly or in
        the ``standard``/``groupwanted`` expansion it negates?"""
        return any(self._term_unstable(uuid, t, True, True) for t in _negated_terms(expr))

    def _term_unstable(self, uuid: str, term: Term, standard: bool, groupwanted: bool) -> bool:
        if isinstance(term, Present | Balanced):
            return True
        if isinstance(term, Standard):
            sub = self._standard_of(uuid) if standard else None
            return sub is None or any(self._term_unstable(uuid, t, False, False)
                                      for t in sub.terms())
        if isinstance(term, GroupWanted):
            sub = self._groupwanted_expr(uuid) if groupwanted else None
            return sub is None or any(self._term_unstable(uuid, t, standard, False)
                                      for t in sub.terms())
        return False

    def _check(self, uuid: str, expr: Expr | None, ctx: MatchContext, default: bool) -> bool:
        """git-annex's ``checkMap``/``checkMatcher``."""
        if expr is None or expr.is_empty:
            return default
        if self._unstable(uuid, expr):
            return False
        return matches(expr, ctx, default)

    # -- evaluation ----------------------------------------------------------------
    def _context(self, uuid: str, file: str | None, key: Key, locations: frozenset[str],
                 present: bool, numcopies: int | None) -> MatchContext:
        return MatchContext(file=file, key_backend=key.backend, size=key.size,
                            present=present, locations=locations, trust=self.trust,
                            groups=self.groups, numcopies=numcopies or self.numcopies,
                            standard_expr=lambda: self._standard_of(uuid),
                            groupwanted_expr=lambda: self._groupwanted_expr(uuid))

    def wants(self, uuid: str, file: str | None, key: Key, locations: frozenset[str], *,
              default: bool = True, numcopies: int | None = None) -> bool:
        """Does ``uuid`` want this content? (``present`` = uuid in locations.)"""
        if self.trust.get(uuid) == "dead":
            return False
        ctx = self._context(uuid, file, key, locations, uuid in locations, numcopies)
        return self._check(uuid, self.preferred_expression(uuid), ctx, default)

    def wants_drop(self, uuid: str, file: str | None, key: Key, locations: frozenset[str], *,
                   default: bool = True, numcopies: int | None = None) -> bool:
        """May ``uuid`` drop this content? Evaluated as if it already had."""
        others = locations - {uuid}
        ctx = self._context(uuid, file, key, others, uuid in locations, numcopies)
        if self._check(uuid, self.required_expression(uuid), ctx, False):
            return False
        return not self._check(uuid, self.preferred_expression(uuid), ctx, default)
