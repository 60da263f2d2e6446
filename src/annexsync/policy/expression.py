"""git-annex matching expressions: preferred/required content and ``annex.largefiles``.

Theory of operation
===================

This module is pure: it parses an expression into a small immutable AST and evaluates
it against a :class:`MatchContext` that the caller fills from the repository (location
log, trust, groups, numcopies, metadata, ...). Behaviour was checked term by term with
``git annex matchexpression`` of git-annex 10.20261026; notes below marked *(binary)*
describe what that binary does where the written reference is silent or differs.

Tokens
------
The text is split on whitespace (Haskell's ``isSpace``), and ``(`` / ``)`` are always
tokens of their own, even when glued to a word: ``(include=*.txt)`` is three tokens.
There is no quoting, so values never contain whitespace or parentheses. A token is
``and``, ``or``, ``not``, ``(``, ``)`` (exact, lower case), a bare term name such as
``present``, or ``name=value`` split at the first ``=``. A value term written without
``=`` has an empty value (``include`` is ``include=``) *(binary)*; a bare term written
with ``=`` (``present=x``) is unknown.

Structure (no precedence)
-------------------------
git-annex first groups parentheses, forgiving a missing ``)`` (the group runs to the
end) and dropping a stray ``)``. The token list is then folded strictly left to right,
starting from an always-true accumulator ("MAny"): ``and X`` / ``or X`` combine the
accumulator with the next term or group, ``not X`` means ``and not X``, a bare term is
and-ed in, and a bare group *continues the fold* from the current accumulator. At the
top level an ``and`` is first inserted between adjacent terms/groups, so there
``a (b or c)`` is ``a and (b or c)``; inside parentheses it is not, so
``(a (b or c))`` is ``(a and b) or c`` *(binary)*. An operator with nothing after it
takes MAny as its operand, so ``a or`` is always true, ``a and`` is ``a`` and a lone
``not`` is false. Finally ``MAny and x`` is simplified to ``x`` (one pass, as git-annex
does). A root that is MAny is the *empty* expression, which git-annex treats as "not
configured" (see :func:`matches`); an MAny left inside the tree behaves exactly like
the ``anything`` term, so this module represents it as :class:`Anything`. Thus
``a or b and c`` is ``(a or b) and c``.

``str(expr)`` prints a canonical form: single spaces, value terms always with ``=``,
left-nested chains without parentheses and a right operand or negated operand that is
itself ``and``/``or`` in parentheses. ``parse(str(e)) == e`` for every parsed ``e``.

Terms and modes
---------------
``mode="preferred"`` accepts the preferred-content terms of 10.20261026, including the
2024 additions ``onlyingroup=`` and ``balanced=`` / ``fullybalanced=`` /
``sizebalanced=`` / ``fullysizebalanced=``. The balanced family parses (so a log
written by a newer git-annex is understood) but evaluating it raises
:class:`UnsupportedTermError`. ``mode="largefiles"`` accepts only ``anything``,
``nothing``, ``include``, ``exclude``, ``largerthan``, ``smallerthan``, ``unused``,
``mimetype`` and ``mimeencoding``.

Values are validated at parse time, as git-annex does, and additionally globs are
compiled at parse time: git-annex accepts ``include=[abc`` and only dies with "failed
to compile regex" when it first matches a file; here it is a parse error.

* Sizes (``largerthan=``): a Haskell ``reads``-style number (``10``, ``0.5``, ``1e3``,
  ``0x10``, ``-1``, ``NaN``) followed by an optional unit; anything after the unit's
  letters is ignored (``10mb!!`` is 10 MB). Units are case-insensitive: ``kb``/``k``/
  ``kilobyte(s)`` = 1000, ``KiB``/``Ki``/``kibibyte(s)`` = 1024, ``kbit``/``kilobit(s)``
  = 125, up to ``QB``. The product is rounded half to even. See :func:`parse_size`.
* Counts (``copies=``, ``lackingcopies=``): Haskell ``readish :: Int``: a leading
  integer literal (decimal, ``0x``, ``0o``, optionally negative), trailing junk ignored
  (``2x`` is 2), wrapped to 64 bits. ``1.5`` and ``1e0`` are errors.
* ``copies=LEVEL:N`` / ``copies=LEVEL+:N`` when LEVEL is exactly ``trusted``,
  ``semitrusted``, ``untrusted`` or ``dead``; any other prefix is a group name (so a
  group named ``trusted`` cannot be counted).
* ``metadata=FIELD=GLOB`` (case-insensitive glob) and ``FIELD<V``, ``<=``, ``>``,
  ``>=``. Field names must start alphanumeric and contain only alphanumerics and
  ``_-.``; field lookup is case-insensitive. *(binary)* Comparisons are numeric when
  both sides read fully as numbers, otherwise a case-sensitive string comparison.

Globs
-----
A glob becomes a POSIX regex exactly as git-annex's ``wildToRegex`` writes it: ``*``
-> ``.*`` (so ``*`` and ``**`` cross ``/``), ``?`` -> ``.``, ``[!`` -> ``[^``, bracket
contents copied raw up to the first ``]``, letters and digits literal, every other
character backslash-escaped; for file names ``/`` -> ``[/]+`` (one ``/`` in the glob
matches a run of them). That text is then parsed with regex-tdfa's grammar (POSIX
brackets, ASCII-only ``[:class:]``, ``[=x=]``, collating elements that match nothing)
and translated to a Python regex searched with the options git-annex uses: anchored
``^...$`` in *multiline* mode, ``.`` and negated brackets never match a newline, and
the backslash escapes written for the glob characters `` ` ``, ``'``, ``<`` and ``>``
are regex-tdfa anchors, so those characters test for beginning of text, end of text,
word start and word end instead of matching themselves *(binary: ``include=a'b``
never matches "a'b")*. Matching is case-sensitive except for metadata values.

Evaluation
----------
:meth:`Expr.evaluate` follows git-annex's ``checkMatcher``: with neither a file name
nor a key it raises :class:`CannotEvaluate` (git-annex uses the caller's default
without evaluating anything). Otherwise terms short-circuit left to right and missing
data is answered the way git-annex answers it:

* no file name but a key (``--all``, unused content): ``include=`` is false,
  ``exclude=`` true, ``inpreferreddir`` false *(binary, via ``sync --content --all``;
  the written reference says the caller's default applies)*;
* no key: every key term (``copies``, ``present``, ``metadata``, ``inbackend``, ...) is
  false, except ``inallgroup=`` of an empty group, which is true;
* unknown size: ``largerthan`` false, ``smallerthan`` true (Haskell ``Nothing < Just``);
* unknown mime type/encoding: false (as when libmagic fails).

Counting uses ``locations`` minus dead repositories and, as in 10.20261026, minus
cluster UUIDs. Plain ``copies=N`` counts untrusted copies, ``copies=semitrusted+:N``
does not, and ``lackingcopies=N`` is ``numcopies - (non-untrusted copies) >= N``. For
``wantDrop`` the caller leaves the repository that would drop out of ``locations``
but keeps ``present`` as the real presence: git-annex ignores its "assume not present"
set for the ``present`` term (*binary*: with ``wanted here present``, ``drop --auto``
keeps the file), which is what keeps ``manual`` repositories from dropping everything.
``standard`` / ``groupwanted`` expand through resolvers in the context; when there is
nothing to expand (no single standard group, no groupwanted, or nested expansion) they
behave like ``present``, git-annex's fallback matcher.
"""

from __future__ import annotations

import math
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import ClassVar, Literal, cast

from annexsync.errors import AnnexError

__all__ = [
    "STANDARD_GROUPS",
    "TRUST_LEVELS",
    "And",
    "Anything",
    "Balanced",
    "CannotEvaluate",
    "Copies",
    "Empty",
    "Exclude",
    "Expr",
    "ExpressionError",
    "GroupWanted",
    "InAllGroup",
    "InBackend",
    "InPreferredDir",
    "Include",
    "LackingCopies",
    "LargerThan",
    "MatchContext",
    "MetaData",
    "MimeEncoding",
    "MimeType",
    "Mode",
    "Not",
    "Nothing",
    "OnlyInGroup",
    "Or",
    "Present",
    "SecureHash",
    "SmallerThan",
    "Standard",
    "Term",
    "TrustLevel",
    "Unused",
    "UnsupportedTermError",
    "glob_matches",
    "matches",
    "parse",
    "parse_size",
    "standard_expression",
    "standard_group",
]

Mode = Literal["preferred", "largefiles"]
TrustLevel = Literal["trusted", "semitrusted", "untrusted", "dead"]
MetaOp = Literal["=", "<", "<=", ">", ">="]

#: Trust levels from worst to best (git-annex's ``Ord TrustLevel``).
TRUST_LEVELS: tuple[TrustLevel, ...] = ("dead", "untrusted", "semitrusted", "trusted")
_TRUST_RANK = {level: i for i, level in enumerate(TRUST_LEVELS)}


class ExpressionError(AnnexError, ValueError):
    """A malformed expression (or size). ``position`` is a 0-based character offset."""

    def __init__(self, message: str, position: int, expression: str | None = None) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position
        self.expression = expression

    def __str__(self) -> str:
        return f"bad expression at column {self.position}: {self.message}"


class CannotEvaluate(AnnexError):
    """Not enough information to evaluate; git-annex uses the caller's default."""


class UnsupportedTermError(AnnexError):
    """A term that parses but that annexsync cannot evaluate (yet)."""


# ------------------------------------------------------------------ context


@dataclass(frozen=True)
class MatchContext:
    """Everything an expression may look at, for one file/key in one repository.

    ``file`` is the path relative to the repository top (None for keys without a
    file). ``key_backend`` is the key's backend name (``SHA256E``), None when no key is
    known. ``size`` is the key's size (preferred content) or the file's size on disk
    (largefiles); None when unknown. ``present`` says whether the content is present in
    the repository whose expression is evaluated. ``locations`` are the UUIDs holding
    the key per the location log; for wantDrop, leave out the repository that would
    drop (but keep ``present`` true if it has the content). ``trust`` defaults to
    semitrusted for UUIDs not listed. ``numcopies`` is the file's numcopies
    (``.gitattributes`` included); ``approx_numcopies`` the global value used by
    ``approxlackingcopies`` (defaults to ``numcopies``). ``standard_expr`` /
    ``groupwanted_expr`` return the expression ``standard`` / ``groupwanted`` expand
    to for the evaluated repository, or None when there is none. ``unused`` says
    whether the key is in the unused log. ``secure_hash`` overrides the backend-name
    rule for ``securehash`` (external backends decide for themselves).
    """

    file: str | None = None
    key_backend: str | None = None
    size: int | None = None
    present: bool = False
    locations: frozenset[str] = frozenset()
    trust: Mapping[str, TrustLevel] = field(default_factory=dict)
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    numcopies: int = 1
    approx_numcopies: int | None = None
    standard_expr: Callable[[], Expr | None] | None = None
    groupwanted_expr: Callable[[], Expr | None] | None = None
    metadata: Mapping[str, frozenset[str]] = field(default_factory=dict)
    mimetype: str | None = None
    mimeencoding: str | None = None
    preferreddir: str = "public"
    unused: bool = False
    secure_hash: bool | None = None

    def trust_of(self, uuid: str) -> TrustLevel:
        """The trust level of ``uuid`` (semitrusted unless configured)."""
        return self.trust.get(uuid, "semitrusted")


@dataclass(frozen=True)
class _Scope:
    """Which of standard/groupwanted may still be expanded (git-annex expands once)."""

    standard: bool = True
    groupwanted: bool = True


def _has_key(ctx: MatchContext) -> bool:
    return ctx.key_backend is not None


def _is_cluster_uuid(uuid: str) -> bool:
    return uuid[:2] == "ac" and uuid[14:15] == "8"


def _live_locations(ctx: MatchContext) -> list[str]:
    """Locations as git-annex's ``keyLocations`` sees them: dead repositories dropped."""
    return [u for u in ctx.locations if ctx.trust_of(u) != "dead"]


def _copy_count(uuids: Iterable[str]) -> int:
    # A cluster's UUID is logged beside its nodes' and is not a distinct copy.
    return sum(1 for u in uuids if not _is_cluster_uuid(u))


def _members(ctx: MatchContext, group: str) -> set[str]:
    return {u for u, gs in ctx.groups.items() if group in gs}


# ------------------------------------------------------------------ AST


class Expr:
    """Base class of expression nodes (all frozen dataclasses)."""

    def evaluate(self, ctx: MatchContext) -> bool:
        """Evaluate for one file/key; raise :class:`CannotEvaluate` without either."""
        if isinstance(self, Empty):
            return True
        if ctx.file is None and not _has_key(ctx):
            raise CannotEvaluate("neither a file name nor a key to match against")
        return self._eval(ctx, _Scope())

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        raise NotImplementedError

    @property
    def is_empty(self) -> bool:
        """True for the empty expression (git-annex: "not configured")."""
        return isinstance(self, Empty)

    def walk(self) -> Iterator[Expr]:
        """Yield this node and all nodes below it, depth first, left to right."""
        yield self

    def terms(self) -> Iterator[Term]:
        """Yield the terms (leaves) of the expression, left to right."""
        for node in self.walk():
            if isinstance(node, Term):
                yield node


@dataclass(frozen=True)
class Empty(Expr):
    """The empty expression: matches everything, and means "not configured"."""

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return True

    def __str__(self) -> str:
        return ""


def _operand(e: Expr) -> str:
    return f"({e})" if isinstance(e, And | Or) else str(e)


@dataclass(frozen=True)
class And(Expr):
    """Both sides match (left evaluated first, short-circuit)."""

    left: Expr
    right: Expr

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return self.left._eval(ctx, scope) and self.right._eval(ctx, scope)

    def walk(self) -> Iterator[Expr]:
        yield self
        yield from self.left.walk()
        yield from self.right.walk()

    def __str__(self) -> str:
        return f"{self.left} and {_operand(self.right)}"


@dataclass(frozen=True)
class Or(Expr):
    """Either side matches (left evaluated first, short-circuit)."""

    left: Expr
    right: Expr

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return self.left._eval(ctx, scope) or self.right._eval(ctx, scope)

    def walk(self) -> Iterator[Expr]:
        yield self
        yield from self.left.walk()
        yield from self.right.walk()

    def __str__(self) -> str:
        return f"{self.left} or {_operand(self.right)}"


@dataclass(frozen=True)
class Not(Expr):
    """The operand does not match."""

    operand: Expr

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return not self.operand._eval(ctx, scope)

    def walk(self) -> Iterator[Expr]:
        yield self
        yield from self.operand.walk()

    def __str__(self) -> str:
        return f"not {_operand(self.operand)}"


class Term(Expr):
    """A leaf. ``name`` is the keyword; ``modes`` where it may appear."""

    name: ClassVar[str]
    modes: ClassVar[frozenset[str]] = frozenset({"preferred"})

    def value_text(self) -> str | None:
        """The canonical text after ``name=``, or None for a bare term."""
        return None

    def __str__(self) -> str:
        value = self.value_text()
        return self.name if value is None else f"{self.name}={value}"


_BOTH = frozenset({"preferred", "largefiles"})
_LARGEFILES = frozenset({"largefiles"})


@dataclass(frozen=True)
class Anything(Term):
    """Always matches."""

    name: ClassVar[str] = "anything"
    modes: ClassVar[frozenset[str]] = _BOTH

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return True


@dataclass(frozen=True)
class Nothing(Term):
    """Never matches."""

    name: ClassVar[str] = "nothing"
    modes: ClassVar[frozenset[str]] = _BOTH

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return False


@dataclass(frozen=True)
class Include(Term):
    """The file name matches the glob; false without a file name."""

    glob: str
    name: ClassVar[str] = "include"
    modes: ClassVar[frozenset[str]] = _BOTH

    def value_text(self) -> str:
        return self.glob

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.file is not None and glob_matches(self.glob, ctx.file)


@dataclass(frozen=True)
class Exclude(Term):
    """The file name does not match the glob; true without a file name."""

    glob: str
    name: ClassVar[str] = "exclude"
    modes: ClassVar[frozenset[str]] = _BOTH

    def value_text(self) -> str:
        return self.glob

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.file is None or not glob_matches(self.glob, ctx.file)


@dataclass(frozen=True)
class LargerThan(Term):
    """Size is known and greater than ``size`` bytes. ``text`` is the size as written."""

    text: str
    size: int
    name: ClassVar[str] = "largerthan"
    modes: ClassVar[frozenset[str]] = _BOTH

    def value_text(self) -> str:
        return self.text

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.size is not None and ctx.size > self.size


@dataclass(frozen=True)
class SmallerThan(Term):
    """Size is smaller than ``size`` bytes; an unknown size counts as smaller."""

    text: str
    size: int
    name: ClassVar[str] = "smallerthan"
    modes: ClassVar[frozenset[str]] = _BOTH

    def value_text(self) -> str:
        return self.text

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.size is None or ctx.size < self.size


@dataclass(frozen=True)
class Copies(Term):
    """At least ``count`` copies, optionally only at a trust level or in a group."""

    count: int
    trust: TrustLevel | None = None
    or_better: bool = False
    group: str | None = None
    name: ClassVar[str] = "copies"

    def value_text(self) -> str:
        if self.trust is not None:
            return f"{self.trust}{'+' if self.or_better else ''}:{self.count}"
        if self.group is not None:
            return f"{self.group}:{self.count}"
        return str(self.count)

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        if not _has_key(ctx):
            return False
        us = _live_locations(ctx)
        if self.trust is not None:
            want = _TRUST_RANK[self.trust]
            if self.or_better:
                us = [u for u in us if _TRUST_RANK[ctx.trust_of(u)] >= want]
            else:
                us = [u for u in us if _TRUST_RANK[ctx.trust_of(u)] == want]
        elif self.group is not None:
            us = [u for u in us if self.group in ctx.groups.get(u, frozenset())]
        return _copy_count(us) >= self.count


@dataclass(frozen=True)
class LackingCopies(Term):
    """numcopies minus the non-untrusted copies is at least ``count``."""

    count: int
    approx: bool = False
    name: ClassVar[str] = "lackingcopies"

    def __str__(self) -> str:
        return f"{'approx' if self.approx else ''}lackingcopies={self.count}"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        if not _has_key(ctx):
            return False
        approx = ctx.numcopies if ctx.approx_numcopies is None else ctx.approx_numcopies
        needed = ctx.numcopies if not self.approx and ctx.file is not None else approx
        have = _copy_count(u for u in _live_locations(ctx) if ctx.trust_of(u) != "untrusted")
        return needed - have >= self.count


@dataclass(frozen=True)
class InAllGroup(Term):
    """Present in every repository of the group (true for an empty group)."""

    group: str
    name: ClassVar[str] = "inallgroup"

    def value_text(self) -> str:
        return self.group

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        want = _members(ctx, self.group)
        if not want:
            return True
        return _has_key(ctx) and want <= set(_live_locations(ctx))


@dataclass(frozen=True)
class OnlyInGroup(Term):
    """Present in some repository of the group and in none outside it (2024+)."""

    group: str
    name: ClassVar[str] = "onlyingroup"

    def value_text(self) -> str:
        return self.group

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        want = _members(ctx, self.group)
        if not want or not _has_key(ctx):
            return False
        here = set(_live_locations(ctx))
        return bool(here & want) and here <= want


@dataclass(frozen=True)
class InBackend(Term):
    """The key uses exactly this backend (``SHA256E`` is not ``SHA256``)."""

    backend: str
    name: ClassVar[str] = "inbackend"

    def value_text(self) -> str:
        return self.backend

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.key_backend is not None and ctx.key_backend == self.backend


_SECURE_PREFIXES = ("SHA224", "SHA256", "SHA384", "SHA512", "SHA3_", "SKEIN", "BLAKE2",
                    "BLAKE3")
_SECURE_OTHER = frozenset({"GITBUNDLE", "VURL"})


def _backend_is_secure(backend: str) -> bool:
    return backend in _SECURE_OTHER or backend.startswith(_SECURE_PREFIXES)


@dataclass(frozen=True)
class SecureHash(Term):
    """The key's backend is a cryptographically secure hash."""

    name: ClassVar[str] = "securehash"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        if ctx.key_backend is None:
            return False
        if ctx.secure_hash is not None:
            return ctx.secure_hash
        return _backend_is_secure(ctx.key_backend)


@dataclass(frozen=True)
class MetaData(Term):
    """A metadata field has a value matching a glob or comparing to ``value``."""

    field: str
    op: MetaOp
    value: str
    name: ClassVar[str] = "metadata"

    def value_text(self) -> str:
        return f"{self.field}{self.op}{self.value}"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        if not _has_key(ctx):
            return False
        wanted = self.field.casefold()
        values: set[str] = set()
        for f, vs in ctx.metadata.items():
            if f.casefold() == wanted:
                values |= vs
        return any(self._value_matches(v) for v in values)

    def _value_matches(self, v: str) -> bool:
        if self.op == "=":
            return _compile_glob(self.value, False, False).search(v) is not None
        compare = _COMPARISONS[self.op]
        mine, theirs = _read_double_full(self.value), _read_double_full(v)
        if mine is not None and theirs is not None:
            return bool(compare(theirs, mine))
        return bool(compare(v, self.value))


_COMPARISONS: dict[str, Callable[[object, object], object]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


@dataclass(frozen=True)
class Present(Term):
    """The content is present in the repository being evaluated."""

    name: ClassVar[str] = "present"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return _has_key(ctx) and ctx.present


_PRESENT = Present()


@dataclass(frozen=True)
class InPreferredDir(Term):
    """The file's directory path has a component named by ``preferreddir``."""

    name: ClassVar[str] = "inpreferreddir"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        if ctx.file is None:
            return False
        return ctx.preferreddir in _split_path(_take_directory(ctx.file))


@dataclass(frozen=True)
class Standard(Term):
    """The standard expression of the repository's single standard group."""

    name: ClassVar[str] = "standard"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        sub = ctx.standard_expr() if scope.standard and ctx.standard_expr else None
        if sub is None:
            return _PRESENT._eval(ctx, scope)
        return sub._eval(ctx, _Scope(standard=False, groupwanted=False))


@dataclass(frozen=True)
class GroupWanted(Term):
    """The groupwanted expression of the repository's single group that has one."""

    name: ClassVar[str] = "groupwanted"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        sub = ctx.groupwanted_expr() if scope.groupwanted and ctx.groupwanted_expr else None
        if sub is None:
            return _PRESENT._eval(ctx, scope)
        return sub._eval(ctx, _Scope(standard=scope.standard, groupwanted=False))


@dataclass(frozen=True)
class Unused(Term):
    """The key is in the unused log; never true for a file in the tree."""

    name: ClassVar[str] = "unused"
    modes: ClassVar[frozenset[str]] = _BOTH

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.file is None and _has_key(ctx) and ctx.unused


@dataclass(frozen=True)
class MimeType(Term):
    """The file's MIME type matches the glob (annex.largefiles only)."""

    glob: str
    name: ClassVar[str] = "mimetype"
    modes: ClassVar[frozenset[str]] = _LARGEFILES

    def value_text(self) -> str:
        return self.glob

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.mimetype is not None and glob_matches(self.glob, ctx.mimetype,
                                                         filepath=False)


@dataclass(frozen=True)
class MimeEncoding(Term):
    """The file's MIME encoding matches the glob (annex.largefiles only)."""

    glob: str
    name: ClassVar[str] = "mimeencoding"
    modes: ClassVar[frozenset[str]] = _LARGEFILES

    def value_text(self) -> str:
        return self.glob

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        return ctx.mimeencoding is not None and glob_matches(self.glob, ctx.mimeencoding,
                                                             filepath=False)


BalancedKind = Literal["balanced", "fullybalanced", "sizebalanced", "fullysizebalanced"]


@dataclass(frozen=True)
class Balanced(Term):
    """``balanced=GROUP[:N]`` and friends (git-annex 2024+): parsed, not evaluated."""

    kind: BalancedKind
    group: str
    count: int | None = None
    name: ClassVar[str] = "balanced"

    def __str__(self) -> str:
        suffix = "" if self.count is None else f":{self.count}"
        return f"{self.kind}={self.group}{suffix}"

    def _eval(self, ctx: MatchContext, scope: _Scope) -> bool:
        raise UnsupportedTermError(
            f"'{self}' is not supported: annexsync does not track repository sizes")


# ------------------------------------------------------------------ public helpers


def matches(expr: Expr, ctx: MatchContext, default: bool) -> bool:
    """Evaluate like git-annex's ``checkMatcher``: ``default`` when the expression is
    empty (not configured) or cannot be evaluated (no file name and no key).

    ``sync --content`` and the assistant pass ``True``; ``get/copy/drop --auto`` pass
    ``False``. :class:`UnsupportedTermError` is not caught.
    """
    if expr.is_empty:
        return default
    try:
        return expr.evaluate(ctx)
    except CannotEvaluate:
        return default


#: ``standard`` expressions of the standard groups, as ``git annex vicfg`` prints them
#: in 10.20261026; identical to 10.20230126 (reference section 8.3).
STANDARD_GROUPS: dict[str, str] = {
    "client": "(include=* and ((exclude=*/archive/* and exclude=archive/*) or "
              "(not (copies=archive:1 or copies=smallarchive:1)))) or approxlackingcopies=1",
    "transfer": "(not (inallgroup=client and copies=client:2) and ((include=* and "
                "((exclude=*/archive/* and exclude=archive/*) or (not (copies=archive:1 or "
                "copies=smallarchive:1)))) or approxlackingcopies=1)) or "
                "approxlackingcopies=1",
    "backup": "anything",
    "incrementalbackup": "((not copies=backup:1) and (not copies=incrementalbackup:1)) or "
                         "approxlackingcopies=1",
    "smallarchive": "((include=*/archive/* or include=archive/*) and ((not (copies=archive:1 "
                    "or copies=smallarchive:1)) or approxlackingcopies=1)) or "
                    "approxlackingcopies=1",
    "archive": "(not (copies=archive:1 or copies=smallarchive:1)) or approxlackingcopies=1",
    "source": "not (copies=1)",
    "manual": "present and ((include=* and ((exclude=*/archive/* and exclude=archive/*) or "
              "(not (copies=archive:1 or copies=smallarchive:1)))) or approxlackingcopies=1)",
    "public": "inpreferreddir",
    "unwanted": "not anything",
}


def standard_expression(group: str) -> str | None:
    """The expression ``standard`` means for a standard group, or None if not standard."""
    return STANDARD_GROUPS.get(group)


def standard_group(groups: Iterable[str]) -> str | None:
    """The repository's standard group: git-annex uses it only if there is exactly one."""
    found = [g for g in set(groups) if g in STANDARD_GROUPS]
    return found[0] if len(found) == 1 else None


# ------------------------------------------------------------------ Haskell numbers

_HS_SPACES = frozenset("\t\n\v\f\r \xa0")
_HS_SYMBOL = frozenset("!#$%&*+./<=>?@\\^|-~:")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEX = re.compile(r"0[xX]([0-9a-fA-F]+)")
_OCT = re.compile(r"0[oO]([0-7]+)")
_IDENT = re.compile(r"[^\W\d][\w']*")


def _hs_isspace(c: str) -> bool:
    return c in _HS_SPACES or (ord(c) > 0x377 and unicodedata.category(c) == "Zs")


def _skip_spaces(s: str, i: int) -> int:
    while i < len(s) and _hs_isspace(s[i]):
        i += 1
    return i


def _read_number(s: str, integral: bool) -> tuple[int | float, int] | None:
    """Haskell ``reads`` for Int (``integral``) or Double: (value, end) or None."""
    i = _skip_spaces(s, 0)
    negative = False
    if s.startswith("-", i):
        if s[i + 1:i + 2] in _HS_SYMBOL:
            return None  # lexes as another operator, e.g. "--" or "-."
        negative = True
        i = _skip_spaces(s, i + 1)
    value: int | float
    if m := _HEX.match(s, i) or _OCT.match(s, i):
        value = int(m.group(1), 16 if s[i + 1] in "xX" else 8)
        end = m.end()
    elif m := _DECIMAL.match(s, i):
        text = m.group(0)
        if integral and any(c in text for c in ".eE"):
            return None
        value = int(text) if integral else float(text)
        end = m.end()
    elif not integral and (m := _IDENT.match(s, i)) and m.group(0) in ("NaN", "Infinity"):
        value = math.nan if m.group(0) == "NaN" else math.inf
        end = m.end()
    else:
        return None
    if negative:
        value = -value
    if integral:
        value = ((int(value) + 2**63) % 2**64) - 2**63
    elif not isinstance(value, float):
        value = float(value)
    return value, end


def _readish_int(s: str) -> int | None:
    r = _read_number(s, integral=True)
    return None if r is None else int(r[0])


def _read_double_full(s: str) -> float | None:
    """Haskell ``readMaybe :: Maybe Double``: the whole string, parentheses allowed."""
    t = s
    while True:
        stripped = t.strip("".join(_HS_SPACES))
        if len(stripped) >= 2 and stripped[0] == "(" and stripped[-1] == ")":
            t = stripped[1:-1]
            continue
        t = stripped
        break
    r = _read_number(t, integral=False)
    if r is None or _skip_spaces(t, r[1]) != len(t):
        return None
    return float(r[0])


def _hs_round(x: float) -> int:
    """GHC's ``round :: Double -> Integer``, including what it does to NaN and infinity."""
    if math.isnan(x):
        return -3 * 2**1023
    if math.isinf(x):
        return 2**1024 if x > 0 else -(2**1024)
    return round(x)


def _units() -> list[tuple[int, str, str]]:
    storage = ["kB kilo", "MB mega", "GB giga", "TB tera", "PB peta", "EB exa", "ZB zetta",
               "YB yotta", "RB ronna", "QB quetta"]
    committee = ["KiB kibi", "MiB mebi", "GiB gibi", "TiB tebi", "PiB pebi", "EiB exbi",
                 "ZiB zebi", "YiB yobi"]
    bandwidth = ["kbit kilo", "Mbit mega", "Gbit giga", "Tbit tera", "Pbit peta",
                 "Ebit exa", "Zbit zetta", "Ybit yotta"]
    out: list[tuple[int, str, str]] = []
    for n, spec in reversed(list(enumerate(storage, 1))):
        abbrev, prefix = spec.split()
        out.append((1000**n, abbrev, prefix + "byte"))
    out.append((1, "B", "byte"))
    for n, spec in reversed(list(enumerate(committee, 1))):
        abbrev, prefix = spec.split()
        out.append((1024**n, abbrev, prefix + "byte"))
    for n, spec in reversed(list(enumerate(bandwidth, 1))):
        abbrev, prefix = spec.split()
        out.append((1000**n // 8, abbrev, prefix + "bit"))
    return out


_UNITS = _units()


def _unit_multiplier(unit: str) -> int | None:
    if unit == "":
        return 1
    u = unit.lower()
    for size, abbrev, name in _UNITS:
        a, n = abbrev.lower(), name.lower()
        if u in (a, n, n + "s") or a == u + "b":
            return size
    return None


def parse_size(s: str) -> int:
    """Parse a size the way git-annex's ``readSize dataUnits`` does, in bytes.

    ``10mb`` = 10,000,000; ``1KiB`` = 1024; ``100 KiloBytes``; ``0.5gb``; ``1e3``;
    ``0x10kb``; ``2.5`` rounds to 2 (half to even). Text after the unit's letters is
    ignored. Raises :class:`ExpressionError` (position 0) for anything else.
    """
    r = _read_number(s, integral=False)
    if r is not None:
        number, end = r
        i = _skip_spaces(s, end)
        j = i
        while j < len(s) and s[j].isalpha():
            j += 1
        multiplier = _unit_multiplier(s[i:j])
        if multiplier is not None:
            return _hs_round(float(number) * float(multiplier))
    raise ExpressionError(f"bad size {s!r}", 0, s)


# ------------------------------------------------------------------ paths


def _take_directory(path: str) -> str:
    """System.FilePath.Posix.takeDirectory."""
    i = path.rfind("/")
    if i < 0:
        return "."
    d = path[:i + 1].rstrip("/")
    return d if d else "/"


def _split_path(path: str) -> list[str]:
    """System.FilePath.Posix.splitPath: components keep their trailing slashes."""
    out: list[str] = []
    i = 0
    while i < len(path) and path[i] == "/":
        i += 1
    if i:
        out.append(path[:i])
    while i < len(path):
        j = path.find("/", i)
        if j < 0:
            out.append(path[i:])
            break
        k = j
        while k < len(path) and path[k] == "/":
            k += 1
        out.append(path[i:k])
        i = k
    return out


# ------------------------------------------------------------------ globs

_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "alnum": (("0", "9"), ("A", "Z"), ("a", "z")),
    "digit": (("0", "9"),),
    "punct": (("!", "/"), (":", "@"), ("[", "`"), ("{", "~")),
    "alpha": (("A", "Z"), ("a", "z")),
    "graph": (("!", "~"),),
    "space": (("\t", "\r"), (" ", " ")),
    "blank": (("\t", "\t"), (" ", " ")),
    "lower": (("a", "z"),),
    "upper": (("A", "Z"),),
    "cntrl": (("\0", "\x1f"), ("\x7f", "\x7f")),
    "print": ((" ", "~"),),
    "xdigit": (("0", "9"), ("A", "F"), ("a", "f")),
    "word": (("0", "9"), ("A", "Z"), ("_", "_"), ("a", "z")),
}
_WORD = "[0-9A-Za-z_]"
_ANCHOR_ESCAPES = {
    "`": r"\A",
    "'": r"\Z",
    "<": f"(?<!{_WORD})(?={_WORD})",
    ">": f"(?<={_WORD})(?!{_WORD})",
    "b": f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))",
    "B": f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))",
}


def _wild_to_regex(glob: str, filepath: bool) -> str:
    """git-annex's ``wildToRegex``: the POSIX regex text it hands to regex-tdfa."""
    out: list[str] = []
    i, n, inpat = 0, len(glob), False
    while i < n:
        c = glob[i]
        i += 1
        if inpat:
            if c == "]":
                out.append("]")
                inpat = False
            else:
                out.append("\\\\" if c == "\\" else c)
        elif c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            if i < n and glob[i] == "!":
                out.append("[^")
                i += 1
            else:
                out.append("[")
            inpat = True
        elif filepath and c == "/":
            out.append("[/]+")
        elif filepath and c == "\\":
            out.append("[\\\\]+")
        elif "0" <= c <= "9" or c.isalpha():
            out.append(c)
        else:
            out.append("\\" + c)
    return "^" + "".join(out) + "$"


def _class_char(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def _bracket(rx: str, i: int) -> tuple[str, int]:
    """Parse a regex-tdfa bracket at ``rx[i] == '['``; return (python regex, end)."""
    i += 1
    negate = rx.startswith("^", i)
    if negate:
        i += 1
    singles: set[str] = set()
    ranges: list[tuple[str, str]] = []
    elements = 0
    if rx.startswith("]", i):
        singles.add("]")
        i += 1
        elements += 1
    while True:
        if i >= len(rx):
            raise ValueError("unterminated [")
        if rx[i] == "]":
            if elements == 0:
                raise ValueError("empty []")
            i += 1
            break
        elements += 1
        special = None
        for opener, closer in (("[:", ":]"), ("[=", "=]"), ("[.", ".]")):
            if rx.startswith(opener, i):
                j = i + 2
                while j < len(rx) and rx[j] not in closer:
                    j += 1
                if j > i + 2 and rx.startswith(closer, j):
                    special = (opener, rx[i + 2:j], j + 2)
                break
        if special is not None:
            opener, body, i = special
            if opener == "[:":
                ranges.extend(_CLASSES.get(body, ()))
            elif opener == "[=":
                singles.update(body)
            # Collating elements are parsed and then ignored by regex-tdfa.
            continue
        c = rx[i]
        if i + 2 < len(rx) and rx[i + 1] == "-" and rx[i + 2] != "]":
            end = rx[i + 2]
            if c > end:
                raise ValueError(f"range {c}-{end} is backwards")
            ranges.append((c, end))
            i += 3
            continue
        singles.add(c)
        i += 1
    body = "".join(_class_char(c) for c in sorted(singles))
    body += "".join(f"{_class_char(a)}-{_class_char(b)}" for a, b in ranges)
    if negate:
        return f"[^{body}\\n]", i
    return (f"[{body}]" if body else "(?!)"), i


def _tdfa_to_python(rx: str) -> str:
    """Translate the regex text ``_wild_to_regex`` produces, with regex-tdfa's meaning."""
    out: list[str] = []
    quantifiable = False
    i = 0
    while i < len(rx):
        c = rx[i]
        if c in "*+?":
            if not quantifiable:
                raise ValueError(f"nothing to repeat at {c!r}")
            out.append(c)
            quantifiable = False
            i += 1
            continue
        quantifiable = True
        if c == "^":
            out.append("^")
            quantifiable = False
            i += 1
        elif c == "$":
            out.append("$")
            quantifiable = False
            i += 1
        elif c == ".":
            out.append(".")
            i += 1
        elif c == "[":
            piece, i = _bracket(rx, i)
            out.append(piece)
        elif c == "\\":
            if i + 1 >= len(rx):
                raise ValueError("trailing backslash")
            e = rx[i + 1]
            if e in _ANCHOR_ESCAPES:
                out.append(_ANCHOR_ESCAPES[e])
                quantifiable = False
            else:
                out.append(re.escape(e))
            i += 2
        elif c in "()|{":
            raise ValueError(f"unexpected {c!r}")
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def _compile_glob(glob: str, case_sensitive: bool, filepath: bool) -> re.Pattern[str]:
    flags = re.MULTILINE | (0 if case_sensitive else re.IGNORECASE)
    return re.compile(_tdfa_to_python(_wild_to_regex(glob, filepath)), flags)


def glob_matches(glob: str, value: str, *, filepath: bool = True,
                 case_sensitive: bool = True) -> bool:
    """Match like git-annex's ``matchGlob``; ``filepath`` for file-name globs.

    Raises ``ValueError`` for a glob regex-tdfa cannot compile (e.g. ``[abc``).
    """
    return _compile_glob(glob, case_sensitive, filepath).search(value) is not None


# ------------------------------------------------------------------ tokenizer and parser


@dataclass(frozen=True)
class _Token:
    text: str
    pos: int


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    start = -1
    for i, c in enumerate(expr):
        if _hs_isspace(c) or c in "()":
            if start >= 0:
                tokens.append(_Token(expr[start:i], start))
                start = -1
            if c in "()":
                tokens.append(_Token(c, i))
        elif start < 0:
            start = i
    if start >= 0:
        tokens.append(_Token(expr[start:], start))
    return tokens


_AND, _OR, _NOT, _OPEN, _CLOSE = "and", "or", "not", "(", ")"
_SYNTAX = frozenset({_AND, _OR, _NOT, _OPEN, _CLOSE})


class _MAny:
    """git-annex's ``MAny``: the always-true accumulator of the left fold."""


_ANY = _MAny()
_Node = Expr | _MAny
_Item = str | Expr | list  # a syntax word, a term, or a parenthesised group


def _groups(tokens: list[str | Expr]) -> list[_Item]:
    """``tokenGroups``: nest parentheses; a missing ``)`` closes at the end, a stray
    ``)`` at top level is dropped."""
    top: list[_Item] = []
    stack: list[list[_Item]] = [top]
    for t in tokens:
        if t == _OPEN:
            group: list[_Item] = []
            stack[-1].append(group)
            stack.append(group)
        elif t == _CLOSE:
            if len(stack) > 1:
                stack.pop()
        else:
            stack[-1].append(t)
    return top


def _implicit_and(items: list[_Item]) -> list[_Item]:
    out: list[_Item] = []
    for item in items:
        if out and not isinstance(item, str) and not isinstance(out[-1], str):
            out.append(_AND)
        out.append(item)
    return out


def _process(acc: _Node, items: list[_Item]) -> _Node:
    """Fold ``items`` left to right into ``acc``. Only the top level gets implicit
    ``and``s; inside a group a following group keeps folding into the accumulator, so
    ``(a (b or c))`` is ``(a and b) or c`` (as in git-annex)."""
    i = 0
    while i < len(items):
        acc, i = _consume(acc, items, i)
    return acc


def _consume(acc: _Node, items: list[_Item], i: int) -> tuple[_Node, int]:
    item = items[i]
    if isinstance(item, str):
        if i + 1 < len(items):
            operand, j = _consume(_ANY, items, i + 1)
        else:
            operand, j = _ANY, i + 1
        if item == _AND:
            return _And(acc, operand), j
        if item == _OR:
            return _Or(acc, operand), j
        return _And(acc, _Not(operand)), j
    if isinstance(item, list):
        return _process(acc, item), i + 1
    assert isinstance(item, Expr)
    return _And(acc, item), i + 1


# Raw (unsimplified) nodes: allow the MAny placeholder anywhere.
@dataclass(frozen=True)
class _And:
    left: _Node | _And | _Or | _Not
    right: _Node | _And | _Or | _Not


@dataclass(frozen=True)
class _Or:
    left: _Node | _And | _Or | _Not
    right: _Node | _And | _Or | _Not


@dataclass(frozen=True)
class _Not:
    operand: _Node | _And | _Or | _Not


_Raw = _Node | _And | _Or | _Not


def _simplify(m: _Raw) -> _Raw:
    """git-annex's one-pass ``simplify``: drop MAny operands of ``and``."""
    if isinstance(m, _And):
        if m.left is _ANY:
            return _simplify(m.right)
        if m.right is _ANY:
            return _simplify(m.left)
        return _And(_simplify(m.left), _simplify(m.right))
    if isinstance(m, _Or):
        return _Or(_simplify(m.left), _simplify(m.right))
    if isinstance(m, _Not):
        return _Not(_simplify(m.operand))
    return m


def _to_expr(m: _Raw) -> Expr:
    if m is _ANY:
        return Anything()
    if isinstance(m, _And):
        return And(_to_expr(m.left), _to_expr(m.right))
    if isinstance(m, _Or):
        return Or(_to_expr(m.left), _to_expr(m.right))
    if isinstance(m, _Not):
        return Not(_to_expr(m.operand))
    assert isinstance(m, Expr)
    return m


_SIMPLE: dict[str, type[Term]] = {
    t.name: t for t in (Anything, Nothing, Present, SecureHash, InPreferredDir, Standard,
                        GroupWanted, Unused)
}
_VALUED = frozenset({"include", "exclude", "largerthan", "smallerthan", "copies",
                     "lackingcopies", "approxlackingcopies", "inallgroup", "onlyingroup",
                     "inbackend", "metadata", "mimetype", "mimeencoding", "balanced",
                     "fullybalanced", "sizebalanced", "fullysizebalanced"})
_VALUED_MODES: dict[str, frozenset[str]] = {
    "include": _BOTH, "exclude": _BOTH, "largerthan": _BOTH, "smallerthan": _BOTH,
    "mimetype": _LARGEFILES, "mimeencoding": _LARGEFILES,
}
_LEGAL_FIELD_PUNCT = frozenset("_-.")


def _check_glob(glob: str, pos: int, expr: str, *, filepath: bool,
                case_sensitive: bool = True) -> None:
    try:
        _compile_glob(glob, case_sensitive, filepath)
    except (ValueError, re.error) as e:
        raise ExpressionError(f"bad glob {glob!r}: {e}", pos, expr) from None


def _parse_count(value: str, what: str, pos: int, expr: str) -> int:
    n = _readish_int(value)
    if n is None:
        raise ExpressionError(f"bad number for {what} {value!r}", pos, expr)
    return n


def _parse_copies(value: str, pos: int, expr: str) -> Copies:
    parts = value.split(":")
    if len(parts) == 1:
        return Copies(_parse_count(value, "copies", pos, expr))
    if len(parts) != 2:
        raise ExpressionError(f"bad value for copies {value!r}", pos, expr)
    spec, num = parts
    count = _parse_count(num, "copies", pos + len(spec) + 1, expr)
    level = spec[:-1] if spec.endswith("+") else spec
    if level in _TRUST_RANK:
        return Copies(count, trust=cast(TrustLevel, level), or_better=spec.endswith("+"))
    return Copies(count, group=spec)


def _parse_metadata(value: str, pos: int, expr: str) -> MetaData:
    i = 0
    while i < len(value) and value[i] not in "=<>":
        i += 1
    fname, rest = value[:i], value[i:]
    if not (fname and fname[0].isalnum()
            and all(c.isalnum() or c in _LEGAL_FIELD_PUNCT for c in fname[1:])):
        raise ExpressionError(f"illegal metadata field name {fname!r}", pos, expr)
    width = 2 if rest.startswith(("<=", ">=")) else 1 if rest else 0
    op = cast(MetaOp, rest[:width] or "=")
    v = rest[width:]
    if op == "=":
        _check_glob(v, pos + i + 1, expr, filepath=False, case_sensitive=False)
    return MetaData(fname, op, v)


def _parse_balanced(kind: BalancedKind, value: str, pos: int, expr: str) -> Balanced:
    parts = value.split(":")
    if len(parts) == 1:
        return Balanced(kind, value)
    if len(parts) != 2:
        raise ExpressionError(f"bad value for {kind} {value!r}", pos, expr)
    n = _readish_int(parts[1])
    if n is None:
        raise ExpressionError(f"bad number for {kind} {parts[1]!r}", pos, expr)
    return Balanced(kind, parts[0], n)


def _parse_term(tok: _Token, mode: Mode, expr: str) -> Term:
    text = tok.text
    if text in _SIMPLE:
        cls = _SIMPLE[text]
        if mode not in cls.modes:
            raise ExpressionError(f"term {text!r} is not allowed in {mode} expressions",
                                  tok.pos, expr)
        return cls()
    key, eq, value = text.partition("=")
    if key not in _VALUED:
        raise ExpressionError(f"unknown term {text!r}", tok.pos, expr)
    if mode not in _VALUED_MODES.get(key, frozenset({"preferred"})):
        raise ExpressionError(f"term {text!r} is not allowed in {mode} expressions",
                              tok.pos, expr)
    vpos = tok.pos + len(key) + len(eq)
    if key in ("include", "exclude"):
        _check_glob(value, vpos, expr, filepath=True)
        return Include(value) if key == "include" else Exclude(value)
    if key in ("mimetype", "mimeencoding"):
        _check_glob(value, vpos, expr, filepath=False)
        return MimeType(value) if key == "mimetype" else MimeEncoding(value)
    if key in ("largerthan", "smallerthan"):
        try:
            size = parse_size(value)
        except ExpressionError:
            raise ExpressionError(f"bad size {value!r}", vpos, expr) from None
        return LargerThan(value, size) if key == "largerthan" else SmallerThan(value, size)
    if key == "copies":
        return _parse_copies(value, vpos, expr)
    if key in ("lackingcopies", "approxlackingcopies"):
        n = _readish_int(value)
        if n is None:
            raise ExpressionError(f"bad value for number of lacking copies {value!r}",
                                  vpos, expr)
        return LackingCopies(n, approx=key == "approxlackingcopies")
    if key == "inallgroup":
        return InAllGroup(value)
    if key == "onlyingroup":
        return OnlyInGroup(value)
    if key == "inbackend":
        return InBackend(value)
    if key == "metadata":
        return _parse_metadata(value, vpos, expr)
    return _parse_balanced(cast(BalancedKind, key), value, vpos, expr)


def parse(expr: str, *, mode: Mode = "preferred") -> Expr:
    """Parse a preferred-content (``mode="preferred"``) or ``annex.largefiles``
    expression. Raises :class:`ExpressionError` at the first malformed token."""
    if mode not in ("preferred", "largefiles"):
        raise ValueError(f"unknown expression mode {mode!r}")
    words: list[str | Expr] = []
    for tok in _tokenize(expr):
        words.append(tok.text if tok.text in _SYNTAX else _parse_term(tok, mode, expr))
    raw = _simplify(_process(_ANY, _implicit_and(_groups(words))))
    return Empty() if raw is _ANY else _to_expr(raw)
