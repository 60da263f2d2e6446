"""Networks: rtnetlink events in private network namespaces.

Addresses are taken from 198.18.0.0/15 (RFC 2544, reserved for benchmarking tests),
only on interfaces inside namespaces made here, with no route anywhere else; every
namespace (and so every interface in it) is deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from triggerkit import (
    NsDaemon,
    git,
    log_lines,
    make_clones,
    need_netns,
    need_root,
    wait_for,
)

from annexsync.testing.sshd import session_environment

NETWATCHER_PROBE = textwrap.dedent("""
    import json, subprocess, sys, threading, time
    from annexsync.annex.repo import AnnexRepo
    from annexsync.assistant.events import EventLog
    from annexsync.assistant.hub import Hub, Settings
    from annexsync.assistant.netwatcher import NetWatcher

    class Resyncer:
        def __init__(self):
            self.requests = []

        def request(self, remotes, reason, **kw):
            self.requests.append([sorted(remotes), reason])

    def ip(*args):
        subprocess.run(["ip", *args], check=True)

    repo = AnnexRepo.find(sys.argv[1])
    events = EventLog()
    rs = Resyncer()
    nw = NetWatcher(Hub(repo, events, Settings()), rs)
    stop = threading.Event()
    t = threading.Thread(target=nw.run, args=(stop,))
    t.start()
    # No IPv6: its duplicate address detection ends about a second after the link
    # comes up and adds a late "up" whose timing depends on the machine's load.
    for conf in ("all", "default"):
        try:
            with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
                f.write("1")
        except OSError:  # a kernel without IPv6
            pass
    events.wait_for(lambda e: e.kind == "watching", 10)
    ip("link", "set", "lo", "up")  # loopback: ignored
    ip("link", "add", "asp0", "type", "veth", "peer", "name", "asp1")
    ip("link", "set", "asp1", "up")
    ip("addr", "add", "198.18.255.1/30", "dev", "asp0")
    t0 = time.monotonic()
    ip("link", "set", "asp0", "up")  # a burst: link, carrier, addresses, routes
    events.wait_for(lambda e: e.kind == "network-up", 10)
    latency = time.monotonic() - t0
    time.sleep(0.6)  # a quiet window: the burst must have made exactly one resync
    first = list(rs.requests)
    ip("link", "set", "asp0", "down")
    down = events.wait_for(lambda e: e.kind == "network-down", 10) is not None
    after_down = len(rs.requests)
    ip("link", "set", "asp0", "up")
    events.wait_for(lambda e: e.kind == "network-up" and e.id > 0 and len(rs.requests) > 1, 10)
    stop.set()
    nw.wake()
    t.join(5)
    print(json.dumps({"first": first, "latency": latency, "down": down,
                      "after_down": after_down, "all": rs.requests}))
""")


def test_netwatcher_link_up_burst_makes_one_resync_of_network_remotes(tmp_path: Path) -> None:
    need_root()
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("unshare (util-linux) or ip (iproute2) not installed")
    probe = subprocess.run(["unshare", "-n", "ip", "link", "add", "x", "type", "veth", "peer",
                            "name", "y"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot make a network namespace with a veth pair: {probe.stderr}")
    a, _ = make_clones(tmp_path, 2)
    git(a, "remote", "add", "net", "git://198.18.255.2/repo")
    p = subprocess.run(["unshare", "-n", sys.executable, "-c", NETWATCHER_PROBE, str(a)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["first"] == [[["net"], "network-up"]]  # not c1 (local), once for the burst
    assert r["latency"] < 1.5
    assert r["down"] and r["after_down"] == 1  # going down asks for nothing
    assert r["all"] == [[["net"], "network-up"]] * 2


# -- two hosts joined by a veth pair, an ssh remote between them ---------------------------------

class Hosts:
    """Namespaces A (the daemon) and B (sshd holding the remote), linked by veth."""

    def __init__(self, base: Path) -> None:
        n = os.getpid() % 250 + 1
        self.a, self.b = f"asA{os.getpid()}", f"asB{os.getpid()}"
        self.va, self.vb = f"asva{os.getpid() % 100000}", f"asvb{os.getpid() % 100000}"
        self.addr_a, self.addr_b = f"198.18.{n}.1", f"198.18.{n}.2"
        self.base = base
        self.sshd: subprocess.Popen[bytes] | None = None

    def ip(self, *args: str) -> None:
        p = subprocess.run(["ip", *args], capture_output=True, text=True)
        if p.returncode:
            raise AssertionError(f"ip {' '.join(args)}: {p.stderr}")

    def create(self) -> None:
        self.ip("netns", "add", self.a)
        self.ip("netns", "add", self.b)
        self.ip("link", "add", self.va, "netns", self.a, "type", "veth", "peer", "name",
                self.vb, "netns", self.b)
        for ns, dev, addr in ((self.a, self.va, self.addr_a), (self.b, self.vb, self.addr_b)):
            self.ip("-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            self.ip("-n", ns, "link", "set", "lo", "up")
            self.ip("-n", ns, "link", "set", dev, "up")

    def link(self, up: bool) -> None:
        self.ip("-n", self.a, "link", "set", self.va, "up" if up else "down")

    def start_sshd(self) -> Path:
        """sshd in B; returns the client config (host alias ``hostb``)."""
        d = self.base / "ssh"
        d.mkdir()
        for key in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                           check=True, capture_output=True)
        (d / "authorized_keys").write_text((d / "client.pub").read_text())
        env = session_environment(d)
        setenv = " ".join(f'"{k}={v}"' for k, v in env.items())
        (d / "sshd_config").write_text(
            f"Port 2222\nListenAddress {self.addr_b}\nHostKey {d / 'host'}\n"
            f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            "UsePAM no\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "UseDNS no\nMaxStartups 100\nLogLevel VERBOSE\n"
            f"SetEnv {setenv}\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.sshd = subprocess.Popen(
            ["ip", "netns", "exec", self.b, "/usr/sbin/sshd", "-D", "-f", str(d / "sshd_config"),
             "-E", str(d / "sshd.log")], stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg = d / "ssh_config"
        cfg.write_text(
            f"Host hostb\n  HostName {self.addr_b}\n  Port 2222\n  User root\n"
            f"  IdentityFile {d / 'client'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking no\n"
            "  BatchMode yes\n  ConnectTimeout 3\n  LogLevel ERROR\n"
            # A connection that was open when the link went down hangs until TCP gives
            # up (minutes) unless keep-alives notice it: a push in flight then would hold
            # the pusher. (What annexsync's own ssh options should include too.)
            "  ServerAliveInterval 1\n  ServerAliveCountMax 3\n")
        wait_for(lambda: "Server listening" in _read(d / "sshd.log"), 10, what="sshd")
        return cfg

    def destroy(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(10)
        for ns in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except FileNotFoundError:
        return ""


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    need_netns()
    if not os.access("/usr/sbin/sshd", os.X_OK) or shutil.which("ssh") is None:
        pytest.skip("OpenSSH (server and client) not installed")
    h = Hosts(tmp_path)
    try:
        h.create()
        yield h
    finally:
        h.destroy()


def test_link_down_and_up_clones_catch_up_within_seconds(tmp_path: Path, hosts: Hosts) -> None:
    cfg = hosts.start_sshd()
    a, b = make_clones(tmp_path, 2)
    for r in git(b, "remote").split():
        git(b, "remote", "remove", r)  # B is passive: no daemon, no remotes
    git(a, "config", "remote.c1.url", f"ssh://hostb{b}")
    git(a, "config", "remote.c1.annex-ssh-options", f"-F {cfg}")
    env = {**os.environ, "GIT_SSH_COMMAND": f"ssh -F {cfg}"}
    probe = subprocess.run(["ip", "netns", "exec", hosts.a, "ssh", "-F", str(cfg), "hostb",
                            "git", "--version"], capture_output=True, text=True, timeout=30)
    if probe.returncode:
        pytest.skip(f"ssh from one namespace to the other does not work here: {probe.stderr}")
    d = NsDaemon(a, ["ip", "netns", "exec", hosts.a], env=env).start()
    try:
        wait_for(lambda: log_lines(d, "netwatcher: watching"), 10, what="the netwatcher")

        def pushed() -> bool:
            there = subprocess.run(["git", "-C", str(b), "rev-parse", "-q", "--verify",
                                    "refs/heads/synced/main"], capture_output=True, text=True)
            return there.stdout.strip() == git(a, "rev-parse", "HEAD")

        (a / "before.txt").write_text("over ssh\n")
        wait_for(lambda: "before.txt" in git(a, "ls-files") and pushed(), 30,
                 what="the first push over ssh")

        hosts.link(False)
        wait_for(lambda: log_lines(d, "netwatcher: network-down"), 10, what="network-down")
        (a / "while-down.txt").write_text("committed while the link was down\n")
        wait_for(lambda: log_lines(d, "push-failed remote=c1"), 20, what="a failed push")
        (b / "from-b.txt").write_text("committed on B while the link was down\n")
        git(b, "add", "from-b.txt")
        git(b, "commit", "-q", "-m", "on B")

        t0 = time.monotonic()
        hosts.link(True)
        wait_for(lambda: "from-b.txt" in git(a, "ls-files") and pushed(), 20,
                 what="the clones to catch up after the link came back")
        took = time.monotonic() - t0
        assert took < 5, f"caught up {took:.1f} s after the link came back"
        assert "while-down.txt" in git(b, "ls-tree", "-r", "--name-only", "synced/main")
        assert log_lines(d, "netwatcher: network-up remotes=['c1']")
        failed = log_lines(d, "push-failed remote=c1")
        assert len(failed) <= 4, failed  # once per back-off step, not per commit
    finally:
        d.stop()
