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
