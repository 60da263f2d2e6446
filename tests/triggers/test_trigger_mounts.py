"""Drives: mounts noticed at once in a private mount namespace (``unshare -m``).

The daemon runs inside its own mount namespace; the test plugs and unplugs the
"drive" (a tmpfs holding a clone) inside that namespace with ``nsenter``. Nothing is
mounted outside it, and the namespace (with its tmpfs) goes away with the daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from triggerkit import (
    NsDaemon,
    annexsync,
    git,
    log_lines,
    make_clones,
    need_unshare,
    nsenter,
    sh,
    wait_for,
)

BUSY_LOOP_PROBE = textwrap.dedent("""
    import json, subprocess, sys, threading, time
    from annexsync.assistant.mountwatcher import MountWatcher

    class Hub:
        def emit(self, *args, **kwargs):
            pass

    seen = []

    class Probe(MountWatcher):
        def changed(self, added, removed, old, new):
            seen.append(([m.mount_point for m in added], [m.mount_point for m in removed]))

    def until(cond):
        deadline = time.monotonic() + 10
        while not cond() and time.monotonic() < deadline:
            time.sleep(0.01)

    mw = Probe(Hub(), None, udisks=False)
    stop = threading.Event()
    t = threading.Thread(target=mw.run, args=(stop,))
    t.start()
    until(lambda: mw.table)
    d = sys.argv[1]
    t0 = time.monotonic()
    subprocess.run(["mount", "-t", "tmpfs", "annexsync-probe", d], check=True)
    until(lambda: len(seen) >= 1)
    latency = time.monotonic() - t0
    time.sleep(0.3)  # a quiet window: a busy loop would wake thousands of times here
    w1 = mw.wakeups
    subprocess.run(["umount", d], check=True)
    until(lambda: len(seen) >= 2)
    time.sleep(0.3)
    w2 = mw.wakeups
    stop.set()
    mw.wake()
    t.join(5)
    print(json.dumps({"seen": seen, "w1": w1, "w2": w2, "latency": latency}))
""")


def test_mountinfo_epoll_wakes_once_per_change_no_busy_loop(tmp_path: Path) -> None:
    need_unshare()
    d = tmp_path / "m"
    d.mkdir()
    p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                        BUSY_LOOP_PROBE, str(d)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["seen"] == [[[str(d)], []], [[], [str(d)]]]
    assert r["w1"] == 1 and r["w2"] == 2, r  # one wake-up per change, none spurious
    assert r["latency"] < 1.0


def holders(under: Path) -> list[str]:
    """Processes with a working directory or an open file below ``under``."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            links += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(ln.startswith(str(under)) for ln in links):
            out.append(f"{pid}: {cmd[:200]}")
    return out


def unplug(pid: int, media: Path) -> None:
    """Unmount the drive as a user would: if it is busy (a git process is working on
    it at that moment), try again; it must not stay busy."""
    def umount() -> bool:
        p = subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", str(media)],
                           capture_output=True, text=True)
        return p.returncode == 0

    try:
        wait_for(umount, 10, interval=0.1, what="the drive to be unmountable")
    except TimeoutError:
        raise AssertionError(f"the drive stays busy: {holders(media)}") from None


def object_path(repo: Path, name: str) -> str:
    """Where ``name``'s content lives in a clone shaped like ``repo`` (same hash dirs)."""
    return sh(repo, "readlink", name).strip()


def test_drive_mounted_synced_unmounted_nothing_lost_remounted(tmp_path: Path) -> None:
    need_unshare()
    a, src = make_clones(tmp_path / "src", 2)
    stage, media = tmp_path / "stage", tmp_path / "media"
    stage.mkdir()
    media.mkdir()
    drive = media / "c1"  # the clone, once the drive is mounted
    # The drive's clone has a change of its own; it knows no remotes (no daemon there).
    for r in git(src, "remote").split():
        git(src, "remote", "remove", r)
    (src / "from-drive.bin").write_bytes(b"made on the drive\n" * 100)
    annexsync(src, "sync", "-q")
    # Here: the remote lives on the (not yet mounted) drive; its uuid is cached.
    git(a, "config", "remote.c1.url", str(drive))
    git(a, "config", "remote.c1.annex-uuid", git(src, "config", "annex.uuid"))
    (a / "from-a.bin").write_bytes(b"made here\n" * 100)
    p = annexsync(a, "sync", "-q", check=False)  # commits; c1 is not there, and says so
    assert p.returncode == 1 and "not mounted?" in p.stderr, p.stderr
    d = NsDaemon(a, ["unshare", "-m", "--propagation", "private"]).start()
    try:
        pid = d.pid
        wait_for(lambda: log_lines(d, "mountwatcher: watching"), 10, what="mountwatcher")

        def drive_ref(ref: str) -> str:
            return nsenter(pid, f"git -C '{drive}' rev-parse -q --verify '{ref}' || true"
                           ).strip()

        def drive_has(obj: str) -> bool:
            return nsenter(pid, f"test -f '{drive / obj}' && echo yes || true").strip() == "yes"

        def in_sync() -> bool:
            head = git(a, "rev-parse", "HEAD")
            return (drive_ref("refs/heads/synced/main") == head
                    and (a / "from-drive.bin").exists()
                    and drive_has(object_path(a, "from-a.bin")))

        # Plug the drive in: a tmpfs filled with the clone, bind-mounted in one step.
        t0 = time.monotonic()
        nsenter(pid, f"mount -t tmpfs -o size=64m annexsync-test '{stage}' && "
                     f"cp -a '{src}' '{stage}/c1' && mount --bind '{stage}' '{media}'")
        wait_for(in_sync, 15, what="git state and content to reach the mounted drive")
        took = time.monotonic() - t0
        assert (a / "from-drive.bin").read_bytes() == b"made on the drive\n" * 100
        assert took < 8, f"the drive was synced {took:.1f} s after it was mounted"
        assert log_lines(d, "mountwatcher: remote-mounted remotes=['c1']")

        # Unplug: the mount point stays, empty. Nothing is taken as deleted.
        before_files = sorted(git(a, "ls-files").split())
        failed_before = len(log_lines(d, "push-failed")) + len(log_lines(d, "fetch-failed"))
        unplug(pid, media)
        wait_for(lambda: log_lines(d, "remote-unavailable remote=c1"), 10,
                 what="the daemon to notice the unmount")
        left = nsenter(pid, f"ls -A '{media}'").strip()
        assert left == "", (left, nsenter(pid, "cat /proc/self/mountinfo"))  # empty mount point
        (a / "while-away.bin").write_bytes(b"written while the drive was away\n")
        wait_for(lambda: "while-away.bin" in git(a, "ls-files"), 15, what="a commit")
        assert sorted(git(a, "ls-files").split()) == sorted([*before_files, "while-away.bin"])
        c1_uuid = git(a, "config", "remote.c1.annex-uuid")

        def where(name: str) -> list[str]:
            out = json.loads(annexsync(a, "whereis", "--json", name).stdout)
            return [w["uuid"] for w in out["whereis"]]

        for name in ("from-a.bin", "from-drive.bin", "seed.txt"):
            assert (a / name).exists(), f"{name} lost here after the unmount"
            # (the transferrer records uploads when its queue drains)
            wait_for(lambda n=name: c1_uuid in where(n), 10, what=f"c1 to keep {name}")
        # no error storm about the missing drive, and no deletion recorded
        failed_after = len(log_lines(d, "push-failed")) + len(log_lines(d, "fetch-failed"))
        # At most the one push that was under way when the drive went away; a storm
        # would be one per commit or per retry.
        assert failed_after - failed_before <= 1, d.log()[-3000:]
        assert "from-drive.bin" in git(a, "ls-tree", "-r", "--name-only", "HEAD")

        # Plug it back: what happened meanwhile reaches it, and it still has everything.
        t0 = time.monotonic()
        nsenter(pid, f"mount --bind '{stage}' '{media}'")
        wait_for(in_sync, 15, what="the drive to catch up after the remount")
        wait_for(lambda: drive_has(object_path(a, "while-away.bin")), 15,
                 what="the new content on the drive")
        assert time.monotonic() - t0 < 8
        assert drive_has(object_path(a, "from-drive.bin"))
        drive_files = nsenter(pid, f"git -C '{drive}' ls-tree -r --name-only synced/main")
        assert set(drive_files.split()) >= {"from-a.bin", "from-drive.bin", "while-away.bin"}
    finally:
        d.stop()
    # the namespace died with the daemon: nothing stays mounted out here
    assert str(media) not in Path("/proc/self/mountinfo").read_text()
