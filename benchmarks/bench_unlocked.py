"""Benchmark: ``git add`` of N modified unlocked files, annexsync's filter vs git-annex's.

Two repositories get the same N unlocked files (committed), then every file is
modified and ``git add -A`` is timed: once with ``filter.annex.process`` pointing at
``annexsync filter-process`` (set up by ``annexsync init``), once at
``git-annex filter-process`` (set up by ``git annex init``). Both rounds run in the
same process, alternating, ``--rounds`` times; the median of each is compared.

Usage: .venv/bin/python benchmarks/bench_unlocked.py [--files 1000] [--size 8192]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from annexsync.testing.gitenv import git_annex_binary, hermetic_env

ANNEXSYNC = Path(sys.executable).parent / "annexsync"


def run(cwd: Path, env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.decode(errors='replace')}")


def write_files(top: Path, n: int, size: int, salt: bytes) -> None:
    block = os.urandom(size)
    for i in range(n):
        d = top / f"d{i % 20:02d}"
        d.mkdir(exist_ok=True)
        head = salt + i.to_bytes(4, "big")
        (d / f"f{i:05d}.bin").write_bytes(head + block[: size - len(head)])


def setup(top: Path, env: dict[str, str], init: list[str], n: int, size: int) -> None:
    top.mkdir()
    run(top, env, "git", "init", "-q", "-b", "main")
    run(top, env, *init)
    write_files(top, n, size, b"v0")
    # Annexed (unlocked) once; afterwards, with annex.largefiles unset, both filters
    # keep modified files annexed because their staged version is annexed.
    run(top, env, "git", "-c", "annex.largefiles=anything", "add", "-A")
    run(top, env, "git", "commit", "-q", "-m", "initial")


def timed_add(top: Path, env: dict[str, str], n: int, size: int, round_no: int) -> float:
    write_files(top, n, size, b"r%d" % round_no)
    t0 = time.perf_counter()
    run(top, env, "git", "add", "-A")
    elapsed = time.perf_counter() - t0
    staged = subprocess.run(["git", "cat-file", "-p", ":d00/f00000.bin"], cwd=top, env=env,
                            capture_output=True).stdout
    if not staged.startswith(b"/annex/objects/"):
        raise SystemExit(f"{top.name}: the modified file was not annexed: {staged[:40]!r}")
    run(top, env, "git", "commit", "-q", "-m", f"round {round_no}")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--size", type=int, default=8192, help="bytes per file")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ga = git_annex_binary()
    if ga is None:
        print("git-annex not found (install the test extras)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-unlocked."))
    try:
        env = hermetic_env(work / "home")
        env["PATH"] = os.pathsep.join([os.path.dirname(ga), env.get("PATH", "")])
        ours, theirs = work / "annexsync", work / "git-annex"
        setup(ours, env, [str(ANNEXSYNC), "init", "bench"], args.files, args.size)
        setup(theirs, env, ["git", "annex", "init", "-q", "bench"], args.files, args.size)
        a_times: list[float] = []
        g_times: list[float] = []
        for r in range(1, args.rounds + 1):
            a_times.append(timed_add(ours, env, args.files, args.size, r))
            g_times.append(timed_add(theirs, env, args.files, args.size, r))
        a, g = statistics.median(a_times), statistics.median(g_times)
        print(f"git add -A of {args.files} modified unlocked files of {args.size} bytes "
              f"({args.rounds} rounds, median):")
        print(f"  annexsync filter-process: {a:7.3f} s  {' '.join(f'{t:.3f}' for t in a_times)}")
        print(f"  git-annex filter-process: {g:7.3f} s  {' '.join(f'{t:.3f}' for t in g_times)}")
        print(f"  ratio (git-annex / annexsync): {g / a:.1f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
