"""``annexsync sync`` against ``git annex sync``: two clones sharing many files, a few changed.

Run on purpose (not collected by pytest)::

    .venv/bin/python benchmarks/bench_sync.py [--files 100000] [--changed 10] [--rounds 5]
                                              [--profile FILE.prof]

For each tool, in a hermetic git environment, same run:

1. *build*: ``a`` is ``git init`` + ``init`` by the tool, then ``--files`` small files
   (500 per directory) are added by ``annexsync add`` (the on-disk result is the one
   ``git annex add`` makes, which would take about 20 minutes for 100,000 files
   here) and committed; ``b`` is a ``git clone`` of it, ``init`` by the tool; ``a``
   has ``b`` as a remote. A first ``sync`` in ``a``, ``b``, ``a`` warms both tools up
   (git-annex builds its branch index and keys database; both set up ``synced/``).
2. *rounds*: ``--changed`` files in ``a`` get new content, then ``sync`` in ``a``
   (commit, fetch ``b``, merge, push to ``b``) is timed. git-annex's sync does not
   add files, so its side runs ``git annex add`` on the changed files first; that
   is timed apart and reported both ways.

Prints the build times, the median sync time of each tool and the ratio.
``--profile`` runs one more annexsync round in-process under cProfile and prints
the top functions by cumulative time (the threads of fetch/push show as waits).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from annexsync.testing.gitenv import git_annex_binary, hermetic_env

VENV_BIN = Path(sys.executable).parent
PER_DIR = 500


def sh(cwd: Path, *args: str) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {cwd} failed ({p.returncode}):\n"
                         f"{p.stdout.decode(errors='replace')}{p.stderr.decode(errors='replace')}")
    return p.stdout.decode()


def timed(cwd: Path, *args: str) -> float:
    t = time.perf_counter()
    sh(cwd, *args)
    return time.perf_counter() - t


def file_path(i: int) -> str:
    return f"d{i // PER_DIR:04d}/f{i:06d}.txt"


def make_files(repo: Path, n: int) -> None:
    for i in range(n):
        if i % PER_DIR == 0:
            (repo / f"d{i // PER_DIR:04d}").mkdir()
        with open(repo / file_path(i), "w") as f:
            f.write(f"small file number {i}\n")


def rmtree(p: Path) -> None:
    subprocess.run(["chmod", "-R", "u+w", str(p)], check=False)
    shutil.rmtree(p, ignore_errors=True)


class Setup:
    """Two clones of one repository, initialised and synced by one tool."""

    def __init__(self, base: Path, tool: str, files: int) -> None:
        self.tool = tool
        self.cmd = [str(VENV_BIN / "annexsync")] if tool == "annexsync" else [
            git_annex_binary() or "git-annex"]
        self.a, self.b = base / tool / "a", base / tool / "b"
        self.files = files
        self.round = 0

    def build(self) -> dict[str, float]:
        times: dict[str, float] = {}
        a, b = self.a, self.b
        a.mkdir(parents=True)
        t = time.perf_counter()
        sh(a, "git", "init", "-q", "-b", "main")
        sh(a, *self.cmd, "init", "a")
        make_files(a, self.files)
        times["create files"] = time.perf_counter() - t
        times["annexsync add"] = timed(a, str(VENV_BIN / "annexsync"), "add", "--quiet", ".")
        times["commit"] = timed(a, "git", "commit", "-q", "--no-verify", "-m", "the files")
        t = time.perf_counter()
        sh(a.parent, "git", "clone", "-q", "a", "b")
        sh(b, *self.cmd, "init", "b")
        sh(a, "git", "remote", "add", "b", "../b")
        times["clone + init"] = time.perf_counter() - t
        t = time.perf_counter()
        for repo in (a, b, a):
            self.sync(repo)
        times["warm-up syncs"] = time.perf_counter() - t
        return times

    def sync(self, repo: Path) -> float:
        return timed(repo, *self.cmd, "sync", "--quiet")

    def change(self, n: int) -> list[str]:
        self.round += 1
        step = max(1, self.files // n)
        changed = [file_path((i * step + self.round) % self.files) for i in range(n)]
        for f in changed:
            p = self.a / f
            p.unlink()
            p.write_text(f"changed in round {self.round}: {f}\n")
        return changed

    def run_round(self, n: int) -> tuple[float, float]:
        """(time to stage the changes, time of sync); annexsync needs no staging."""
        changed = self.change(n)
        t_add = 0.0
        if self.tool == "git-annex":
            t_add = timed(self.a, *self.cmd, "add", "--quiet", *changed)
        t_sync = self.sync(self.a)
        # b really got them: its synced/main is a's main.
        mine = sh(self.a, "git", "rev-parse", "main").strip()
        theirs = sh(self.b, "git", "rev-parse", "synced/main").strip()
        if mine != theirs:
            raise SystemExit(f"{self.tool}: b's synced/main is not a's main after sync")
        return t_add, t_sync


def profile_round(setup: Setup, n: int, out: str) -> None:
    setup.change(n)
    from annexsync.cli.main import main as cli_main

    old = os.getcwd()
    os.chdir(setup.a)
    try:
        prof = cProfile.Profile()
        prof.enable()
        code = cli_main(["sync", "--quiet"])
        prof.disable()
    finally:
        os.chdir(old)
    if code != 0:
        raise SystemExit("profiled sync failed")
    prof.dump_stats(out)
    print(f"\nprofile of one annexsync sync round ({out}), top 25 by cumulative time:")
    pstats.Stats(out).sort_stats("cumulative").print_stats(25)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", metavar="FILE", help="also profile one annexsync round")
    ap.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    args = ap.parse_args()
    ga = git_annex_binary()
    if ga is None:
        sys.exit("real git-annex is needed: pip install git-annex")
    scratch_dir = os.environ.get("ANNEXSYNC_BENCH_DIR")  # hermetic_env drops ANNEXSYNC_*
    home = Path(tempfile.mkdtemp(prefix="bench-sync-home.", dir=scratch_dir))
    env = hermetic_env(home)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.path.dirname(ga)}{os.pathsep}{env['PATH']}"
    # An installed annexsync runs from compiled bytecode; without this, a
    # PYTHONDONTWRITEBYTECODE environment makes every run compile its modules again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
    os.environ.clear()
    os.environ.update(env)
    base = Path(tempfile.mkdtemp(prefix="bench-sync.", dir=scratch_dir))
    print(f"git-annex {sh(base, ga, 'version', '--raw').strip()}; {args.files} files, "
          f"{args.changed} changed per round, {args.rounds} rounds; in {base}")
    try:
        results: dict[str, list[tuple[float, float]]] = {}
        setups = {}
        for tool in ("annexsync", "git-annex"):
            setup = Setup(base, tool, args.files)
            setups[tool] = setup
            build = setup.build()
            print(f"{tool:9} build: " + ", ".join(f"{k} {v:.1f}s" for k, v in build.items())
                  + f" (total {sum(build.values()):.1f}s)", flush=True)
            results[tool] = [setup.run_round(args.changed) for _ in range(args.rounds)]
            print(f"{tool:9} rounds: " + ", ".join(
                f"{s:.2f}s" + (f" (+ add {a:.2f}s)" if a else "") for a, s in results[tool]),
                flush=True)
        ours = statistics.median(s for _, s in results["annexsync"])
        theirs = statistics.median(s for _, s in results["git-annex"])
        theirs_add = statistics.median(a + s for a, s in results["git-annex"])
        print(f"\nsync of {args.files} files, {args.changed} changed (median of {args.rounds}):")
        print(f"  annexsync sync               {ours:7.2f}s")
        print(f"  git annex sync               {theirs:7.2f}s   ratio {theirs / ours:5.1f}x")
        print(f"  git annex add + git annex sync {theirs_add:5.2f}s   ratio "
              f"{theirs_add / ours:5.1f}x")
        if args.profile:
            profile_round(setups["annexsync"], args.changed, args.profile)
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            rmtree(base)
            rmtree(home)
    return 0


if __name__ == "__main__":
    sys.exit(main())
