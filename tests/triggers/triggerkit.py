"""Helpers for the trigger tests: clones, daemons in namespaces, privilege checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from annexsync.testing.daemons import Daemon, make_clones, wait_for
from annexsync.testing.privileges import need_mount_namespace, need_root

__all__ = ["Daemon", "NsDaemon", "annexsync", "git", "log_lines", "make_clones",
           "need_netns", "need_root", "need_unshare", "nsenter", "sh", "wait_for"]


def sh(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise AssertionError(f"{args} failed: {p.stdout}{p.stderr}")
    return p.stdout


def git(cwd: Path, *args: str) -> str:
    return sh(cwd, "git", *args).strip()


def annexsync(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", "annexsync", *args], cwd=cwd,
                       capture_output=True, text=True)
    if check and p.returncode:
        raise AssertionError(f"annexsync {args} failed: {p.stdout}{p.stderr}")
    return p


def log_lines(d: Daemon, needle: str) -> list[str]:
    return [ln for ln in d.log().splitlines() if needle in ln]


def need_unshare() -> None:
    """Skip unless a private mount namespace can be made here and entered with nsenter."""
    need_mount_namespace(nsenter=True)


def need_netns() -> None:
    """Skip unless network namespaces and veth pairs can be made here."""
    need_root()
    if shutil.which("ip") is None:
        pytest.skip("ip (iproute2) not installed")
    name = f"annexsync-probe-{os.getpid()}"
    p = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"the kernel forbids network namespaces here: {p.stderr.strip()}")
    try:
        p = subprocess.run(["ip", "-n", name, "link", "add", "pa", "type", "veth", "peer",
                            "name", "pb"], capture_output=True, text=True)
        if p.returncode:
            pytest.skip(f"cannot make veth pairs here: {p.stderr.strip()}")
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


class NsDaemon(Daemon):
    """A foreground assistant started under a command prefix (``unshare``, ``ip netns
    exec``); the prefix must exec the daemon so that ``proc.pid`` is the daemon's."""

    def __init__(self, repo: Path, prefix: list[str], env: dict[str, str] | None = None
                 ) -> None:
        super().__init__(repo, env=env)
        self.prefix = prefix

    def start(self, timeout: float = 20.0) -> NsDaemon:
        try:
            self.status_path.unlink()
        except FileNotFoundError:
            pass
        out = open(self.repo / ".git" / "annex" / "test-daemon.out", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "annexsync", "assistant", "--foreground",
             str(self.repo)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.repo,
            env=self.env or os.environ.copy())
        out.close()
        wait_for(self._started, timeout, what=f"assistant on {self.repo} to start")
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def nsenter(pid: int, script: str) -> str:
    """Run a shell script in the mount namespace of process ``pid`` (a daemon's)."""
    p = subprocess.run(["nsenter", "-t", str(pid), "-m", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise AssertionError(f"in the namespace: {script}: {p.stderr}")
    return p.stdout

