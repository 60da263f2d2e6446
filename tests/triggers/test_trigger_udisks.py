"""The optional UDisks2 trigger, against a private D-Bus daemon (no system bus needed).

Skipped when jeepney (an optional extra, not a dependency) or dbus-daemon is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from triggerkit import wait_for

from annexsync.assistant.events import EventLog
from annexsync.assistant.mountwatcher import MountWatcher


class _Hub:
    def __init__(self) -> None:
        self.events = EventLog()

    def emit(self, service: str, kind: str, /, **data: object) -> None:
        self.events.emit(service, kind, **data)


def test_udisks_signal_makes_the_mount_table_be_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jeepney = pytest.importorskip("jeepney", reason="jeepney (optional) is not installed")
    from jeepney.io.blocking import open_dbus_connection

    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed")
    bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address"],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert bus.stdout is not None
        address = bus.stdout.readline().strip()
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        hub = _Hub()
        mw = MountWatcher(hub, None, udisks=True)  # type: ignore[arg-type]
        stop = threading.Event()
        t = threading.Thread(target=mw.run, args=(stop,), daemon=True)
        t.start()
        try:
            assert hub.events.wait_for(lambda e: e.kind == "udisks-listening", 10), \
                [e.kind for e in hub.events.since(0)]
            before = mw.wakeups
            sender = open_dbus_connection(bus="SYSTEM")
            try:
                sig = jeepney.new_signal(
                    jeepney.DBusAddress("/org/freedesktop/UDisks2",
                                        interface="org.freedesktop.DBus.ObjectManager"),
                    "InterfacesAdded", "oa{sa{sv}}",
                    ("/org/freedesktop/UDisks2/block_devices/sdz1", {}))
                sender.send(sig)
                wait_for(lambda: mw.wakeups > before, 10, what="the re-read after the signal")
            finally:
                sender.close()
        finally:
            stop.set()
            mw.wake()
            t.join(5)
    finally:
        bus.terminate()
        bus.wait(5)
    assert os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") == address  # (restored by monkeypatch)
