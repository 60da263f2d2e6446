"""Benchmark: ``annexsync get`` from a local clone against ``cp`` and ``git annex get``.

Run on purpose (not collected by pytest)::

    .venv/bin/python benchmarks/bench_get.py [--small N] [--big-mib M] [--runs R]

Two scenarios, each in fresh clones, in a hermetic git environment:

1. one 1 GiB file: ``cp`` of the object (and ``cp`` + ``sync`` of it, since
   annexsync fsyncs what it stores), ``annexsync get`` (verified: SHA-256 of
   1 GiB alone takes 0.65-0.8 s on this CPU, more than ``cp``), ``annexsync get``
   with ``annex.verify=false`` (what ``cp`` does: no hash) and ``git annex get``;
2. N small files (default 10,000): ``annexsync get`` and ``git annex get``, and the
   kernel work any get of them must do (the store's syscalls alone, in one thread:
   the ceiling of a speed-up here);
3. the other way: ``copy --to`` a fresh clone of ``--copy`` of them (default 2,000).

Medians of R runs (default 3; the small-file git-annex run once: it takes a minute).

Every measured run gets a clone of its own, and clones are deleted only at the end
of a scenario: on this machine's ext4 (no journal) inodes deleted in the last
minute or more are skipped by the inode allocator one by one, so deleting a
10,000-file clone right before the next run makes every ``mkdir`` and file
creation of that run pay for the deletion (for both tools). Like the other
benchmarks, annexsync runs with its bytecode cached (``PYTHONPYCACHEPREFIX``), as
an installed package does.
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


def sh(cwd: Path, env: dict[str, str], *args: str) -> None:
    p = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{p.stdout.decode()}{p.stderr.decode()}")


def timed(cwd: Path, env: dict[str, str], *args: str) -> float:
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    sh(cwd, env, *args)
    return time.perf_counter() - t


def rmtree(p: Path) -> None:
    for root, dirs, _ in os.walk(p):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(p)


def make_source(base: Path, env: dict[str, str], ga: str, files: dict[str, int]) -> Path:
    src = base / "src"
    src.mkdir()
    sh(src, env, "git", "init", "-q", "-b", "master")
    sh(src, env, ga, "init", "src")
    for name, size in files.items():
        p = src / name
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "wb") as f:
            left = size
            while left:
                n = min(left, 1 << 24)
                f.write(os.urandom(n) if size > 4096 else f"content {name}\n".encode()[:n])
                left -= n
    sh(src, env, ga, "add", "--jobs=2", ".")
    sh(src, env, "git", "commit", "-q", "--no-verify", "-m", "add")
    return src


def fresh_clone(base: Path, env: dict[str, str], src: Path, name: str, tool: list[str]) -> Path:
    dst = base / name
    assert not dst.exists(), f"{dst}: one clone per run"
    sh(base, env, "git", "clone", "-q", str(src), str(dst))
    sh(dst, env, *tool, "init", name)
    return dst


def syscalls_alone(src: Path, dst: Path) -> float:
    """The store's kernel work for every key of ``src``, nothing else: per key open and
    read the object, create and write a temp file; one ``syncfs``; then the key's hash
    and key directories, the rename into them, the directory's ``chmod``; ``syncfs``.
    One thread, no git, no hashing, no logs: what any get of these keys must cost."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    objects = src / ".git" / "annex" / "objects"
    rels = [os.path.relpath(os.path.join(root, f), objects)
            for root, _, names in os.walk(objects) for f in names]
    tmpdir = dst / ".git" / "annex" / "tmp"
    tmpdir.mkdir(parents=True)
    store = dst / ".git" / "annex" / "objects"
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    tmps = []
    for i, rel in enumerate(rels):
        fd = os.open(objects / rel, os.O_RDONLY)
        data = os.pread(fd, 1 << 16, 0)
        os.close(fd)
        tmp = f"{tmpdir}/{i}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.write(fd, data)
        os.close(fd)
        tmps.append((tmp, rel))
    dfd = os.open(dst, os.O_RDONLY)
    libc.syncfs(dfd)
    for tmp, rel in tmps:
        keydir = f"{store}/{os.path.dirname(rel)}"
        os.makedirs(keydir)
        os.rename(tmp, f"{keydir}/{os.path.basename(rel)}")
        os.chmod(keydir, 0o555)
    libc.syncfs(dfd)
    os.close(dfd)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--copy", type=int, default=2000,
                    help="small files copied --to a clone (git-annex: ~10 s per 1,000)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    ga = git_annex_binary()
    if ga is None:
        raise SystemExit("git-annex not found")
    annexsync = [sys.executable, "-m", "annexsync"]
    base = Path(tempfile.mkdtemp(prefix="bench-get-",
                                 dir=args.dir or os.environ.get("ANNEXSYNC_BENCH_DIR")))
    env = hermetic_env(base / "home")
    env["PATH"] = os.path.dirname(ga) + os.pathsep + env["PATH"]
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "annexsync-bench-pycache")
    subprocess.run([*annexsync, "--help"], env=env, capture_output=True, check=True)
    try:
        print(f"scratch: {base}")
        # -- 1 GiB ---------------------------------------------------------------------
        big = base / "big"
        big.mkdir()
        src = make_source(big, env, ga, {"big.bin": args.big_mib << 20})
        obj = Path(os.path.realpath(src / "big.bin"))
        cp_t, cps_t, ours_t, nov_t, ga_t = [], [], [], [], []
        for i in range(args.runs):
            out = big / f"cp-{i}"
            cp_t.append(timed(big, env, "cp", str(obj), str(out)))
            os.unlink(out)
            cps_t.append(timed(big, env, "sh", "-c", f"cp '{obj}' '{out}' && sync '{out}'"))
            os.unlink(out)
            d = fresh_clone(big, env, src, f"ours-{i}", annexsync)
            ours_t.append(timed(d, env, *annexsync, "get", "big.bin"))
            rmtree(d)  # a few inodes; frees the disk space for the next run
            d = fresh_clone(big, env, src, f"noverify-{i}", annexsync)
            sh(d, env, "git", "config", "annex.verify", "false")
            nov_t.append(timed(d, env, *annexsync, "get", "big.bin"))
            rmtree(d)
            d = fresh_clone(big, env, src, f"theirs-{i}", [ga])
            ga_t.append(timed(d, env, ga, "get", "big.bin"))
            rmtree(d)
        m = statistics.median
        print(f"\n1 file of {args.big_mib} MiB, median of {args.runs}:")
        print(f"  cp                   {m(cp_t):7.2f} s")
        print(f"  cp + sync            {m(cps_t):7.2f} s")
        print(f"  annexsync get        {m(ours_t):7.2f} s   "
              f"{m(ours_t) / m(cp_t):.2f}x cp, {m(ours_t) / m(cps_t):.2f}x cp+sync")
        print(f"  annexsync get, annex.verify=false\n"
              f"                       {m(nov_t):7.2f} s   "
              f"{m(nov_t) / m(cp_t):.2f}x cp, {m(nov_t) / m(cps_t):.2f}x cp+sync")
        print(f"  git annex get        {m(ga_t):7.2f} s   {m(ga_t) / m(cp_t):.2f}x cp")
        rmtree(big)
        # -- many small files --------------------------------------------------------------
        small = base / "small"
        small.mkdir()
        files = {f"d{i % 100:02d}/f{i}.txt": 20 for i in range(args.small)}
        src = make_source(small, env, ga, files)
        ours_s = []
        for i in range(args.runs):
            d = fresh_clone(small, env, src, f"ours-{i}", annexsync)
            ours_s.append(timed(d, env, *annexsync, "get"))
        floor = syscalls_alone(src, small / "floor")
        d = fresh_clone(small, env, src, "theirs", [ga])
        ga_s = timed(d, env, ga, "get")
        print(f"\n{args.small} small files:")
        print(f"  annexsync get        {m(ours_s):7.2f} s  (median of {args.runs})")
        print(f"  git annex get        {ga_s:7.2f} s")
        print(f"  speed-up             {ga_s / m(ours_s):7.1f}x")
        print(f"  the store's syscalls alone, one thread (no git, no hash, no logs):\n"
              f"                       {floor:7.2f} s   (git annex get / that: "
              f"{ga_s / floor:.1f}x)")
        # -- the other way: copy --to a fresh clone -----------------------------------
        n_copy = min(args.small, args.copy)
        paths = [f"d{i:02d}" for i in range(100)][: max(1, n_copy * 100 // args.small)]
        ours_c = []
        for i in range(args.runs):
            d = fresh_clone(small, env, src, f"to-ours-{i}", annexsync)
            sh(src, env, "git", "remote", "add", f"to-ours-{i}", str(d))
            ours_c.append(timed(src, env, *annexsync, "copy", "--quiet", "--to",
                                f"to-ours-{i}", *paths))
        d = fresh_clone(small, env, src, "to-theirs", [ga])
        sh(src, env, "git", "remote", "add", "to-theirs", str(d))
        ga_c = timed(src, env, ga, "copy", "--quiet", "--to", "to-theirs", *paths)
        n = sum(1 for f in files if f.split("/")[0] in paths)
        print(f"\ncopy --to a local clone, {n} small files:")
        print(f"  annexsync copy --to  {m(ours_c):7.2f} s  (median of {args.runs})")
        print(f"  git annex copy --to  {ga_c:7.2f} s")
        print(f"  speed-up             {ga_c / m(ours_c):7.1f}x")
    finally:
        rmtree(base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
