"""wanted/required/group/ungroup/groupwanted/numcopies/mincopies/trust/semitrust/untrust/
dead/describe against real git-annex, and preferred-content decisions against
``git annex find --want-get`` / ``--want-drop``.

Every setting written by annexsync is read back by git-annex, every setting written
by git-annex is printed identically by annexsync, and with a pinned vector clock the
two write byte-identical logs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import locations_many
from annexsync.annex.repo import AnnexRepo
from annexsync.annex.worktree import annexed_files
from annexsync.cli.repoconfig import set_uuid_log
from annexsync.policy.preferred import ContentPolicy
from annexsync.testing.annexrepos import run_cli

pytestmark = pytest.mark.usefixtures("git_annex")

CONFIG_LOGS = ("uuid.log", "trust.log", "group.log", "preferred-content.log",
               "required-content.log", "group-preferred-content.log", "numcopies.log",
               "mincopies.log")


# ---------------------------------------------------------------- helpers


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def ga(cwd: Path, *args: str) -> str:
    """stdout of a git-annex command that must succeed."""
    return sh(cwd, "git", "annex", *args).stdout


ax = run_cli


def ax_ok(cwd: Path, *args: str) -> str:
    code, out, err = ax(cwd, *args)
    assert code == 0, f"annexsync {args}: {err}"
    return out


def tip(r: Path) -> str:
    return sh(r, "git", "rev-parse", "refs/heads/git-annex").stdout.strip()


def branch_file(r: Path, path: str) -> bytes:
    proc = subprocess.run(["git", "cat-file", "-p", f"git-annex:{path}"], cwd=r,
                          capture_output=True)
    return proc.stdout if proc.returncode == 0 else b""


def uuid_of(r: Path) -> str:
    return sh(r, "git", "config", "annex.uuid").stdout.strip()


def journal_empty(r: Path) -> bool:
    j = r / ".git" / "annex" / "journal"
    return not j.exists() or not any(j.iterdir())


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """Repository ``a`` (initialised by annexsync) and a git-annex clone ``b``, its remote."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    ax_ok(a, "init", "repo a")
    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    ga(b, "init", "repo b")
    sh(a, "git", "remote", "add", "b", "../b")
    sh(a, "git", "fetch", "-q", "b")
    ga(a, "merge")
    return a, b


# ---------------------------------------------------------------- get and set


def test_wanted_and_required_round_trip_with_git_annex(pair: tuple[Path, Path]) -> None:
    a, b = pair
    # Unset: annexsync prints what git-annex prints (an empty line).
    for cmd in ("wanted", "required"):
        assert ax_ok(a, cmd, "here") == ga(a, cmd, "here") == "\n"
    expr = "include=*.txt or (largerthan=1mb and not copies=archive:1)"
    assert ax_ok(a, "wanted", "here", expr) == "wanted here ok\n"
    assert ga(a, "wanted", "here") == expr + "\n"
    assert ax_ok(a, "required", "b", "include=*.bin") == "required b ok\n"
    assert ga(a, "required", "b") == "include=*.bin\n"
    line = branch_file(a, "preferred-content.log").decode()
    assert re.fullmatch(re.escape(f"{uuid_of(a)} {expr} timestamp=") + r"[0-9]+s\n", line)
    assert journal_empty(a)
    # Set by git-annex, printed by annexsync; names resolve like git-annex's.
    ga(a, "wanted", "b", "standard")
    ga(a, "required", ".", "present")
    for cmd, name in (("wanted", "b"), ("required", "here"), ("required", "."),
                      ("wanted", uuid_of(b)), ("wanted", "repo b")):
        assert ax_ok(a, cmd, name) == ga(a, cmd, name), (cmd, name)
    # An empty expression unsets, as in git-annex.
    ax_ok(a, "wanted", "here", "")
    assert ga(a, "wanted", "here") == "\n"


@pytest.mark.parametrize("expr,column", [
    ("include=*.txt and bogus", 18),
    ("largerthan=10mb or smallerthan=lots", 31),
    ("copies=archive:x", 15),
    ("present and (inallgroup=client or foo=bar)", 34),
    ("include=[abc", 8),
])
def test_malformed_expression_rejected_with_column(pair: tuple[Path, Path], expr: str,
                                                   column: int) -> None:
    a, _ = pair
    before = tip(a)
    for cmd in ("wanted", "required"):
        code, out, err = ax(a, cmd, "here", expr)
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and f"at column {column}:" in err, err
    code, _, err = ax(a, "groupwanted", "g", expr)
    assert code == 1 and f"at column {column}:" in err
    assert tip(a) == before and journal_empty(a)
    assert branch_file(a, "preferred-content.log") == b""
    if expr != "include=[abc":  # git-annex only fails on that glob when it first matches
        assert sh(a, "git", "annex", "wanted", "here", expr, check=False).returncode == 1


def test_unknown_repository_is_git_annex_error(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    theirs = sh(a, "git", "annex", "wanted", "nosuch", check=False)
    assert theirs.returncode == 1
    for args in (("wanted", "nosuch"), ("group", "nosuch", "x"), ("untrust", "nosuch"),
                 ("describe", "nosuch", "x"), ("wanted", "00000000-1111-2222-3333-444444444444")):
        code, out, err = ax(a, *args)
        assert code == 1 and out == ""
        name = args[1]
        assert err == f'annexsync: there is no available git remote named "{name}"\n'
    assert theirs.stderr.startswith('git-annex: there is no available git remote named "nosuch"')


def test_remote_uuid_is_discovered_and_cached(pair: tuple[Path, Path]) -> None:
    a, b = pair
    sh(a, "git", "config", "--unset", "remote.b.annex-uuid", check=False)
    ax_ok(a, "wanted", "b", "present")
    assert sh(a, "git", "config", "remote.b.annex-uuid").stdout.strip() == uuid_of(b)
    sh(a, "git", "remote", "add", "ghost", "../nowhere")
    code, _, err = ax(a, "wanted", "ghost")
    assert code == 1 and "cannot determine uuid for ghost" in err


def test_duplicate_description_is_ambiguous(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    ax_ok(a, "describe", "b", "twin")
    ax_ok(a, "describe", "here", "twin")
    code, _, err = ax(a, "wanted", "twin")
    assert code == 1 and err == "annexsync: found multiple repositories with that description\n"


def test_group_ungroup_groupwanted(pair: tuple[Path, Path]) -> None:
    a, b = pair
    assert ax_ok(a, "group", "here") == ga(a, "group", "here") == "\n"
    assert ax_ok(a, "group", "here", "client") == "group here ok\n"
    ax_ok(a, "group", "here", "backup")
    ax_ok(a, "group", "here", "client")  # already in it: still one entry
    assert ga(a, "group", "here") == "backup client\n"
    assert ax_ok(a, "ungroup", "here", "backup") == "ungroup here ok\n"
    assert ga(a, "group", "here") == "client\n"
    ga(a, "group", "b", "archive")
    ga(a, "group", "b", "zzz")
    assert ax_ok(a, "group", "b") == ga(a, "group", "b") == "archive zzz\n"
    assert ax_ok(a, "group", "--list") == ga(a, "group", "--list")
    assert ax_ok(a, "groupwanted", "mygroup") == ga(a, "groupwanted", "mygroup") == "\n"
    assert ax_ok(a, "groupwanted", "mygroup", "include=*.mp3 or present") == \
        "groupwanted mygroup ok\n"
    assert ga(a, "groupwanted", "mygroup") == "include=*.mp3 or present\n"
    ga(a, "groupwanted", "other", "anything")
    assert ax_ok(a, "groupwanted", "other") == "anything\n"
    code, _, err = ax(a, "groupwanted")
    assert code == 1 and err == "annexsync: Specify a group.\n"


def test_numcopies_and_mincopies(pair: tuple[Path, Path]) -> None:
    a, _ = pair
    for cmd in ("numcopies", "mincopies"):
        assert ax_ok(a, cmd) == ga(a, cmd)  # "global ... is not set" (+ default note)
    assert ax_ok(a, "numcopies", "3") == "numcopies 3 ok\n"
    assert ga(a, "numcopies") == "3\n"
    before = tip(a)
    ax_ok(a, "numcopies", "3")  # unchanged: git-annex writes nothing either
    assert tip(a) == before
    ga(a, "mincopies", "2")
    assert ax_ok(a, "mincopies") == "2\n"
    ax_ok(a, "mincopies", "1")
    assert ga(a, "mincopies") == "1\n"
    for bad, msg in (("0", "Cannot set numcopies to 0."), ("-2", "numcopies cannot be negative!"),
                     ("two", "Bad number: two"), ("1.5", "Bad number: 1.5")):
        code, _, err = ax(a, "numcopies", bad)
        assert code == 1 and err == f"annexsync: {msg}\n"
        theirs = sh(a, "git", "annex", "numcopies", "--", bad, check=False)
        assert theirs.returncode == 1 and msg in theirs.stderr
    assert ga(a, "numcopies") == "3\n"


def _trust_lists(a: Path) -> dict[str, set[str]]:
    info = json.loads(ga(a, "info", "--fast", "--json"))
    return {level: {r["uuid"] for r in info[f"{level} repositories"]}
            for level in ("trusted", "semitrusted", "untrusted")}


def test_trust_levels_seen_by_git_annex(pair: tuple[Path, Path]) -> None:
    a, b = pair
    ub = uuid_of(b)
    ax_ok(a, "group", "b", "backup")
    before = tip(a)
    code, out, err = ax(a, "trust", "b")
    assert code == 1 and out == ""
    theirs = sh(a, "git", "annex", "trust", "b", check=False)
    assert err == "annexsync: " + theirs.stderr.splitlines()[0].removeprefix("git-annex: ") + "\n"
    assert tip(a) == before
    out = ax_ok(a, "trust", "b", "--force", "--json")
    assert json.loads(out) == {"command": "trust", "error-messages": [], "input": ["b"],
                               "success": True, "uuid": ub}
    assert ub in _trust_lists(a)["trusted"]
    assert ax_ok(a, "untrust", "b") == "untrust b ok\n"
    assert ub in _trust_lists(a)["untrusted"]
    theirs_json = json.loads(ga(a, "semitrust", "b", "--json"))
    ax_ok(a, "untrust", "b")
    assert json.loads(ax_ok(a, "semitrust", "b", "--json")) == theirs_json
    assert ub in _trust_lists(a)["semitrusted"]
    assert ax_ok(a, "dead", "b") == "dead b ok\n"
    lists = _trust_lists(a)
    assert all(ub not in us for us in lists.values())  # git-annex hides dead repositories
    assert ga(a, "group", "b") == "\n"  # dead clears the groups
    # The empty group set is written with a double space, as git-annex writes it.
    assert re.fullmatch(re.escape(ub) + r"  timestamp=[0-9]+s\n",
                        _line_of(branch_file(a, "group.log"), ub))
    # Values set by git-annex are honoured by annexsync's trust-aware commands.
    ga(a, "semitrust", "b")
    assert ub in _trust_lists(a)["semitrusted"]


def _line_of(log: bytes, uuid: str) -> str:
    return next(line + "\n" for line in log.decode().splitlines() if line.startswith(uuid))


def test_describe_shows_in_info(pair: tuple[Path, Path]) -> None:
    a, b = pair
    assert ax_ok(a, "describe", "b", "the", "backup", "disk") == "describe b ok\n"
    info = json.loads(ga(a, "info", "--fast", "--json"))
    descs = {r["uuid"]: r["description"] for r in info["semitrusted repositories"]}
    assert descs[uuid_of(b)] == "the backup disk [b]"
    ax_ok(a, "describe", "here", "laptop")
    info = json.loads(ga(a, "info", "--fast", "--json"))
    assert {r["uuid"]: r["description"] for r in info["semitrusted repositories"]}[
        uuid_of(a)] == "laptop"  # git-annex marks "here" in its own field
    # A description names the repository, for annexsync and git-annex alike.
    ax_ok(a, "wanted", "the backup disk", "present")
    assert ga(a, "wanted", "b") == "present\n"


def test_same_bytes_as_git_annex_with_pinned_clock(pair: tuple[Path, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The same commands run by git-annex in one copy and by annexsync in another
    leave byte-identical logs (vector clock included)."""
    a, _ = pair
    monkeypatch.setenv("GIT_ANNEX_VECTOR_CLOCK", "1900000000")
    theirs, ours = a.parent / "theirs", a.parent / "ours"
    shutil.copytree(a, theirs, symlinks=True)
    shutil.copytree(a, ours, symlinks=True)
    steps = [
        ("wanted", "here", "include=*.txt or largerthan=1mb"),
        ("wanted", "here", "include=*.txt or largerthan=1mb"),
        ("required", "b", "include=*.bin"),
        ("group", "here", "client"), ("group", "here", "backup"),
        ("ungroup", "here", "backup"), ("ungroup", "here", "nosuchgroup"),
        ("group", "b", "archive"),
        ("groupwanted", "mygroup", "present"), ("groupwanted", "mygroup", "anything"),
        ("numcopies", "2"), ("numcopies", "2"), ("mincopies", "3"),
        ("untrust", "b"), ("semitrust", "b"), ("trust", "--force", "b"), ("dead", "b"),
        ("describe", "b", "new desc"), ("describe", "here", "my", "laptop"),
        ("wanted", "here", ""),
    ]
    for step in steps:
        ga(theirs, *step)
        ax_ok(ours, *step)
        for log in CONFIG_LOGS:
            assert branch_file(ours, log) == branch_file(theirs, log), (step, log)
    # The pinned clock was used, and bumped past it for repeated changes.
    assert branch_file(ours, "numcopies.log") == b"1900000000s 2\n"
    assert branch_file(ours, "preferred-content.log").endswith(b"  timestamp=1900000002s\n")


# ---------------------------------------------------------------- preferred content corpus

FILES = {  # path: (size, repositories holding the content)
    "a.txt": (10, "abc"),
    "notes/b.txt": (20, "a"),
    "big.bin": (20_000, "b"),
    "archive/old.txt": (30, "ab"),
    "sub/archive/x.txt": (40, "c"),
    "public/p.txt": (50, "ac"),
    "photo.JPG": (3_000, "a"),
    "mid.dat": (5_000, "bc"),
}

EXPRESSIONS = [
    "include=*.txt", "exclude=*/archive/* and exclude=archive/*", "largerthan=4kb",
    "smallerthan=1kb or include=*.JPG", "copies=2", "copies=3", "copies=archive:1",
    "copies=client:1", "copies=semitrusted+:2", "copies=untrusted:1", "lackingcopies=1",
    "approxlackingcopies=1", "inallgroup=archive", "inallgroup=client", "present",
    "not present", "include=*.txt or include=*.bin and largerthan=10kb",
    "include=*.txt or (include=*.bin and largerthan=10kb)", "inbackend=SHA256E",
    "inpreferreddir", "groupwanted", "standard", "anything", "nothing",
    # negating "present" (or what expands to it) is "unstable": git-annex matches nothing
    "include=*.txt or not present", "not not present", "not standard", "not groupwanted",
    "not (copies=2 or include=*.bin)",
    "(include=* and ((exclude=*/archive/* and exclude=archive/*) or "
    "(not (copies=archive:1 or copies=smallarchive:1)))) or approxlackingcopies=1",
]

STANDARD = ["client", "transfer", "backup", "archive", "manual", "smallarchive",
            "incrementalbackup", "source", "unwanted"]


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    """Repository a (here) with clones b (group archive) and c (client, untrusted) as
    remotes, numcopies 2, and content spread as in FILES."""
    repos = {n: tmp_path / n for n in "abc"}
    a = repos["a"]
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    ga(a, "init", "a")
    for name, (size, _) in FILES.items():
        p = a / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes((name.encode() * (size // len(name) + 1))[:size])
    ga(a, "add", ".")
    sh(a, "git", "commit", "-q", "-m", "files")
    for n in "bc":
        sh(tmp_path, "git", "clone", "-q", str(a), str(repos[n]))
        ga(repos[n], "init", n)
        sh(a, "git", "remote", "add", n, f"../{n}")
    sh(a, "git", "fetch", "-q", "--all")
    for n in "bc":
        want = [f for f, (_, where) in FILES.items() if n in where]
        ga(a, "copy", "--to", n, *want)
    ga(a, "drop", "--force", *[f for f, (_, where) in FILES.items() if "a" not in where])
    ax_ok(a, "group", "b", "archive")
    ax_ok(a, "group", "c", "client")
    ax_ok(a, "untrust", "c")
    ax_ok(a, "numcopies", "2")
    ax_ok(a, "groupwanted", "mygroup", "include=*.txt and present")
    return repos


def _ours(a: Path, uuid: str) -> tuple[set[str], set[str]]:
    """(files uuid wants to get, files it wants to drop) per ContentPolicy, default False."""
    with AnnexRepo.find(a) as repo:
        branch = AnnexBranch(repo)
        policy = ContentPolicy.from_logs(branch.read_many(ContentPolicy.LOGS))
        files = annexed_files(repo)
        where = locations_many(branch, [f.key for f in files])
        get = {f.file for f in files
               if policy.wants(uuid, f.file, f.key, frozenset(where[f.key]), default=False)}
        drop = {f.file for f in files
                if policy.wants_drop(uuid, f.file, f.key, frozenset(where[f.key]),
                                     default=False)}
    return get, drop


def _theirs(a: Path, by: str | None) -> tuple[set[str], set[str]]:
    suffix = f"-by={by}" if by else ""
    out = []
    for mode in ("get", "drop"):
        listing = sh(a, "git", "annex", "find", f"--want-{mode}{suffix}", "--print0").stdout
        out.append({f for f in listing.split("\0") if f})
    return out[0], out[1]


def _compare(a: Path, label: str, mismatches: list[str], *, by: str | None = None) -> None:
    uuid = sh(a, "git", "config", f"remote.{by}.annex-uuid").stdout.strip() if by \
        else uuid_of(a)
    ours, theirs = _ours(a, uuid), _theirs(a, by)
    for mode, o, t in zip(("want-get", "want-drop"), ours, theirs, strict=True):
        if o != t:
            mismatches.append(f"{label} {mode}{'-by=' + by if by else ''}: "
                              f"annexsync {sorted(o)} git-annex {sorted(t)}")


def test_preferred_content_matches_git_annex_find(scene: dict[str, Path]) -> None:
    a = scene["a"]
    mismatches: list[str] = []
    _compare(a, "(nothing set)", mismatches)
    ax_ok(a, "group", "here", "mygroup")
    for expr in EXPRESSIONS:
        ax_ok(a, "wanted", "here", expr)
        ax_ok(a, "wanted", "b", expr)
        _compare(a, repr(expr), mismatches)
        _compare(a, repr(expr), mismatches, by="b")
    # Required content is also preferred: alone, and or-ed with wanted.
    ax_ok(a, "wanted", "here", "")
    ax_ok(a, "required", "here", "include=*.bin")
    _compare(a, "required only", mismatches)
    ax_ok(a, "wanted", "here", "include=notes/*")
    _compare(a, "wanted + required", mismatches)
    ax_ok(a, "required", "here", "")
    # An expression this version cannot parse (from a newer git-annex) means "present".
    with AnnexRepo.find(a) as repo:
        branch = AnnexBranch(repo)
        set_uuid_log(branch, "preferred-content.log", uuid_of(a), "include=*.txt or future=1")
        branch.commit()
    _compare(a, "unparsable", mismatches)
    # groupwanted applies only when exactly one of the groups has an expression.
    ax_ok(a, "groupwanted", "second", "anything")
    ax_ok(a, "group", "here", "second")
    ax_ok(a, "wanted", "here", "groupwanted")
    _compare(a, "two groupwanted", mismatches)
    assert not mismatches, "\n".join(mismatches)


def test_standard_groups_match_git_annex_find(scene: dict[str, Path]) -> None:
    a = scene["a"]
    mismatches: list[str] = []
    ax_ok(a, "wanted", "here", "standard")
    ax_ok(a, "wanted", "b", "standard")
    ax_ok(a, "wanted", "c", "standard")
    _compare(a, "b archive", mismatches, by="b")
    _compare(a, "c client", mismatches, by="c")
    previous = None
    for group in STANDARD:
        if previous:
            ax_ok(a, "ungroup", "here", previous)
        ax_ok(a, "group", "here", group)
        previous = group
        _compare(a, f"standard {group}", mismatches)
        if group in ("client", "manual"):  # manual's expression has "present" in it
            ax_ok(a, "wanted", "here", "not standard")
            _compare(a, f"not standard {group}", mismatches)
            ax_ok(a, "wanted", "here", "standard")
    # Two standard groups: 'standard' falls back to "present".
    ax_ok(a, "group", "here", "client")
    _compare(a, "standard unwanted+client", mismatches)
    assert not mismatches, "\n".join(mismatches)
