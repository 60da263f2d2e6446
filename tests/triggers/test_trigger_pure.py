"""Pure parts of the triggers: mountinfo parsing and diffing, rtnetlink parsing,
debouncing, failure-log throttling, and local-remote availability."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from annexsync.assistant.mountwatcher import (
    Mount,
    containing_mount,
    diff_mounts,
    parse_mountinfo,
    remotes_on,
    unescape,
)
from annexsync.assistant.netwatcher import (
    IFF_LOOPBACK,
    IFF_LOWER_UP,
    IFF_RUNNING,
    IFF_UP,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    Debouncer,
    NetChange,
    parse_netlink,
)
from annexsync.assistant.resync import FailureLog
from annexsync.remotes.gitlocal import unavailable_reason

TABLE = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 22 0:30 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
60 22 0:40 / /media/usb\\040drive rw,relatime shared:30 - vfat /dev/sdb1 rw,uid=1000
61 60 0:41 / /media/usb\\040drive/inner rw - tmpfs none rw
"""


def test_parse_mountinfo_fields_and_escapes() -> None:
    ms = parse_mountinfo(TABLE.encode())
    assert [m.mount_point for m in ms] == ["/", "/proc", "/media/usb drive",
                                           "/media/usb drive/inner"]
    usb = ms[2]
    assert (usb.mount_id, usb.parent_id, usb.device, usb.root) == (60, 22, "0:40", "/")
    assert (usb.fstype, usb.source) == ("vfat", "/dev/sdb1")
    assert ms[3].fstype == "tmpfs" and ms[3].options == "rw"  # no optional fields


def test_parse_mountinfo_skips_garbage_and_reads_the_real_table() -> None:
    assert parse_mountinfo("garbage\n\n1 2 3\n") == []
    real = parse_mountinfo(Path("/proc/self/mountinfo").read_bytes())
    assert any(m.mount_point == "/" for m in real)


def test_unescape() -> None:
    assert unescape(r"a\040b\011c\012d\134e") == "a b\tc\nd\\e"
    assert unescape("plain") == "plain"
    assert unescape("\\09x") == "\\09x"  # not octal: left alone
    assert unescape("end\\04") == "end\\04"


def test_diff_mounts_added_removed_moved_and_remounted() -> None:
    old = parse_mountinfo(TABLE)
    new_text = TABLE.replace("61 60 0:41 / /media/usb\\040drive/inner rw - tmpfs none rw\n", "")
    new_text = new_text.replace("relatime shared:30 - vfat", "noatime shared:30 - vfat")
    new_text += "70 22 0:50 / /mnt/backup rw - ext4 /dev/sdc1 rw\n"
    new_text = new_text.replace(" /proc ", " /proc2 ")  # a moved mount: gone and new
    added, removed = diff_mounts(old, parse_mountinfo(new_text))
    assert sorted(m.mount_point for m in added) == ["/mnt/backup", "/proc2"]
    assert sorted(m.mount_point for m in removed) == ["/media/usb drive/inner", "/proc"]
    assert diff_mounts(old, old) == ([], [])


def test_containing_mount_is_the_deepest_and_topmost() -> None:
    ms = parse_mountinfo(TABLE)
    assert containing_mount("/media/usb drive/repo", ms).mount_id == 60  # type: ignore[union-attr]
    assert containing_mount("/media/usb drive/inner/r", ms).mount_id == 61  # type: ignore[union-attr]
    assert containing_mount("/media/usb drivex", ms).mount_id == 22  # type: ignore[union-attr]
    assert containing_mount("/media/usb drive", ms).mount_id == 60  # type: ignore[union-attr]
    stacked = [*ms, Mount(99, 22, "0:99", "/", "/media/usb drive", "rw", "tmpfs", "x")]
    assert containing_mount("/media/usb drive/r", stacked).mount_id == 99  # type: ignore[union-attr]


def test_remotes_on_new_and_gone_mounts() -> None:
    old = parse_mountinfo(TABLE)
    new = [*old, Mount(70, 22, "0:50", "/", "/mnt/backup", "rw", "ext4", "/dev/sdc1")]
    added, _ = diff_mounts(old, new)
    paths = {"backup": "/mnt/backup/annex", "usb": "/media/usb drive/annex",
             "home": "/home/me/annex", "bare": "/mnt/backup"}
    assert sorted(remotes_on(added, new, paths)) == ["backup", "bare"]
    _, removed = diff_mounts(new, old)
    assert sorted(remotes_on(removed, new, paths)) == ["backup", "bare"]
    assert remotes_on([], new, paths) == []


def _nlmsg(typ: int, payload: bytes) -> bytes:
    body = struct.pack("=IHHII", 16 + len(payload), typ, 0, 0, 0) + payload
    return body + b"\0" * ((-len(body)) % 4)


def _link(typ: int, index: int, flags: int) -> bytes:
    return _nlmsg(typ, struct.pack("=BxHiII", 0, 1, index, flags, 0xFFFFFFFF))


def _addr(typ: int, index: int) -> bytes:
    return _nlmsg(typ, struct.pack("=BBBBI", 2, 24, 0, 0, index))


def _route(typ: int, oif: int) -> bytes:
    rtmsg = struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, 2, 253, 1, 0)
    attrs = struct.pack("=HH", 8, 15, ) + struct.pack("=I", 254)  # RTA_TABLE
    attrs += struct.pack("=HHi", 8, 4, oif)  # RTA_OIF
    return _nlmsg(typ, rtmsg + attrs)


def test_parse_netlink_link_addr_route() -> None:
    running = IFF_UP | IFF_RUNNING | IFF_LOWER_UP
    data = (_link(RTM_NEWLINK, 3, running) + _link(RTM_NEWLINK, 3, IFF_UP)
            + _link(RTM_DELLINK, 4, 0) + _addr(RTM_NEWADDR, 3) + _addr(RTM_DELADDR, 3)
            + _route(RTM_NEWROUTE, 3) + _link(RTM_NEWLINK, 1, running | IFF_LOOPBACK)
            + _addr(RTM_NEWADDR, 1))
    assert parse_netlink(data) == [
        NetChange("link", True, 3), NetChange("link", False, 3), NetChange("link", False, 4),
        NetChange("addr", True, 3), NetChange("addr", False, 3), NetChange("route", True, 3),
        NetChange("link", True, 1, loopback=True), NetChange("addr", True, 1, loopback=True)]


def test_parse_netlink_truncated_and_unknown() -> None:
    good = _addr(RTM_NEWADDR, 2)
    assert parse_netlink(good[:-3]) == []
    assert parse_netlink(b"") == []
    assert parse_netlink(_nlmsg(99, b"xxxx") + good) == [NetChange("addr", True, 2)]
    bad_len = struct.pack("=IHHII", 4, RTM_NEWADDR, 0, 0, 0)
    assert parse_netlink(bad_len + good) == []


def test_debouncer_waits_for_calm_but_not_forever() -> None:
    d = Debouncer(quiet=0.2, max_hold=2.0)
    assert d.wait(0.0) is None and not d.due(0.0)
    d.note(10.0)
    assert not d.due(10.1) and abs(d.wait(10.1) - 0.1) < 1e-9  # type: ignore[operator]
    d.note(10.15)
    assert not d.due(10.3) and d.due(10.36)
    d.reset()
    t = 20.0
    while t < 22.5:  # a steady stream of changes every 0.1 s
        d.note(t)
        if d.due(t + 0.05):
            break
        t += 0.1
    assert 21.9 <= t + 0.05 <= 22.1


def test_failure_log_once_per_backoff_step() -> None:
    f = FailureLog()
    logged = [n for i in range(100) if (n := f.failed("r", "unreachable")) is not None]
    assert logged == [1, 2, 4, 8, 16, 32, 64]
    assert f.failed("r", "other error") == 101  # a new error is always worth a line
    assert f.succeeded("r") == 101
    assert f.succeeded("r") == 0
    assert f.failed("r", "unreachable") == 1


def test_unavailable_reason(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    assert "not accessible" in (unavailable_reason(repo, "u1") or "")
    repo.mkdir()
    assert "not a git repository" in (unavailable_reason(repo, "u1") or "")  # empty mount
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert unavailable_reason(repo, "") is None
    assert "different repository" in (unavailable_reason(repo, "u1") or "")
    subprocess.run(["git", "-C", str(repo), "config", "annex.uuid", "u1"], check=True)
    assert unavailable_reason(repo, "u1") is None
    subprocess.run(["git", "-C", str(repo), "config", "annex.uuid", "u2"], check=True)
    assert "uuid u2" in (unavailable_reason(repo, "u1") or "")  # the cache saw the change


# -- clones on a new drive: the pure decision, and the bounded look ---------------------------

import os  # noqa: E402
import time  # noqa: E402

from annexsync.assistant import driverepos as dr  # noqa: E402

OURS = "11111111-2222-4333-8444-555555555555"
THEIRS = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
OTHER = "99999999-8888-4777-8666-555555555555"


def _uuid_log(*pairs: tuple[str, str]) -> bytes:
    return b"".join(f"{u} {v} timestamp=1700000000s\n".encode() for u, v in pairs)


def test_valid_uuid_and_remote_names_from_untrusted_descriptions() -> None:
    assert dr.valid_uuid(OURS) and dr.valid_uuid(THEIRS.upper())
    for bad in ("", "web", OURS + "\n", OURS[:-1], "../" + OURS, OURS.replace("-", "")):
        assert not dr.valid_uuid(bad), bad
    assert dr.sanitise_remote_name("root@host:/media/usb/annex") == "root-host-media-usb-annex"
    assert dr.sanitise_remote_name("my drive") == "my-drive"
    assert dr.sanitise_remote_name("../../etc") == "etc"
    assert dr.sanitise_remote_name("a..b") == "a.b"
    assert dr.sanitise_remote_name("-rf") == "rf"
    assert dr.sanitise_remote_name("x" * 300) == "x" * dr.REMOTE_NAME_MAX
    for unusable in ("", " ", "\n\t", "...", "foo.lock", "HEAD", "ñ", "/"):
        assert dr.sanitise_remote_name(unusable) is None, unusable
    assert dr.remote_name_for("Backup disk", THEIRS, ["c1"]) == "Backup-disk"
    # taken (ignoring case), unusable or missing: drive-UUID8, and never an existing name
    assert dr.remote_name_for("c1", THEIRS, ["C1"]) == "drive-aaaaaaaa"
    assert dr.remote_name_for("HEAD", THEIRS, []) == "drive-aaaaaaaa"
    assert dr.remote_name_for(None, THEIRS, ["drive-aaaaaaaa", "drive-aaaaaaaa-2"]) \
        == "drive-aaaaaaaa-3"


def test_plan_drive_remotes_adds_only_unknown_clones_of_this_repository() -> None:
    clone = dr.DriveRepo("/media/usb/annex", THEIRS, _uuid_log((OURS, "laptop"),
                                                                (THEIRS, "usb annex")))
    plan = dr.plan_drive_remotes([clone], OURS, remote_names=["origin"], remote_paths=[],
                                 remote_uuids={})
    assert plan == [dr.DriveDecision("/media/usb/annex", THEIRS, "usb-annex", "", True)]

    def decide(c: dr.DriveRepo, **kw: object) -> dr.DriveDecision:
        args: dict[str, object] = {"remote_names": [], "remote_paths": [], "remote_uuids": {}}
        args.update(kw)
        [d] = dr.plan_drive_remotes([c], OURS, **args)  # type: ignore[arg-type]
        return d

    def skipped(c: dr.DriveRepo, **kw: object) -> str:
        d = decide(c, **kw)
        assert d.name is None, d
        return d.reason

    log = clone.uuid_log
    assert skipped(clone, remote_paths=["/media/usb/annex"]) == "already a remote"
    assert "remote c1" in skipped(clone, remote_uuids={THEIRS: "c1"})  # mounted elsewhere
    assert decide(clone, remote_uuids={THEIRS: "c1"}).clone
    assert skipped(dr.DriveRepo("/m/x", THEIRS, _uuid_log((THEIRS, "x"), (OTHER, "y")))) \
        == "does not know this repository"
    assert skipped(dr.DriveRepo("/m/x", OURS, log)) == "this repository itself"
    assert skipped(dr.DriveRepo("/m/x", "not-a-uuid", log)) == "no valid annex.uuid"
    assert skipped(dr.DriveRepo("/m/x", THEIRS + "\n[core]", log)) == "no valid annex.uuid"
    assert skipped(dr.DriveRepo("m/x", THEIRS, log)) == "unusable path"
    assert skipped(dr.DriveRepo("/m/x\ny", THEIRS, log)) == "unusable path"
    assert skipped(dr.DriveRepo("/m/\udcff", THEIRS, log)) == "unusable path"
    big = log + b"x" * dr.UUID_LOG_MAX
    assert skipped(dr.DriveRepo("/m/x", THEIRS, big)) == "uuid.log too large"
    # a hostile uuid.log: garbage, our UUID only inside another line, NULs, no newline
    for junk in (b"\x00\xff" * 100, f"{THEIRS} {OURS}\n".encode(), f" {OURS} x".encode(),
                 b"\n" * 1000):
        assert skipped(dr.DriveRepo("/m/x", THEIRS, junk)) == "does not know this repository"
    assert decide(dr.DriveRepo("/m/x", THEIRS, OURS.encode())).name == "drive-aaaaaaaa"
    # names: a hostile description is reduced; a taken one falls back, never clobbering
    evil = dr.DriveRepo("/m/x", THEIRS, _uuid_log((OURS, ""), (THEIRS, "origin; rm -rf ~")))
    assert decide(evil).name == "origin-rm--rf"
    assert decide(evil, remote_names=["Origin-RM--rf"]).name == "drive-aaaaaaaa"
    assert decide(dr.DriveRepo("/m/x", THEIRS, _uuid_log((OURS, "")))).name == "drive-aaaaaaaa"
    assert dr.plan_drive_remotes([clone], "", remote_names=[], remote_paths=[],
                                 remote_uuids={})[0].name is None
    # two copies of one clone (same UUID), and two clones with the same description
    twin = dr.DriveRepo("/media/usb/zz-copy", THEIRS, log)
    third = dr.DriveRepo("/media/usb/b", OTHER, _uuid_log((OURS, ""), (OTHER, "usb annex")))
    plan = dr.plan_drive_remotes([twin, third, clone], OURS, remote_names=["usb-annex-x"],
                                 remote_paths=[], remote_uuids={})
    assert [(d.path, d.name) for d in plan] == [
        ("/media/usb/annex", "usb-annex"), ("/media/usb/b", "drive-99999999"),
        ("/media/usb/zz-copy", None)]
    assert plan[2].reason == "the same repository as /media/usb/annex"


def _git(*args: str | Path) -> str:
    p = subprocess.run(["git", *map(str, args)], capture_output=True, text=True, check=True)
    return p.stdout.strip()


def _annex_clone(path: Path, uuid: str, uuid_log: bytes, *, bare: bool = False) -> Path:
    """A git repository with ``annex.uuid`` and a git-annex branch holding ``uuid_log``."""
    _git("init", "-q", *(["--bare"] if bare else []), path)
    gd = path if bare else path / ".git"
    _git("--git-dir", gd, "config", "annex.uuid", uuid)
    blob = subprocess.run(["git", "--git-dir", str(gd), "hash-object", "-w", "--stdin"],
                          input=uuid_log, capture_output=True, check=True).stdout.decode().strip()
    tree = subprocess.run(["git", "--git-dir", str(gd), "mktree"],
                          input=f"100644 blob {blob}\tuuid.log\n".encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    commit = _git("--git-dir", gd, "commit-tree", tree, "-m", "branch")
    _git("--git-dir", gd, "update-ref", "refs/heads/git-annex", commit)
    return gd


def test_find_repositories_is_shallow_bounded_and_follows_no_links(tmp_path: Path) -> None:
    top = tmp_path / "drive"
    top.mkdir()
    _git("init", "-q", top / "a")
    (top / "a" / "sub").mkdir()
    _git("init", "-q", top / "a" / "sub" / "inner")  # inside a repository: not entered
    (top / "x").mkdir()
    _git("init", "-q", "--bare", top / "x" / "b.git")
    (top / "x" / "y").mkdir()
    _git("init", "-q", top / "x" / "y" / "deep")  # three levels down: too deep
    (top / ".hidden").mkdir()
    _git("init", "-q", top / ".hidden" / "h")
    outside = tmp_path / "outside"
    _git("init", "-q", outside)
    (top / "link").symlink_to(outside)  # never followed
    (top / "x" / "gitfile").mkdir()
    (top / "x" / "gitfile" / ".git").write_text(f"gitdir: {outside / '.git'}\n")
    (top / "x" / "lnk").mkdir()
    (top / "x" / "lnk" / ".git").symlink_to(outside / ".git")
    found, truncated = dr.find_repositories(str(top))
    assert not truncated
    assert found == [(str(top / "a"), str(top / "a" / ".git")),
                     (str(top / "x" / "b.git"), str(top / "x" / "b.git"))]
    # the mount point itself may be the repository
    assert dr.find_repositories(str(top / "a")) == ([(str(top / "a"), str(top / "a/.git"))],
                                                    False)
    # a drive with very many directories: the look stops, having read a bounded number
    many = tmp_path / "many"
    many.mkdir()
    for i in range(50):
        (many / f"d{i:02}").mkdir()
    _git("init", "-q", many / "zz")
    found, truncated = dr.find_repositories(str(many), max_entries=20)
    assert truncated and found == []
    assert dr.find_repositories(str(tmp_path / "missing")) == ([], False)
    assert dr.find_repositories(str(top / "link")) == ([], False)


def test_reading_a_drive_repository_runs_nothing_of_it(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    log = _uuid_log((OURS, "laptop"), (THEIRS, "usb"))
    gd = _annex_clone(tmp_path / "r", THEIRS, log)
    _git("--git-dir", gd, "config", "core.fsmonitor", f"touch '{marks}/fsmonitor'; false")
    _git("--git-dir", gd, "config", "include.path", str(tmp_path / "included"))
    (tmp_path / "included").write_text(f"[annex]\n\tuuid = {OTHER}\n")
    hook = gd / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch '{marks}/hook'\n")
    hook.chmod(0o755)
    assert dr.read_annex_uuid(str(gd)) == THEIRS  # includes are not followed
    assert dr.read_uuid_log(str(gd)) == log
    bare = _annex_clone(tmp_path / "b.git", OTHER, b"", bare=True)
    assert dr.read_annex_uuid(str(bare)) == OTHER
    assert dr.read_uuid_log(str(bare)) == b""
    _git("init", "-q", tmp_path / "plain")
    assert dr.read_annex_uuid(str(tmp_path / "plain" / ".git")) is None
    assert dr.read_uuid_log(str(tmp_path / "plain" / ".git")) is None  # no git-annex branch
    assert list(marks.iterdir()) == []
    # a config that is a link, a FIFO (would block a reader) or too big is not read
    cfg = gd / "config"
    cfg.rename(gd / "config.real")
    cfg.symlink_to(gd / "config.real")
    assert dr.read_annex_uuid(str(gd)) is None
    cfg.unlink()
    os.mkfifo(cfg)
    assert dr.read_annex_uuid(str(gd)) is None
    cfg.unlink()
    cfg.write_text(f"[annex]\n\tuuid = {THEIRS}\n" + "#" * dr.CONFIG_MAX)
    assert dr.read_annex_uuid(str(gd)) is None


def test_run_bounded_stops_too_much_or_too_slow_output() -> None:
    assert dr.run_bounded(["printf", "abc"], 3, 5) == b"abc"
    assert dr.run_bounded(["printf", "abcd"], 3, 5) is None
    assert dr.run_bounded(["sh", "-c", "printf x; exit 3"], 10, 5) is None
    assert dr.run_bounded(["yes"], 1 << 16, 5) is None  # endless output: killed
    t0 = time.monotonic()
    assert dr.run_bounded(["sleep", "30"], 10, 0.2) is None  # killed at the time limit
    assert time.monotonic() - t0 < 5
    assert dr.run_bounded(["/nonexistent/program"], 10, 1) is None
