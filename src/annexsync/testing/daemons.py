"""Starting and stopping real assistant processes in tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(cond: Callable[[], object], timeout: float = 20.0, interval: float = 0.02,
             what: str = "condition") -> object:
    """Poll ``cond`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """An ``annexsync assistant --foreground`` process on one repository."""

    def __init__(self, repo: Path, *, command: str = "assistant",
                 env: dict[str, str] | None = None) -> None:
        self.repo = repo
        self.command = command
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def status_path(self) -> Path:
        return self.repo / ".git" / "annex" / "annexsync.status.json"

    def start(self, timeout: float = 20.0) -> Daemon:
        try:
            self.status_path.unlink()
        except FileNotFoundError:
            pass
        log = open(self.repo / ".git" / "annex" / "test-daemon.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "annexsync", self.command, "--foreground", str(self.repo)]
            if self.command == "assistant" else
            [sys.executable, "-m", "annexsync", self.command, str(self.repo)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.repo,
            env=self.env or os.environ.copy())
        log.close()
        wait_for(self._started, timeout, what=f"assistant on {self.repo} to start")
        return self

    def _started(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"assistant exited with {self.proc.returncode}: "
                               + self.log()[-2000:])
        if not self.status_path.exists():
            return False
        return "scan-done" in self.log() or self.command == "watch"

    def log(self) -> str:
        try:
            return (self.repo / ".git" / "annex" / "daemon.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def make_clones(base: Path, n: int, *, chain: bool = False) -> list[Path]:
    """``n`` clones ``c0``… of a new repository, for assistant tests and benchmarks.

    Each clone gets every other as a local-path remote named ``cJ`` (with ``chain``,
    only its neighbours); ``origin`` is removed so only those remotes exist.
    """

    def run(cwd: Path, *args: str) -> None:
        p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
        if p.returncode:
            raise RuntimeError(f"{' '.join(args)} failed: {p.stdout}{p.stderr}")

    def annexsync(cwd: Path, *args: str) -> None:
        run(cwd, sys.executable, "-m", "annexsync", *args)

    first = base / "c0"
    first.mkdir(parents=True)
    run(first, "git", "init", "-q", "-b", "main")
    annexsync(first, "init", "c0")
    (first / "seed.txt").write_text("seed\n")
    annexsync(first, "sync", "-q")
    clones = [first]
    for i in range(1, n):
        run(base, "git", "clone", "-q", str(first), f"c{i}")
        annexsync(base / f"c{i}", "init", f"c{i}")
        clones.append(base / f"c{i}")
    for i, c in enumerate(clones):
        if i > 0:
            run(c, "git", "remote", "remove", "origin")
        for j, other in enumerate(clones):
            if i != j and not (chain and abs(i - j) != 1):
                run(c, "git", "remote", "add", f"c{j}", str(other))
    return clones
