"""Preferred-content / annex.largefiles expressions: parser, evaluation, and agreement
with ``git annex matchexpression`` (10.20261026)."""

from __future__ import annotations

import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annexsync.policy.expression import (
    STANDARD_GROUPS,
    And,
    Anything,
    Balanced,
    CannotEvaluate,
    Copies,
    Empty,
    Exclude,
    Expr,
    ExpressionError,
    Include,
    LackingCopies,
    LargerThan,
    MatchContext,
    MetaData,
    Not,
    Nothing,
    Or,
    Present,
    SmallerThan,
    UnsupportedTermError,
    glob_matches,
    matches,
    parse,
    parse_size,
    standard_expression,
    standard_group,
)
from annexsync.testing.gitenv import git_annex_binary, hermetic_env

U1, U2, U3, U4 = (f"{i}0000000-0000-4000-8000-00000000000{i}" for i in range(1, 5))
CLUSTER = "ac000000-0000-8000-8000-000000000009"


def ctx(**kw: object) -> MatchContext:
    """A context with a key (SHA256E, 100 bytes) for ``x.txt`` unless overridden."""
    base: dict[str, object] = {"file": "x.txt", "key_backend": "SHA256E", "size": 100}
    base.update(kw)
    return MatchContext(**base)  # type: ignore[arg-type]


def ev(expr: str, c: MatchContext | None = None, mode: str = "preferred") -> bool:
    return parse(expr, mode=mode).evaluate(c or ctx())  # type: ignore[arg-type]


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize(("expr", "expected"), [
    # reference section 8.1: no precedence, strictly left to right
    ("include=*.txt or include=*.bin and largerthan=1mb", False),
    ("include=*.bin and largerthan=1mb or include=*.txt", True),
    ("include=*.txt or (include=*.bin and largerthan=1mb)", True),
])
def test_reference_precedence_examples(expr: str, expected: bool) -> None:
    assert ev(expr, ctx(file="hello.txt", size=100)) is expected


@pytest.mark.parametrize(("expr", "canonical"), [
    ("a_b", None),
    ("include=*.txt", "include=*.txt"),
    ("(include=*.txt)", "include=*.txt"),
    ("((include=*.txt))", "include=*.txt"),
    ("include=*.txt\tor\n include=*.bin", "include=*.txt or include=*.bin"),
    ("include=a include=b", "include=a and include=b"),
    ("include=a not include=b", "include=a and not include=b"),
    ("include=a(include=b or include=c)", "include=a and (include=b or include=c)"),
    ("(include=a or include=b)include=c", "include=a or include=b and include=c"),
    ("not (include=a or include=b) and include=c", "not (include=a or include=b) and include=c"),
    ("not not include=a", "not not include=a"),
    ("include", "include="),
    ("metadata=tag", "metadata=tag="),
    ("copies=2x", "copies=2"),
    ("copies=0x10", "copies=16"),
    ("copies=semitrusted+:1", "copies=semitrusted+:1"),
    ("copies=TRUSTED:1", "copies=TRUSTED:1"),
    ("largerthan=10mb", "largerthan=10mb"),
    # forgiveness: missing and extra closing parens
    ("include=a or (include=b", "include=a or include=b"),
    ("include=a ) ) or include=b", "include=a or include=b"),
    ("(include=a or include=b)) and include=c", "include=a or include=b and include=c"),
    # operators with nothing after them take git-annex's always-true MAny
    ("include=a or", "include=a or anything"),
    ("include=a and", "include=a"),
    ("or include=a", "anything or include=a"),
    ("not", "not anything"),
    ("not and include=a", "not include=a"),
    ("not or include=a", "not (anything or include=a)"),
    ("", ""),
    ("  \t ", ""),
    ("()", ""),
    ("and", ""),
    (")", ""),
    # inside a group a following group keeps folding: (a (b or c)) = (a and b) or c
    ("(include=a (include=b or include=c))", "include=a and include=b or include=c"),
])
def test_structure_and_canonical_form(expr: str, canonical: str | None) -> None:
    if canonical is None:
        with pytest.raises(ExpressionError):
            parse(expr)
        return
    e = parse(expr)
    assert str(e) == canonical
    assert parse(str(e)) == e


def test_parens_glued_to_words_are_tokens() -> None:
    assert parse("(include=*.txt)and(exclude=a*)") == And(Include("*.txt"), Exclude("a*"))


def test_group_folding_quirk_semantics() -> None:
    # verified with matchexpression: top level inserts "and", inside a group it does not
    c = ctx(file="x.txt")
    assert not ev("include=*.bin (include=*.bin or include=*.txt)", c)
    assert ev("(include=*.bin (include=*.bin or include=*.txt))", c)


def test_trailing_operators_semantics() -> None:
    c = ctx(file="x.txt")
    assert ev("include=*.bin or", c)
    assert not ev("include=*.bin and", c)
    assert not ev("not", c)
    assert ev("not not", c)
    assert not ev("not or include=*.bin", c)
    assert ev("not and include=*.bin", c)


def test_ast_shapes() -> None:
    assert parse("not include=a or present") == Or(Not(Include("a")), Present())
    assert parse("include=a or") == Or(Include("a"), Anything())
    assert parse("") == Empty()
    assert parse("").is_empty and not parse("anything").is_empty
    assert parse("nothing") == Nothing()
    e = parse("include=a and not (copies=2 or present)")
    assert [str(t) for t in e.terms()] == ["include=a", "copies=2", "present"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("expr", "mode", "position", "fragment"), [
    ("include=*.txt or inclde=*.txt", "preferred", 17, "unknown term 'inclde=*.txt'"),
    ("inclde=*.txt", "preferred", 0, "unknown term"),
    ("  \tfoo", "preferred", 3, "unknown term 'foo'"),
    ("anything=1", "preferred", 0, "unknown term"),
    ("AND", "preferred", 0, "unknown term 'AND'"),
    ("present=yes", "preferred", 0, "unknown term"),
    ("largerthan=10xb", "preferred", 11, "bad size '10xb'"),
    ("largerthan=", "preferred", 11, "bad size"),
    ("(include=*.txt)and copies=1.5", "preferred", 26, "bad number for copies '1.5'"),
    ("copies=trusted:x", "preferred", 15, "bad number for copies 'x'"),
    ("copies=a:b:1", "preferred", 7, "bad value for copies"),
    ("lackingcopies=many", "preferred", 14, "lacking copies"),
    ("metadata=a/b=c", "preferred", 9, "illegal metadata field name 'a/b'"),
    ("metadata==x", "preferred", 9, "illegal metadata field name ''"),
    ("include=[abc", "preferred", 8, "bad glob '[abc'"),
    ("exclude=x[z-a]", "preferred", 8, "bad glob"),
    ("metadata=tag=[x", "preferred", 13, "bad glob"),
    ("balanced=g:1:2", "preferred", 9, "bad value for balanced"),
    ("sizebalanced=g:x", "preferred", 13, "bad number for sizebalanced"),
    ("mimetype=text/*", "preferred", 0, "not allowed in preferred"),
    ("present", "largefiles", 0, "not allowed in largefiles"),
    ("include=* copies=1", "largefiles", 10, "not allowed in largefiles"),
])
def test_error_positions(expr: str, mode: str, position: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(expr, mode=mode)  # type: ignore[arg-type]
    err = info.value
    assert err.position == position
    assert fragment in err.message
    assert str(err) == f"bad expression at column {position}: {err.message}"
    assert "\n" not in str(err)


def test_first_error_wins_and_nothing_is_evaluated() -> None:
    with pytest.raises(ExpressionError) as info:
        parse("anything or nope1 or nope2")
    assert info.value.position == 12


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        parse("anything", mode="other")  # type: ignore[arg-type]


# ---------------------------------------------------------------- globs


@pytest.mark.parametrize(("glob", "path", "expected"), [
    # reference section 8.1
    ("*.txt", "a/b/c.txt", True),
    ("*.TXT", "a/b/c.txt", False),
    ("*/archive/*", "x/archive/y.bin", True),
    ("*/archive/*", "archive/x.bin", False),
    ("archive/*", "archive/x.bin", True),
    ("archive/*", "x/archive/x.bin", False),
    # ** is just two stars; a glob "/" matches a run of slashes
    ("**/*.txt", "a.txt", False),
    ("**/*.txt", "d/a.txt", True),
    ("a/b.txt", "a//b.txt", True),
    ("a//b.txt", "a/b.txt", False),
    ("?.txt", "/.txt", True),
    ("[ab].txt", "a.txt", True),
    ("[!ab].txt", "a.txt", False),
    ("[^ab].txt", "c.txt", True),
    ("[]a].txt", "].txt", True),
    ("[!/]", "/", False),
    ("a.b", "axb", False),
    ("a{b,c}", "ab", False),
    ("a{b,c}", "a{b,c}", True),
    ("\\*", "\\x", True),  # a backslash is literal, not an escape
    ("a\\b", "a\\b", True),
    ("[[:alpha:]]", "b", True),
    ("[[:alpha:]]", "é", False),  # regex-tdfa classes are ASCII
    ("[[:alpha:]]", "\\", True),  # wildToRegex escapes the second "]" as "\]"
    ("[[:foo:]]", "a", False),
    ("[[=ab=]]", "a", True),
    ("[[.a.]]", "a", False),
    ("[a-c-e]", "-", True),
    ("[--z]", "a", True),  # a dash may start a range
    ("[]/]", "[/]", True),
    ("[]*]", ".", True),
    ("a'b", "a'b", False),  # "\'" is regex-tdfa's end-of-text anchor
    ("*'", "x'", True),
    ("a<b", "a<b", False),  # "\<" is a word-start anchor
    ("a|b", "a|b", True),
    ("é*", "éa", True),
    ("?", "é", True),
    ("*", "", True),
    ("", "", True),
    ("*.txt", "x.txt\nb", True),  # multiline ^ $ as in git-annex
    ("a?b", "a\nb", False),
    ("a[!x]b", "a\nb", False),
])
def test_glob(glob: str, path: str, expected: bool) -> None:
    assert glob_matches(glob, path) is expected
    assert ev(f"include={glob}", ctx(file=path)) is expected
    assert ev(f"exclude={glob}", ctx(file=path)) is not expected


def test_glob_case_insensitive_for_metadata_only() -> None:
    assert glob_matches("ALI*", "alice", case_sensitive=False)
    assert not glob_matches("ALI*", "alice")
    assert glob_matches("a/b", "a/b", filepath=False)
    assert not glob_matches("a/b", "a//b", filepath=False)


@pytest.mark.parametrize("glob", ["[abc", "[", "x[z-a]", "[!]", "[]"])
def test_glob_compile_errors(glob: str) -> None:
    with pytest.raises(ValueError):
        glob_matches(glob, "x")


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize(("text", "size"), [
    ("10mb", 10_000_000), ("10MB", 10_000_000), ("10m", 10_000_000), ("1k", 1000),
    ("1kb", 1000), ("1KiB", 1024), ("1ki", 1024), ("1MiB", 1024**2),
    ("1mebibytes", 1024**2), ("2kilobytes", 2000), ("100 KiloBytes", 100_000),
    ("2kilobyte", 2000), ("1kbit", 125), ("1kilobits", 125), ("2.5kbit", 312),
    ("0.5gb", 500_000_000), ("1e3", 1000), ("1E3", 1000), ("1e+3", 1000), ("2.5e1", 25),
    ("1.5", 2), ("2.5", 2), ("3.5", 4), ("0.5", 0), ("-1", -1), ("-1.5", -2),
    ("5.", 5), ("5.kb", 5), ("1.e3", 1), ("1e", 10**18), ("0x10", 16), ("0X1f", 31),
    ("0x10kb", 16_000), ("0o17", 15), ("0b101", 0), ("007", 7), ("10_000", 10),
    ("1,5kb", 1), ("10mb!!", 10_000_000), ("10kB/s", 10_000), ("1Tbit", 125 * 10**9),
    ("1bytes", 1), ("1b", 1), ("1Kibibyte", 1024), ("0.0015kb", 2), ("0.0025kb", 2),
    ("0.1kb", 100), ("1YiB", 2**80), ("  7", 7), ("- 3", -3),
    ("Infinity", 2**1024), ("NaN", -3 * 2**1023), ("-Infinity", -(2**1024)),
])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "kb", "b", ".5kb", "+5", "10mbfoo", "1kbits", "1bit",
                                  "1by", "1kbyte", "NaNkb", "--5", "nan"])
def test_parse_size_errors(text: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_size(text)
    assert info.value.position == 0


def test_size_terms() -> None:
    assert parse("largerthan=1kb") == LargerThan("1kb", 1000)
    assert ev("largerthan=99", ctx(size=100)) and not ev("largerthan=100", ctx(size=100))
    assert ev("smallerthan=101", ctx(size=100)) and not ev("smallerthan=100", ctx(size=100))
    # an unknown size compares like Haskell's Nothing: smaller than everything
    assert not ev("largerthan=0", ctx(size=None))
    assert ev("smallerthan=0", ctx(size=None))
    assert parse("smallerthan=1k") == SmallerThan("1k", 1000)


# ---------------------------------------------------------------- counting terms


TRUST: dict[str, object] = {U2: "untrusted", U3: "trusted", U4: "dead"}
GROUPS = {U1: frozenset({"archive"}), U2: frozenset({"client"}),
          U3: frozenset({"client", "backup"}), U4: frozenset({"client"})}


def located(*uuids: str, **kw: object) -> MatchContext:
    return ctx(**{"locations": frozenset(uuids), "trust": TRUST, "groups": GROUPS,
                  "numcopies": 2, **kw})


@pytest.mark.parametrize(("expr", "uuids", "expected"), [
    ("copies=3", (U1, U2, U3, U4), True),
    ("copies=4", (U1, U2, U3, U4), False),  # dead repos never count
    ("copies=1", (U2,), True),  # untrusted copies count for plain copies=N
    ("copies=semitrusted+:1", (U2,), False),
    ("copies=semitrusted+:2", (U1, U2, U3), True),
    ("copies=trusted+:2", (U1, U3), False),
    ("copies=untrusted:1", (U1, U2), True),
    ("copies=untrusted+:3", (U1, U2, U3), True),
    ("copies=trusted:1", (U3,), True),
    ("copies=semitrusted:1", (U3,), False),
    ("copies=dead:1", (U4,), False),
    ("copies=dead+:3", (U1, U2, U3, U4), True),
    ("copies=client:2", (U2, U3, U4), True),
    ("copies=client:3", (U2, U3, U4), False),
    ("copies=backup:1", (U1,), False),
    ("copies=0", (), True),
    ("copies=-1", (), True),
    ("copies=2", (U1, CLUSTER), False),  # a cluster's UUID is not a distinct copy
    ("lackingcopies=1", (U1, U2), True),  # 2 - 1 non-untrusted
    ("lackingcopies=1", (U1, U3), False),
    ("lackingcopies=2", (U2, U4), True),
    ("lackingcopies=0", (U1, U3), True),
    ("approxlackingcopies=1", (U1,), True),
    ("inallgroup=backup", (U2, U3), True),
    ("inallgroup=client", (U2, U3, U4), False),  # dead U4 is never a location
    ("inallgroup=archive", (U2, U3), False),
    ("inallgroup=nosuchgroup", (), True),
    ("onlyingroup=client", (U2, U3), True),
    ("onlyingroup=client", (U1, U2), False),
    ("onlyingroup=client", (), False),
    ("onlyingroup=nosuchgroup", (U1,), False),
])
def test_counting_terms(expr: str, uuids: tuple[str, ...], expected: bool) -> None:
    assert ev(expr, located(*uuids)) is expected


def test_wantdrop_counts_without_the_dropping_repo() -> None:
    # wantDrop leaves the dropping repo out of locations: "want it while there are
    # fewer than 2 copies" lets a repo drop only when 3 copies exist in total
    while_rare = parse("not copies=2")
    assert matches(while_rare, located(U1), False)  # 2 in total: still wanted
    assert not matches(while_rare, located(U1, U3), False)  # 3 in total: droppable
    # binary: with `wanted here copies=2` and 2 copies in total, drop --auto drops
    assert not matches(parse("copies=2"), located(U1, present=True), False)


def test_lackingcopies_uses_per_file_or_global_numcopies() -> None:
    c = located(U1, numcopies=3, approx_numcopies=1)
    assert ev("lackingcopies=2", c)
    assert not ev("approxlackingcopies=1", c)
    # without a file name git-annex falls back to the global value
    assert not ev("lackingcopies=1", replace(c, file=None))
    assert parse("approxlackingcopies=1") == LackingCopies(1, approx=True)


def test_copies_parse_forms() -> None:
    assert parse("copies=2") == Copies(2)
    assert parse("copies=trusted:2") == Copies(2, trust="trusted")
    assert parse("copies=semitrusted+:1") == Copies(1, trust="semitrusted", or_better=True)
    assert parse("copies=foo+:1") == Copies(1, group="foo+")
    assert parse("copies=:0") == Copies(0, group="")
    assert parse("copies=99999999999999999999") == Copies(7766279631452241919)


# ---------------------------------------------------------------- other terms


def test_anything_nothing_present_unused() -> None:
    assert ev("anything") and not ev("nothing")
    assert ev("present", ctx(present=True)) and not ev("present", ctx(present=False))
    assert not ev("present", MatchContext(file="x", present=True))  # no key
    assert not ev("unused", ctx(unused=True))  # a file in the tree is never unused
    assert ev("unused", ctx(file=None, unused=True))
    assert ev("unused", MatchContext(file="x", unused=True), mode="largefiles") is False


def test_backend_terms() -> None:
    assert ev("inbackend=SHA256E") and not ev("inbackend=SHA256")
    assert not ev("inbackend=sha256e")
    for backend in ("SHA256E", "SHA512", "SHA3_256E", "SKEIN512", "BLAKE2B160E",
                    "BLAKE3_256", "VURL", "GITBUNDLE"):
        assert ev("securehash", ctx(key_backend=backend)), backend
    for backend in ("MD5E", "SHA1", "WORM", "URL", "XXH3E", "GITMANIFEST", "XFOO"):
        assert not ev("securehash", ctx(key_backend=backend)), backend
    assert ev("securehash", ctx(key_backend="XFOO", secure_hash=True))
    assert not ev("securehash", MatchContext(file="x"))


def test_inpreferreddir() -> None:
    assert ev("inpreferreddir", ctx(file="public/x"))
    assert ev("inpreferreddir", ctx(file="a/public/x"))
    assert ev("inpreferreddir", ctx(file="a//public/x"))
    assert not ev("inpreferreddir", ctx(file="public/b/x"))  # only the last directory
    assert not ev("inpreferreddir", ctx(file="public"))
    assert ev("inpreferreddir", ctx(file="out/x", preferreddir="out"))
    assert not ev("inpreferreddir", ctx(file=None))


def test_metadata() -> None:
    md = {"Author": frozenset({"Alice"}), "year": frozenset({"2020"}),
          "tag": frozenset({"Foo", "bar"}), "v": frozenset({"12x", "0x10"})}
    c = ctx(metadata=md)
    for expr, expected in [
        ("metadata=author=alice", True), ("metadata=AUTHOR=ALI*", True),
        ("metadata=author=Bob", False), ("metadata=author", False),
        ("metadata=year<2021", True), ("metadata=year<=2020", True),
        ("metadata=year<2020", False), ("metadata=year>2019.5", True),
        ("metadata=year>=2020", True), ("metadata=year>2020", False),
        ("metadata=year<0x7e5", True), ("metadata=year<2020.0", False),
        ("metadata=year<300", False),
        # not both numbers: case-sensitive string comparison
        ("metadata=year<abc", True), ("metadata=year>=2020x", False),
        ("metadata=author<alice", True), ("metadata=tag<C", False), ("metadata=tag<a", True),
        ("metadata=v>15", True), ("metadata=v<3", True),
        ("metadata=tag=b*", True), ("metadata=nofield=*", False),
    ]:
        assert ev(expr, c) is expected, expr
    assert parse("metadata=a.b-c_d>=3") == MetaData("a.b-c_d", ">=", "3")
    assert not ev("metadata=author=*", MatchContext(file="x", metadata=md))  # no key


def test_largefiles_mode() -> None:
    lf = MatchContext(file="doc/a.txt", size=10, mimetype="text/plain",
                      mimeencoding="us-ascii")
    assert ev("mimetype=text/*", lf, mode="largefiles")
    assert not ev("mimetype=image/*", lf, mode="largefiles")
    assert ev("mimeencoding=us-*", lf, mode="largefiles")
    assert not ev("mimetype=*", MatchContext(file="a"), mode="largefiles")
    assert ev("include=*.txt and smallerthan=1kb", lf, mode="largefiles")
    for term in ("copies=1", "present", "standard", "metadata=a=b", "inbackend=MD5"):
        with pytest.raises(ExpressionError):
            parse(term, mode="largefiles")


def test_balanced_parses_but_is_unsupported() -> None:
    assert parse("balanced=backup") == Balanced("balanced", "backup")
    assert parse("fullysizebalanced=backup:2") == Balanced("fullysizebalanced", "backup", 2)
    assert str(parse("sizebalanced=g:2x")) == "sizebalanced=g:2"
    with pytest.raises(UnsupportedTermError, match="balanced=backup"):
        ev("balanced=backup")
    with pytest.raises(UnsupportedTermError):
        matches(parse("anything and fullybalanced=x"), ctx(), True)


def test_standard_and_groupwanted() -> None:
    client = parse(STANDARD_GROUPS["client"])
    c = ctx(file="archive/a.txt", locations=frozenset({U1}), groups=GROUPS,
            standard_expr=lambda: client)
    assert not ev("standard", c)  # archived already, not lacking copies
    assert ev("standard", replace(c, file="docs/a.txt"))
    # nothing to expand: git-annex falls back to "present"
    assert ev("standard", ctx(present=True)) and not ev("standard", ctx())
    assert ev("groupwanted", ctx(present=True, groupwanted_expr=lambda: None))
    # groupwanted may use standard, but not itself
    gw = parse("standard or groupwanted")
    c2 = ctx(present=False, standard_expr=lambda: parse("nothing"), groupwanted_expr=lambda: gw)
    assert not ev("groupwanted", c2)
    assert ev("groupwanted", replace(c2, present=True))
    # inside a standard expression, standard is not expanded again
    loop: list[Expr] = []
    c3 = ctx(present=False, standard_expr=lambda: loop[0])
    loop.append(parse("standard"))
    assert not ev("standard", c3)


def test_standard_groups() -> None:
    assert set(STANDARD_GROUPS) == {"client", "transfer", "backup", "incrementalbackup",
                                    "smallarchive", "archive", "source", "manual", "public",
                                    "unwanted"}
    for group, text in STANDARD_GROUPS.items():
        e = parse(text)
        assert parse(str(e)) == e
        assert standard_expression(group) == text
    assert standard_expression("nope") is None
    assert standard_group({"client", "mine"}) == "client"
    assert standard_group({"client", "backup"}) is None
    assert standard_group(set()) is None
    assert ev("not anything") is False
    assert parse(STANDARD_GROUPS["source"]) == Not(Copies(1))


def test_source_group_drops_once_copied() -> None:
    source = parse(STANDARD_GROUPS["source"])
    assert matches(source, located(), True)
    assert not matches(source, located(U1), True)


# ---------------------------------------------------------------- missing data


def test_no_file_and_no_key_uses_default() -> None:
    nothing_known = MatchContext()
    with pytest.raises(CannotEvaluate):
        parse("anything").evaluate(nothing_known)
    assert matches(parse("nothing"), nothing_known, True) is True
    assert matches(parse("anything"), nothing_known, False) is False


def test_empty_expression_uses_default() -> None:
    assert matches(parse(""), ctx(), True) is True
    assert matches(parse("()"), ctx(), False) is False
    assert parse("").evaluate(ctx()) is True


def test_key_without_file_name() -> None:
    # verified with `git annex sync --content --all` on a key only in history
    keyonly = ctx(file=None)
    assert not ev("include=*", keyonly)
    assert ev("exclude=*", keyonly)
    assert ev("not include=*", keyonly)
    assert not ev("inpreferreddir", keyonly)
    assert matches(parse("include=*"), keyonly, True) is False


# ---------------------------------------------------------------- round trip


_TERMS = [
    "include=*.txt", "exclude=*/archive/*", "include=[ab]*", "include", "largerthan=10mb",
    "smallerthan=0.5KiB", "copies=2", "copies=trusted:1", "copies=semitrusted+:2",
    "copies=backup:1", "lackingcopies=1", "approxlackingcopies=2", "inallgroup=client",
    "onlyingroup=archive", "inbackend=SHA256E", "securehash", "metadata=tag=a*",
    "metadata=year>=2020", "metadata=x", "present", "inpreferreddir", "standard",
    "groupwanted", "unused", "anything", "nothing", "balanced=g", "fullybalanced=g:2",
]
_SEPARATORS = [" ", "  ", "\t", "\n ", ""]


@st.composite
def expressions(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.one_of(st.sampled_from(_TERMS),
                                    st.sampled_from(["and", "or", "not", "(", ")"])),
                          max_size=14))
    out = ""
    for w in words:
        sep = draw(st.sampled_from(_SEPARATORS))
        if sep == "" and not (w in "()" or out.endswith(("(", ")"))):
            sep = " "
        out += sep + w
    return out


@settings(max_examples=400, deadline=None)
@given(expressions())
def test_canonical_form_round_trips(text: str) -> None:
    e = parse(text)
    canonical = str(e)
    again = parse(canonical)
    assert again == e
    assert str(again) == canonical


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**43), max_value=2**43))
def test_parse_size_integers(n: int) -> None:
    # sizes are computed in Double, like git-annex: exact while below 2**53
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}kb") == 1000 * n
    assert parse_size(f"{n}KiB") == 1024 * n


# ---------------------------------------------------------------- interop

K1 = "SHA256E-s1000--" + "1" * 64 + ".txt"
K2 = "MD5E-s5--" + "2" * 32 + ".bin"
K3 = "SHA1-s0--" + "3" * 40
K4 = "SHA512-s7--" + "4" * 128
REMOTES = ("d1", "d2", "d3", "d4")
LOCATIONS = {K1: ("d1", "d2", "d3", "d4"), K2: ("d2",), K3: (), K4: ("d4",)}
METADATA = {K1: {"author": frozenset({"Alice"}), "year": frozenset({"2020"}),
                 "tag": frozenset({"Foo", "bar"})}}


@dataclass(frozen=True)
class Case:
    """One ``git annex matchexpression`` invocation."""

    expr: str
    file: str = "x.txt"
    size: int | None = 100
    key: str | None = None
    largefiles: bool = False
    mimetype: str | None = None
    mimeencoding: str | None = None

    def argv(self) -> list[str]:
        args = ["matchexpression", self.expr, "--file", self.file]
        if self.key is not None:
            args += ["--key", self.key]
        elif self.size is not None:
            args += ["--size", str(self.size)]
        if self.largefiles:
            args.append("--largefiles")
        if self.mimetype is not None:
            args += ["--mimetype", self.mimetype]
        if self.mimeencoding is not None:
            args += ["--mimeencoding", self.mimeencoding]
        return args

    def __str__(self) -> str:
        extra = f" key={self.key[:8]}" if self.key else f" size={self.size}"
        return f"{self.expr!r} file={self.file!r}{extra}{' lf' if self.largefiles else ''}"


def _size_boundary(text: str) -> list[Case]:
    """Two cases pinning the exact byte count (git-annex reads --size as a Double too,
    so keep sizes below 2**53)."""
    n = parse_size(text)
    return [Case(f"largerthan={text}", size=n), Case(f"largerthan={text}", size=n + 1)]


CURATED: list[Case] = [
    # structure
    Case("include=*.txt or include=*.bin and largerthan=1mb", file="hello.txt"),
    Case("include=*.bin and largerthan=1mb or include=*.txt", file="hello.txt"),
    Case("include=*.txt or (include=*.bin and largerthan=1mb)", file="hello.txt"),
    Case("(include=*.txt)and(exclude=x*)"),
    Case("include=*.bin (include=*.bin or include=*.txt)"),
    Case("(include=*.bin (include=*.bin or include=*.txt))"),
    Case("include=*.bin or (include=*.txt"),
    Case("include=*.bin ) ) or include=*.txt"),
    Case("include=*.bin or"),
    Case("not"),
    Case("not or include=*.bin"),
    Case("not and include=*.bin"),
    Case("()"),
    Case(""),
    Case("include=*.txt not exclude=*.txt"),
    Case("\tinclude=*.txt\nor nothing "),
    # globs and paths
    Case("include=*.txt", file="a/b/c.txt"),
    Case("include=*.TXT", file="a/b/c.txt"),
    Case("include=*/archive/*", file="x/archive/y.bin"),
    Case("include=*/archive/*", file="archive/x.bin"),
    Case("include=a/b.txt", file="a//b.txt"),
    Case("include=[!ab]?.t[x]t", file="cd.txt"),
    Case("include=[[:alpha:]]", file="\\"),
    Case("include=a'b", file="a'b"),
    Case("include=[abc", file="abc"),
    Case("inpreferreddir", file="a/public/x"),
    Case("inpreferreddir", file="public/b/x"),
    Case("include", file=""),
    # sizes
    Case("largerthan=99", size=100),
    Case("smallerthan=100", size=100),
    *_size_boundary("1KiB"),
    *_size_boundary("0x10kb"),
    *_size_boundary("0.0025kb"),
    *_size_boundary("10mb!!"),
    # keyed terms against the fixture's location log, trust, groups and numcopies=2
    Case("copies=3", key=K1), Case("copies=4", key=K1),
    Case("copies=semitrusted+:2", key=K1), Case("copies=semitrusted+:3", key=K1),
    Case("copies=untrusted:1", key=K1), Case("copies=trusted:1", key=K1),
    Case("copies=trusted+:2", key=K1), Case("copies=dead:1", key=K1),
    Case("copies=dead+:3", key=K1), Case("copies=archive:1", key=K1),
    Case("copies=client:2", key=K1), Case("copies=backup:2", key=K1),
    Case("copies=2x", key=K1),
    Case("lackingcopies=1", key=K1), Case("lackingcopies=0", key=K1),
    Case("inallgroup=client", key=K1), Case("onlyingroup=client", key=K1),
    Case("copies=1", key=K2), Case("copies=semitrusted+:1", key=K2),
    Case("lackingcopies=2", key=K2), Case("lackingcopies=3", key=K2),
    Case("approxlackingcopies=2", key=K2), Case("onlyingroup=client", key=K2),
    Case("inallgroup=client", key=K2),
    Case("copies=0", key=K3), Case("copies=1", key=K3), Case("inallgroup=nogroup", key=K3),
    Case("onlyingroup=archive", key=K3),
    Case("copies=1", key=K4), Case("lackingcopies=2", key=K4),
    Case("securehash", key=K1), Case("securehash", key=K2), Case("securehash", key=K3),
    Case("inbackend=SHA256E", key=K1), Case("inbackend=SHA256", key=K1),
    Case("smallerthan=1", key=K3), Case("largerthan=999", key=K1),
    Case("present", key=K1), Case("unused", key=K1),
    Case("metadata=author=alice", key=K1), Case("metadata=Author=ALI*", key=K1),
    Case("metadata=year<2021", key=K1), Case("metadata=year<abc", key=K1),
    Case("metadata=year>=2020x", key=K1), Case("metadata=tag<C", key=K1),
    Case("metadata=author", key=K1), Case("metadata=author=*", key=K2),
    Case("include=*.txt and copies=semitrusted+:2 or nothing", file="d/x.txt", key=K1),
    # largefiles
    Case("largerthan=1kb", size=2000, largefiles=True),
    Case("include=*.txt or smallerthan=10", file="a.bin", size=5, largefiles=True),
    Case("mimetype=text/*", largefiles=True, mimetype="text/plain"),
    Case("mimeencoding=utf*", largefiles=True, mimeencoding="binary"),
    Case("copies=1", largefiles=True),
    Case("mimetype=text/*", mimetype="text/plain"),
    # rejected by both
    Case("inclde=*.txt"), Case("include=*.txt and Anything"), Case("largerthan=10mbfoo"),
    Case("largerthan=.5kb"), Case("copies=1.5", key=K1), Case("copies=a:b:1", key=K1),
    Case("lackingcopies=x", key=K1), Case("metadata=a/b=c", key=K1),
    Case("present=1", key=K1), Case("balanced=g:x", key=K1), Case("anything=1"),
]


def _random_cases(n: int) -> list[Case]:
    """Random token soups over file-only terms: exercises the grouping quirks."""
    rng = random.Random(20261026)
    terms = ["include=*.txt", "include=*.bin", "exclude=*.txt", "include=a/*", "largerthan=50",
             "smallerthan=50", "anything", "nothing", "inpreferreddir", "exclude=?*"]
    cases = []
    for _ in range(n):
        text = ""
        for _ in range(rng.randint(1, 9)):
            word = rng.choice(terms) if rng.random() < 0.55 else rng.choice(
                ["and", "or", "not", "(", ")"])
            glue = word in "()" and rng.random() < 0.5
            text += word if glue or not text else " " + word
        cases.append(Case(text, file=rng.choice(["x.txt", "a/x.bin", "public/b.txt"]),
                          size=rng.choice([10, 100])))
    return cases


CASES = CURATED + _random_cases(8)


def _context_for(case: Case, uuids: dict[str, str]) -> MatchContext:
    trust = {uuids["d2"]: "untrusted", uuids["d3"]: "trusted", uuids["d4"]: "dead"}
    groups = {uuids["d1"]: frozenset({"archive"}), uuids["d2"]: frozenset({"client"}),
              uuids["d3"]: frozenset({"client", "backup"})}
    if case.key is None:
        return MatchContext(file=case.file, size=case.size, mimetype=case.mimetype,
                            mimeencoding=case.mimeencoding)
    backend, size_field = case.key.split("-")[:2]
    return MatchContext(
        file=case.file, key_backend=backend, size=int(size_field[1:]),
        locations=frozenset(uuids[r] for r in LOCATIONS[case.key]),
        trust=trust, groups=groups, numcopies=2,  # type: ignore[arg-type]
        metadata=METADATA.get(case.key, {}),
    )


def _ours(case: Case, uuids: dict[str, str]) -> bool | str:
    try:
        e = parse(case.expr, mode="largefiles" if case.largefiles else "preferred")
    except ExpressionError:
        return "rejected"
    return e.evaluate(_context_for(case, uuids))


@dataclass
class Oracle:
    uuids: dict[str, str]
    results: dict[Case, bool | str]
    vicfg: str


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    """A scratch repo with four directory remotes (d2 untrusted, d3 trusted, d4 dead),
    groups, numcopies 2, location log entries and metadata; every case is run once."""
    binary = git_annex_binary()
    if binary is None:
        pytest.skip("real git-annex not installed (scripts/test.sh installs the PyPI wheel)")
    base = tmp_path_factory.mktemp("expression-interop")
    env = hermetic_env(base / "home")
    env["PATH"] = str(Path(binary).parent) + os.pathsep + env.get("PATH", "")
    repo = base / "repo"

    def run(*args: str, cwd: Path = repo, extra: dict[str, str] | None = None,
            check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(list(args), cwd=cwd, env={**env, **(extra or {})}, input=stdin,
                              capture_output=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{args} failed: {proc.stderr.decode(errors='replace')}")
        return proc

    run("git", "init", "-q", str(repo), cwd=base)
    run(binary, "init", "-q", "test")
    uuids = {}
    for name in REMOTES:
        (base / name).mkdir()
        run(binary, "initremote", "-q", name, "type=directory",
            f"directory={base / name}", "encryption=none")
        uuids[name] = run("git", "config", f"remote.{name}.annex-uuid").stdout.decode().strip()
    run(binary, "group", "d1", "archive")
    run(binary, "group", "d2", "client")
    run(binary, "group", "d3", "client")
    run(binary, "group", "d3", "backup")
    run(binary, "untrust", "d2")
    run(binary, "trust", "--force", "d3")
    run(binary, "dead", "d4")
    run(binary, "numcopies", "2")
    batch = "".join(f"{key} {uuids[name]} 1\n" for key, remotes in LOCATIONS.items()
                    for name in remotes)
    run(binary, "setpresentkey", "--batch", stdin=batch.encode())
    for key, fields in METADATA.items():
        sets = [a for f, vs in fields.items() for v in sorted(vs) for a in ("-s", f"{f}={v}")]
        run(binary, "metadata", "--key", key, *sets)
    vicfg = run(binary, "vicfg", extra={"EDITOR": "cat", "VISUAL": "cat"}).stdout.decode()

    def annex(case: Case) -> bool | str:
        proc = run(binary, *case.argv(), check=False)
        err = proc.stderr.decode(errors="replace")
        if "failed to compile regex" in err or (proc.returncode == 42
                                                and "bad expression" in err):
            return "rejected"  # git-annex rejects bad globs only when it matches
        if proc.returncode in (0, 1) and not err.strip():
            return proc.returncode == 0
        return f"unexpected exit {proc.returncode}: {err.strip()}"

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(CASES, pool.map(annex, CASES), strict=True))
    return Oracle(uuids, results, vicfg)


@pytest.mark.interop
@pytest.mark.parametrize("case", CASES, ids=str)
def test_agrees_with_matchexpression(oracle: Oracle, case: Case) -> None:
    assert _ours(case, oracle.uuids) == oracle.results[case]


@pytest.mark.interop
def test_corpus_is_meaningful(oracle: Oracle) -> None:
    outcomes = list(oracle.results.values())
    assert len(CURATED) >= 40
    assert outcomes.count(True) >= 30 and outcomes.count(False) >= 30
    assert outcomes.count("rejected") >= 10


@pytest.mark.interop
def test_standard_groups_match_vicfg(oracle: Oracle) -> None:
    shown: dict[str, str] = {}
    for line in oracle.vicfg.splitlines():
        if line.startswith("# standard ") and " = " in line:
            group, text = line[len("# standard "):].split(" = ", 1)
            shown[group] = text
    assert shown == STANDARD_GROUPS

