"""The watcher with real inotify: nothing is lost in a burst into a new directory."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from annexsync.assistant.watcher import Note, Watcher


def wait_until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_burst_into_fresh_directories_is_seen_completely(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    notes: list[Note] = []
    lock = threading.Lock()

    def on_note(n: Note) -> None:
        with lock:
            notes.append(n)

    w = Watcher(str(tmp_path), on_note)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        assert w.ready.wait(10)
        expected = set()
        for d in range(5):
            sub = tmp_path / f"new{d}" / "deeper"
            sub.mkdir(parents=True)
            for i in range(40):
                (sub / f"f{i}").write_bytes(b"x")
                expected.add(f"new{d}/deeper/f{i}")
        (tmp_path / ".git" / "ignored").write_text("x")

        def seen() -> set[str]:
            with lock:
                return {n.path for n in notes}

        assert wait_until(lambda: expected <= seen()), expected - seen()
        assert not any(p.startswith(".git") for p in seen())
        (tmp_path / "new0" / "deeper" / "f0").unlink()
        assert wait_until(lambda: any(n.path == "new0/deeper/f0" and not n.maybe_open
                                      for n in notes[-5:]))
    finally:
        w.stop()
        t.join(5)
        w.close()
