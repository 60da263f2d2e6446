"""Remote-change notification over ssh, against git-annex's remotedaemon, same run.

    .venv/bin/python benchmarks/bench_notify.py [--rounds N] [--only annexsync|git-annex]

A throwaway sshd on 127.0.0.1 serves clone ``srv``; clone ``here`` has ``srv`` as an
ssh remote and runs the tool's assistant (git-annex's runs its remotedaemon, which
follows ``git-annex-shell notifychanges``; ours follows ``annexsync-shell
notifychanges``). Each round commits a new small file in ``srv`` with plain git (no
daemon there; ``main`` and ``synced/main`` both moved, as a sync would) and measures
the time until the file is in ``here``'s work tree. Median and maximum per tool.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from annexsync.testing.daemons import Daemon, wait_for  # noqa: E402
from annexsync.testing.sshd import SshServer, start_sshd  # noqa: E402
from common import cleanup, git_annex, scratch, setup_env, sh  # noqa: E402

PY = sys.executable


def tool_cmd(tool: str) -> list[str]:
    return [PY, "-m", "annexsync"] if tool == "annexsync" else [git_annex()]


def pair(base: Path, tool: str, sshd: SshServer) -> tuple[Path, Path]:
    here, srv = base / "here", base / "srv"
    here.mkdir(parents=True)
    sh(here, "git", "init", "-q", "-b", "main")
    sh(here, *tool_cmd(tool), "init", "here")
    (here / "seed.txt").write_text("seed\n")
    sh(here, *tool_cmd(tool), "add", "seed.txt")
    sh(here, "git", "commit", "-q", "-m", "seed")
    sh(base, "git", "clone", "-q", str(here), "srv")
    sh(srv, *tool_cmd(tool), "init", "srv")
    sh(srv, "git", "remote", "remove", "origin")
    sh(here, "git", "remote", "add", "srv", sshd.url(srv))
    sh(here, "git", "config", "remote.srv.annex-ssh-options", shlex.join(sshd.ssh_options()))
    sh(here, "git", "config", "core.sshCommand", sshd.git_ssh_command())
    sh(here, *tool_cmd(tool), "sync")
    return here, srv


def commit_in(srv: Path, name: str) -> None:
    (srv / name).write_text(f"{name}\n")
    sh(srv, "git", "add", name)
    sh(srv, "git", "commit", "-q", "-m", name)
    sh(srv, "git", "branch", "-f", "synced/main", "main")


def rounds(here: Path, srv: Path, n: int, timeout: float) -> list[float]:
    times: list[float] = []
    for i in range(n + 1):
        name = f"r{i}.txt"
        commit_in(srv, name)
        t0 = time.perf_counter()
        try:
            wait_for(lambda p=here / name: os.path.lexists(p), timeout, interval=0.005,
                     what=name)
        except TimeoutError:
            times.append(float("inf"))
            continue
        if i > 0:  # round 0 warms up (connections, caches)
            times.append(time.perf_counter() - t0)
    return times


def measure(tool: str, n: int, timeout: float) -> list[float]:
    base = scratch(f"annexsync-bench-notify-{tool}.")
    sshd = start_sshd(base / "sshd")
    try:
        here, srv = pair(base, tool, sshd)
        if tool == "annexsync":
            d = Daemon(here).start()
            try:
                wait_for(lambda: "sshnotifier: notify-connected" in d.log(), 30,
                         what="the notifychanges stream")
                return rounds(here, srv, n, timeout)
            finally:
                d.stop()
        sh(here, git_annex(), "assistant")
        try:
            time.sleep(5)  # benchmark only: its start-up scan and remotedaemon connect
            return rounds(here, srv, n, timeout)
        finally:
            subprocess.run([git_annex(), "assistant", "--stop"], cwd=here,
                           capture_output=True)
    finally:
        sshd.stop()
        cleanup(base)


def summary(times: list[float]) -> str:
    ok = [t for t in times if t != float("inf")]
    missed = len(times) - len(ok)
    if not ok:
        return f"no change arrived ({missed} rounds timed out)"
    text = f"median {statistics.median(ok):.3f} s, max {max(ok):.3f} s over {len(ok)} rounds"
    return text + (f", {missed} timed out" if missed else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per round")
    ap.add_argument("--only", choices=["annexsync", "git-annex"])
    args = ap.parse_args()
    setup_env()
    print(f"git-annex: {sh(Path.cwd(), git_annex(), 'version', '--raw').strip()}")
    results: dict[str, list[float]] = {}
    for tool in ("annexsync", "git-annex"):
        if args.only and tool != args.only:
            continue
        results[tool] = measure(tool, args.rounds, args.timeout)
        print(f"{tool}: commit on the ssh remote -> in the work tree here: "
              f"{summary(results[tool])}", flush=True)
    if len(results) == 2:
        ours = [t for t in results["annexsync"] if t != float("inf")]
        theirs = [t for t in results["git-annex"] if t != float("inf")]
        if ours and theirs:
            print(f"ratio (median): {statistics.median(theirs) / statistics.median(ours):.1f}x")


if __name__ == "__main__":
    main()
