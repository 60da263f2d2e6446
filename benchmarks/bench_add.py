"""annexsync add against git annex add, same run, same files.

    .venv/bin/python benchmarks/bench_add.py [--files 10000] [--big-mib 1024]

Prints wall times and ratios. Targets (issue 2): 10,000 small files at least 20x
faster than git annex add; a 1 GiB file within 1.2x of hashing it with hashlib.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
from pathlib import Path

from common import annexsync_bin, cleanup, git_annex, new_repo, scratch, setup_env, sh, timed


def settle() -> None:
    """Write back everything dirty, so a timed run does not pay for earlier writes."""
    subprocess.run(["sync"], check=True)


def make_small_files(repo: Path, n: int) -> None:
    for i in range(n):
        d = repo / f"d{i // 500:03d}"
        if i % 500 == 0:
            d.mkdir()
        (d / f"f{i:05d}.txt").write_bytes(f"small file number {i}\n".encode() * 3)


def make_big_file(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(chunk[:-8] + i.to_bytes(8, "little"))


def hashlib_time(path: Path) -> float:
    def run() -> None:
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
    return timed(run)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--big-mib", type=int, default=1024)
    args = ap.parse_args()
    setup_env()
    ga = git_annex()
    base = scratch("bench-add.")
    try:
        print(f"git-annex: {sh(base, ga, 'version', '--raw').strip()}")
        ours = new_repo(base, "ours", [annexsync_bin(), "init", "ours"])
        theirs = new_repo(base, "theirs", [ga, "init", "theirs"])
        make_small_files(ours, args.files)
        make_small_files(theirs, args.files)
        # Each timed run starts with nothing dirty: the files just written (both
        # trees) would otherwise be written back during whichever run comes first.
        settle()
        t_ours = timed(lambda: sh(ours, annexsync_bin(), "add", "--quiet", "."))
        settle()
        t_theirs = timed(lambda: sh(theirs, ga, "add", "--quiet", "."))
        print(f"add {args.files} small files: annexsync {t_ours:.2f}s, "
              f"git-annex {t_theirs:.2f}s, ratio {t_theirs / t_ours:.1f}x faster")
        if args.big_mib:
            big = new_repo(base, "big", [annexsync_bin(), "init", "big"])
            f = big / "big.bin"
            make_big_file(f, args.big_mib)
            hashlib_time(f)  # warm the page cache
            settle()
            t_hash = min(hashlib_time(f) for _ in range(2))
            settle()
            t_add = timed(lambda: sh(big, annexsync_bin(), "add", "--quiet", "big.bin"))
            print(f"add {args.big_mib} MiB file: annexsync {t_add:.2f}s, hashlib alone "
                  f"{t_hash:.2f}s, ratio {t_add / t_hash:.2f}x of hashlib")
    finally:
        cleanup(base)


if __name__ == "__main__":
    main()
