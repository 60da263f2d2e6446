"""Convergence: any schedule of edits and pairwise syncs among 3 clones ends identical."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from annexsync.cli.main import main

NAMES = ["a", "b", "c"]
FILES = ["f0.txt", "f1.txt", "dir/f2.txt"]


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def annexsync(cwd: Path, *args: str) -> int:
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return main(list(args))
    finally:
        os.chdir(old)


def make_clones(base: Path) -> dict[str, Path]:
    a = base / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    annexsync(a, "init", "a")
    (a / "seed.txt").write_text("seed\n")
    annexsync(a, "sync")
    repos = {"a": a}
    for n in ("b", "c"):
        sh(base, "git", "clone", "-q", str(a), n)
        annexsync(base / n, "init", n)
        repos[n] = base / n
    for n, r in repos.items():
        for m, other in repos.items():
            if m != n and m not in sh(r, "git", "remote").split():
                sh(r, "git", "remote", "add", m, str(other))
    return repos


op = st.one_of(
    st.tuples(st.just("edit"), st.sampled_from(NAMES), st.sampled_from(FILES),
              st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES), st.sampled_from(FILES), st.just(0)),
    st.tuples(st.just("sync"), st.sampled_from(NAMES), st.sampled_from(NAMES), st.just(0)),
)


@settings(max_examples=int(os.environ.get("ANNEXSYNC_CONVERGENCE_EXAMPLES", "6")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(op, min_size=3, max_size=8))
@example([("edit", "b", "f1.txt", 3), ("edit", "a", "f0.txt", 2), ("edit", "c", "f1.txt", 1)])
@example([("edit", "a", "f0.txt", 2), ("sync", "a", "b", 0), ("edit", "a", "f0.txt", 1)])
@example([("edit", "a", "f0.txt", 1), ("edit", "b", "f0.txt", 2), ("sync", "a", "b", 0),
          ("delete", "c", "f0.txt", 0), ("edit", "c", "dir/f2.txt", 0), ("sync", "c", "b", 0),
          ("edit", "b", "f0.txt", 3), ("sync", "b", "a", 0)])
def test_any_schedule_converges(schedule: list[tuple[str, str, str, int]]) -> None:
    base = Path(tempfile.mkdtemp(prefix="converge."))
    try:
        repos = make_clones(base)
        for kind, who, what, n in schedule:
            r = repos[who]
            if kind == "edit":
                p = r / what
                p.parent.mkdir(exist_ok=True)
                if p.is_symlink():
                    p.unlink()
                p.write_text(f"{who} wrote version {n} of {what}\n")
            elif kind == "delete":
                if os.path.lexists(r / what):
                    (r / what).unlink()
            elif who != what:
                annexsync(r, "sync", what)
        # settle: every clone syncs with every other, twice round
        for _ in range(2):
            for n in NAMES:
                assert annexsync(repos[n], "sync") == 0
        trees = {n: sh(r, "git", "rev-parse", "HEAD^{tree}") for n, r in repos.items()}
        assert len(set(trees.values())) == 1, trees
        for r in repos.values():
            assert sh(r, "git", "status", "--porcelain") == ""
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)
