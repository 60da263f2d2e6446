"""``annexsync sync --content`` against ``git annex sync --content``: send many small
files to a clone on this machine (a drive, say), same run.

Run on purpose (not collected by pytest)::

    .venv/bin/python benchmarks/bench_sync_content.py [--files 2000] [--runs 3]

One source repository, made by git-annex (``--files`` small files in 20
directories, added and committed). For each tool and run: a fresh ``git clone`` of it
(``b``, initialised by the tool), the source gets ``b`` as a remote, and ``sync
--content`` in the source is timed: git round (commit, fetch, merge, push) and every
file's content sent to ``b``. The run checks that ``b`` holds every key afterwards.

Prints the median of each tool and the ratio. Clones are deleted only at the end (on
this machine's journal-less ext4, inodes deleted in the last minutes slow down the
next creations; see ``on_fresh_ext4.sh``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from pathlib import Path

from common import annexsync_bin, cleanup, git_annex, objects_in, scratch, setup_env, sh


def make_source(base: Path, ga: str, files: int) -> Path:
    src = base / "src"
    src.mkdir()
    sh(src, "git", "init", "-q", "-b", "main")
    sh(src, ga, "init", "src")
    for i in range(files):
        d = src / f"d{i % 20:02d}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}.txt").write_text(f"small file {i}\n")
    sh(src, ga, "add", "--quiet", "--jobs=2", ".")
    sh(src, "git", "commit", "-q", "--no-verify", "-m", "add")
    return src


def run(base: Path, src: Path, tool: list[str], name: str, files: int) -> float:
    b = base / name
    sh(base, "git", "clone", "-q", str(src), str(b))
    sh(b, *tool, "init", name)
    sh(src, "git", "remote", "add", name, str(b))
    subprocess.run(["sync"], check=True)
    t = subprocess.run(["/usr/bin/time", "-f", "%e", *tool, "sync", "--quiet", "--content",
                        name], cwd=src, capture_output=True, text=True)
    if t.returncode != 0:
        raise SystemExit(f"{tool[0]} sync --content failed:\n{t.stdout}{t.stderr}")
    elapsed = float(t.stderr.strip().splitlines()[-1])
    sh(src, "git", "remote", "remove", name)
    if objects_in(b) != files:
        raise SystemExit(f"{tool[0]}: {name} holds {objects_in(b)} of {files} keys")
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    setup_env()
    ga = git_annex()
    base = scratch("bench-sync-content.")
    try:
        src = make_source(base, ga, args.files)
        ours = [run(base, src, [annexsync_bin()], f"ours{i}", args.files)
                for i in range(args.runs)]
        theirs = [run(base, src, [ga], f"theirs{i}", args.files) for i in range(args.runs)]
        m = statistics.median
        print(f"sync --content of {args.files} small files to a clone on this machine "
              f"(median of {args.runs}):")
        print(f"  annexsync sync --content   {m(ours):7.2f} s   "
              f"({', '.join(f'{t:.2f}' for t in ours)})")
        print(f"  git annex sync --content   {m(theirs):7.2f} s   "
              f"({', '.join(f'{t:.2f}' for t in theirs)})")
        print(f"  speed-up                   {m(theirs) / m(ours):7.1f}x")
    finally:
        cleanup(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
