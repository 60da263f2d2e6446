"""Drives: a clone of the daemon's repository that is not a remote yet is found on a
newly mounted drive, added as a remote, and synced with (git state and content).

The daemon runs in its own mount namespace (``unshare -m``). The "drive" is a tmpfs
mounted in that namespace before the daemon starts (so that mounting it is not the
event) and filled with a clone; plugging it in is bind-mounting it where the user
would see it, with ``nsenter``. Nothing is mounted outside the namespace, and the
namespace (with its tmpfs) goes away with the daemon.
"""

from __future__ import annotations

import shutil
import subprocess
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
    wait_for,
)

from annexsync.annex.repo import AnnexRepo
from annexsync.assistant.driverepos import RECEIVE_PACK
from annexsync.assistant.events import EventLog
from annexsync.assistant.hub import Hub, Settings
from annexsync.assistant.mountwatcher import Mount, MountWatcher


def config(repo: Path, name: str) -> str | None:
    p = subprocess.run(["git", "-C", str(repo), "config", "--get", name],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def unplug(pid: int, media: Path) -> None:
    """Unmount the drive; a git process working on it at that moment makes it busy."""
    def umount() -> bool:
        p = subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", str(media)],
                           capture_output=True, text=True)
        return p.returncode == 0

    wait_for(umount, 10, interval=0.1, what="the drive to be unmountable")


def test_clone_on_a_new_drive_is_added_as_remote_and_synced(tmp_path: Path) -> None:
    need_unshare()
    a, src = make_clones(tmp_path / "src", 2)
    stage, media = tmp_path / "stage", tmp_path / "media"
    stage.mkdir()
    media.mkdir()
    drive = media / "c1"  # the clone, once the drive is plugged in
    # Not a remote of the daemon's repository, and knowing none itself; its git-annex
    # branch knows a's UUID (it is a clone). It has a change of its own.
    git(a, "remote", "remove", "c1")
    for r in git(src, "remote").split():
        git(src, "remote", "remove", r)
    (src / "from-drive.bin").write_bytes(b"made on the drive\n" * 100)
    annexsync(src, "sync", "-q")
    c1_uuid = git(src, "config", "annex.uuid")
    # A hostile touch: hooks, fsmonitor and an alternate-refs command that would leave
    # marks if anything ran them.
    marks = tmp_path / "marks"
    marks.mkdir()
    hooks = src / ".git" / "hooks"
    for hook in ("pre-receive", "update", "post-receive", "post-update", "reference-transaction",
                 "pre-auto-gc"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch '{marks}/{hook}'\n")
        (hooks / hook).chmod(0o755)
    git(src, "config", "core.fsmonitor", f"touch '{marks}/fsmonitor'; false")
    git(src, "config", "core.alternateRefsCommand", f"touch '{marks}/alternaterefs'; true")
    (tmp_path / "alt-objects").mkdir()
    (src / ".git" / "objects" / "info" / "alternates").write_text(
        str(tmp_path / "alt-objects") + "\n")
    # Also on the drive: a git-annex repository that is no clone of a, and a plain git one.
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    annexsync(other, "init", "unrelated")
    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q")
    # Here: a change of a's own, committed; a has no remotes at all now.
    (a / "from-a.bin").write_bytes(b"made here\n" * 100)
    annexsync(a, "sync", "-q")
    assert git(a, "remote") == ""
    # Switched off first: plugging the drive in adds nothing.
    git(a, "config", "annexsync.adddriverepos", "false")

    fill = (f"mount -t tmpfs -o size=64m annexsync-drive '{stage}' && "
            f"cp -a '{src}' '{stage}/c1' && mkdir '{stage}/more' && "
            f"cp -a '{other}' '{stage}/more/other' && cp -a '{plain}' '{stage}/plain' && "
            'exec "$0" "$@"')
    d = NsDaemon(a, ["unshare", "-m", "--propagation", "private", "sh", "-c", fill]).start()
    try:
        pid = d.pid
        wait_for(lambda: log_lines(d, "mountwatcher: watching"), 10, what="mountwatcher")

        def drive_ref(ref: str) -> str:
            return nsenter(pid, f"git --git-dir='{drive}/.git' rev-parse -q --verify '{ref}'"
                                " || true").strip()

        def drive_has(obj: str) -> bool:
            return nsenter(pid, f"test -f '{drive / obj}' && echo yes || true").strip() == "yes"

        nsenter(pid, f"mount --bind '{stage}' '{media}'")
        wait_for(lambda: log_lines(d, f"mounts-changed added=['{media}']"), 10,
                 what="the daemon to notice the mount")
        assert git(a, "remote") == ""
        assert not log_lines(d, "repository-found")
        unplug(pid, media)
        wait_for(lambda: log_lines(d, f"removed=['{media}']"), 10, what="the unmount")

        # Switched on (the default): the clone is found, added and synced with.
        git(a, "config", "--unset", "annexsync.adddriverepos")
        a_obj = (a / "from-a.bin").readlink().as_posix()  # relative: the same in c1

        def in_sync() -> bool:
            return (drive_ref("refs/heads/synced/main") == git(a, "rev-parse", "HEAD")
                    and (a / "from-drive.bin").exists()
                    and drive_has(a_obj))

        t0 = time.monotonic()
        nsenter(pid, f"mount --bind '{stage}' '{media}'")
        wait_for(lambda: log_lines(d, "mountwatcher: repository-found"), 10,
                 what="the clone on the drive to be found")
        wait_for(in_sync, 15, what="git state and content to reach the found clone")
        took = time.monotonic() - t0
        assert took < 8, f"the drive was synced {took:.1f} s after it was mounted"

        found = log_lines(d, "mountwatcher: repository-found")
        assert len(found) == 1, found
        assert found[0].endswith(f"repository-found remote=c1 path={drive} uuid={c1_uuid}")
        assert git(a, "remote") == "c1"  # not the unrelated or the plain repository
        assert config(a, "remote.c1.url") == str(drive)
        assert config(a, "remote.c1.annex-uuid") == c1_uuid
        assert (a / "from-drive.bin").read_bytes() == b"made on the drive\n" * 100
        assert set(nsenter(pid, f"git --git-dir='{drive}/.git' ls-tree -r --name-only "
                                "synced/main").split()) >= {"from-a.bin", "from-drive.bin"}
        assert log_lines(d, "remote-mounted remotes=['c1']")
        assert sorted(p.name for p in marks.iterdir()) == []  # nothing of the drive's ran

        # Plugged in again: it is the configured remote c1 now, nothing new is added.
        unplug(pid, media)
        wait_for(lambda: len(log_lines(d, f"removed=['{media}']")) == 2, 10,
                 what="the second unmount")
        nsenter(pid, f"mount --bind '{stage}' '{media}'")
        wait_for(lambda: len(log_lines(d, "remote-mounted remotes=['c1']")) == 2, 10,
                 what="c1 to be synced with after the remount")
        assert git(a, "remote") == "c1"
        assert len(log_lines(d, "repository-found")) == 1
    finally:
        d.stop()
    # the namespace died with the daemon: nothing stays mounted out here
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(media) not in mounts and str(stage) not in mounts


def test_discover_adds_clones_under_free_names_and_never_clobbers(tmp_path: Path) -> None:
    """The look itself, in process (no namespace needed): a directory stands for the
    new mount."""
    a, c1, c2 = make_clones(tmp_path / "src", 3)
    git(a, "remote", "remove", "c1")
    git(a, "remote", "remove", "c2")
    git(a, "remote", "add", "c2", "/nonexistent/c2")  # c2's description is taken
    drive = tmp_path / "drive"
    (drive / "sub").mkdir(parents=True)
    shutil.copytree(c1, drive / "c1", symlinks=True)
    shutil.copytree(c2, drive / "sub" / "c2", symlinks=True)
    shutil.copytree(c1, drive / "sub" / "copy-of-c1", symlinks=True)  # the same UUID
    c1_uuid, c2_uuid = git(c1, "config", "annex.uuid"), git(c2, "config", "annex.uuid")
    events = EventLog()
    repo = AnnexRepo.find(a)
    mw = MountWatcher(Hub(repo, events, Settings()), None, udisks=False)  # type: ignore[arg-type]
    mount = Mount(9999, 1, "0:99", "/", str(drive), "rw", "tmpfs", "test")
    try:
        assert mw.discover([mount]) == ["c1", f"drive-{c2_uuid[:8]}"]
        found = [e.data for e in events.since(0) if e.kind == "repository-found"]
        assert found == [
            {"remote": "c1", "path": str(drive / "c1"), "uuid": c1_uuid},
            {"remote": f"drive-{c2_uuid[:8]}", "path": str(drive / "sub" / "c2"),
             "uuid": c2_uuid}]
        [skipped] = [e.data for e in events.since(0) if e.kind == "repository-skipped"]
        assert skipped["path"] == str(drive / "sub" / "copy-of-c1")
        assert config(a, "remote.c2.url") == "/nonexistent/c2"  # untouched
        assert config(a, "remote.c1.url") == str(drive / "c1")
        assert config(a, "remote.c1.annex-uuid") == c1_uuid
        assert config(a, "remote.c1.receivepack") == RECEIVE_PACK
        # what was added can be fetched from (git runs our upload-pack command there)
        git(a, "fetch", "-q", "c1")
        assert git(a, "rev-parse", "refs/remotes/c1/git-annex")
        # looking again adds nothing
        assert mw.discover([mount]) == []
        assert sorted(git(a, "remote").split()) == ["c1", "c2", f"drive-{c2_uuid[:8]}"]
    finally:
        repo.close()
