"""The assistant against git-annex's, same run: latency, burst, memory.

    .venv/bin/python benchmarks/bench_assistant.py [--latency N] [--burst N] [--memory N]
        [--only annexsync|git-annex] [--burst-runs R]

Runs ../shared/bench/latency.py (one 100 KB file from one clone readable in the other)
and ../shared/bench/burst.py (N files of 1 KB into a new directory) against two
annexsync assistants and two git-annex assistants on local clones, then measures
the annexsync daemon's RSS with a tree of --memory files (0 to skip). --burst-runs R
repeats the burst R times on the same pair of daemons (each into a new directory) and
also prints the median, since shared machines are noisy. --drive N writes N files of
1 KB into a clone whose assistant runs while the other clone runs none (a USB drive,
say) and times until that clone stores them all (--latency 0 --burst 0 --memory 0
--drive N measures only that).
Targets (issue 6): latency median <= 0.25 s; 1,000-file burst <= 2 s; RSS <= 100 MB
with 100,000 files.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from annexsync.testing.daemons import Daemon, wait_for
from common import cleanup, git_annex, objects_in, scratch, setup_env, sh

ROOT = Path(__file__).resolve().parents[1]
PROBES = Path(os.environ.get("ANNEXSYNC_PROBES", ROOT.parent / "shared" / "bench"))
PY = sys.executable


def annexsync(cwd: Path, *args: str) -> str:
    return sh(cwd, PY, "-m", "annexsync", *args)


def clones(base: Path, tool: str) -> tuple[Path, Path]:
    a, b = base / "a", base / "b"
    a.mkdir(parents=True)
    sh(a, "git", "init", "-q", "-b", "main")
    if tool == "annexsync":
        annexsync(a, "init", "a")
    else:
        sh(a, git_annex(), "init", "a")
    (a / "seed.txt").write_text("seed\n")
    if tool == "annexsync":
        annexsync(a, "sync", "-q")
    else:
        sh(a, git_annex(), "add", "seed.txt")
        sh(a, "git", "commit", "-q", "-m", "seed")
    sh(base, "git", "clone", "-q", str(a), "b")
    if tool == "annexsync":
        annexsync(b, "init", "b")
    else:
        sh(b, git_annex(), "init", "b")
    sh(a, "git", "remote", "add", "b", str(b))
    return a, b


class GitAnnexAssistant:
    def __init__(self, repo: Path) -> None:
        self.repo = repo

    def start(self) -> GitAnnexAssistant:
        sh(self.repo, git_annex(), "assistant")
        wait_for(lambda: (self.repo / ".git/annex/daemon.pid").exists(), 30,
                 what="git-annex assistant")
        time.sleep(3)  # benchmark only: let its start-up scan finish
        return self

    def stop(self) -> None:
        subprocess.run([git_annex(), "assistant", "--stop"], cwd=self.repo,
                       capture_output=True)


def run_probe(script: str, src: Path, dst: Path, n: int, limit: float) -> str:
    env = dict(os.environ, BURST_LIMIT_S=str(limit))
    p = subprocess.run([PY, str(PROBES / script), str(src), str(dst), str(n)],
                       capture_output=True, text=True, env=env, timeout=limit + 300)
    return p.stdout


def measure(tool: str, latency_n: int, burst_n: int, burst_limit: float,
            burst_runs: int = 1) -> dict[str, str]:
    base = scratch(f"bench-{tool}.")
    out: dict[str, str] = {}
    try:
        a, b = clones(base, tool)
        if tool == "annexsync":
            daemons = [Daemon(a).start(), Daemon(b).start()]
        else:
            daemons = [GitAnnexAssistant(a).start(), GitAnnexAssistant(b).start()]  # type: ignore[list-item]
        try:
            if latency_n:
                text = run_probe("latency.py", a, b, latency_n, 120)
                out["latency"] = text.strip().splitlines()[-1] if text.strip() else "?"
            times: list[float] = []
            for run in range(burst_n and burst_runs):
                if run:
                    time.sleep(2)  # let the previous burst's bookkeeping settle
                text = run_probe("burst.py", a, b, burst_n, burst_limit)
                line = text.strip().splitlines()[-1] if text.strip() else "?"
                out["burst" if run == 0 else f"burst #{run + 1}"] = line
                m = re.search(r"all (\d+)/(\d+) arrived after ([\d.]+)s", line)
                if m and m.group(1) == m.group(2):
                    times.append(float(m.group(3)))
            if len(times) > 1:
                times.sort()
                out["burst median"] = (f"{times[len(times) // 2]:.2f}s of {len(times)} "
                                       f"complete runs (min {times[0]:.2f}s)")
        finally:
            for d in daemons:
                d.stop()
    finally:
        cleanup(base)
    return out


def measure_drive(tool: str, n: int, limit: float) -> str:
    """Only ``a``'s assistant runs; ``b`` is a clone nobody runs in (a drive): ``n``
    files of 1 KB are written into ``a``; the time until ``b`` stores all of them."""
    base = scratch(f"bench-drive-{tool}.")
    try:
        a, b = clones(base, tool)
        daemon = Daemon(a).start() if tool == "annexsync" else GitAnnexAssistant(a).start()
        try:
            before = objects_in(b)
            d = a / f"drive{int(time.time())}"
            d.mkdir()
            t0 = time.perf_counter()
            for i in range(n):
                (d / f"f{i}.bin").write_bytes(os.urandom(1000))
            have = 0
            while time.perf_counter() - t0 < limit:
                have = objects_in(b) - before
                if have >= n:
                    break
                time.sleep(0.05)
            took = time.perf_counter() - t0
            return (f"all {n} stored in the drive clone after {took:.2f}s" if have >= n
                    else f"{have}/{n} stored in the drive clone after {took:.2f}s (limit)")
        finally:
            daemon.stop()
    finally:
        cleanup(base)


def memory(n: int) -> str:
    base = scratch("bench-mem.")
    try:
        a = base / "big"
        a.mkdir()
        sh(a, "git", "init", "-q", "-b", "main")
        annexsync(a, "init", "big")
        for i in range(n):
            d = a / f"d{i // 1000:03d}"
            if i % 1000 == 0:
                d.mkdir()
            (d / f"f{i}").write_bytes(b"%d\n" % i)
        t0 = time.perf_counter()
        annexsync(a, "add", "--quiet", ".")
        sh(a, "git", "commit", "-q", "--no-verify", "-m", "many")
        build = time.perf_counter() - t0
        d = Daemon(a).start(timeout=600)
        try:
            assert d.proc is not None
            time.sleep(2)
            status = Path(f"/proc/{d.proc.pid}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]
            hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]
        finally:
            d.stop()
        return f"{n} files: daemon RSS {rss} MB (peak {hwm} MB); add+commit took {build:.1f}s"
    finally:
        cleanup(base)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=int, default=10)
    ap.add_argument("--burst", type=int, default=1000)
    ap.add_argument("--burst-limit", type=float, default=120)
    ap.add_argument("--memory", type=int, default=100000)
    ap.add_argument("--only", choices=["annexsync", "git-annex"])
    ap.add_argument("--burst-runs", type=int, default=1)
    ap.add_argument("--drive", type=int, default=0,
                    help="also: N files to a clone with no assistant of its own (a drive)")
    ap.add_argument("--drive-limit", type=float, default=300)
    args = ap.parse_args()
    setup_env()
    print(f"git-annex: {sh(Path.cwd(), git_annex(), 'version', '--raw').strip()}")
    for tool in ("annexsync", "git-annex"):
        if args.only and tool != args.only:
            continue
        res = measure(tool, args.latency, args.burst, args.burst_limit,
                      args.burst_runs if tool == "annexsync" else 1)
        for k, v in res.items():
            print(f"{tool} {k}: {v}", flush=True)
        if args.drive:
            print(f"{tool} drive: {measure_drive(tool, args.drive, args.drive_limit)}",
                  flush=True)
    if args.memory and args.only != "git-annex":
        print(f"annexsync memory: {memory(args.memory)}")


if __name__ == "__main__":
    main()
