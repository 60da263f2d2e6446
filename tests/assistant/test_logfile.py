"""daemon.log rotation: bounded size, git-annex's file names, nothing lost on the way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from annexsync.assistant.logfile import RotatingLog


def lines_in(d: Path) -> list[str]:
    out: list[str] = []
    for p in sorted(d.glob("daemon.log*"), key=lambda p: -int(p.suffix[1:] or 0)
                    if p.suffix[1:].isdigit() else 0):
        out += p.read_text().splitlines()
    return out


def test_rotates_past_the_limit_and_keeps_the_newest_logs(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "daemon.log", max_bytes=1000, keep=3)
    for i in range(400):
        log.write(f"line {i:04d} {'x' * 40}\n")
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["daemon.log", "daemon.log.1", "daemon.log.2", "daemon.log.3"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 1000 + 60  # one line may cross the limit
    # the newest lines, in order, none lost between the files that are kept
    ordered = (tmp_path / "daemon.log.3").read_text().splitlines() + \
        (tmp_path / "daemon.log.2").read_text().splitlines() + \
        (tmp_path / "daemon.log.1").read_text().splitlines() + \
        (tmp_path / "daemon.log").read_text().splitlines()
    numbers = [int(line.split()[1]) for line in ordered]
    assert numbers == list(range(numbers[0], 400))
    assert numbers[0] > 0  # the oldest file was dropped


def test_a_big_log_from_an_earlier_run_is_rotated_at_start(tmp_path: Path) -> None:
    (tmp_path / "daemon.log").write_text("old\n" * 500)
    log = RotatingLog(tmp_path / "daemon.log", max_bytes=1000)
    log.write("new\n")
    log.close()
    assert (tmp_path / "daemon.log").read_text() == "new\n"
    assert (tmp_path / "daemon.log.1").read_text() == "old\n" * 500


def test_concurrent_writers_lose_no_line(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "daemon.log", max_bytes=2000, keep=1000)

    def writer(t: int) -> None:
        for i in range(300):
            log.write(f"t{t} {i}\n", flush=i % 7 == 0)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    log.close()
    got = lines_in(tmp_path)
    assert sorted(got) == sorted(f"t{t} {i}" for t in range(4) for i in range(300))


def test_stdout_and_stderr_of_a_background_daemon_follow_the_rotation(
        tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from annexsync.assistant.logfile import RotatingLog
        log = RotatingLog(Path({str(path)!r}), max_bytes=200)
        print("before", flush=True)
        for i in range(60):  # ~600 bytes: rotates at least twice
            log.write(f"event {{i}}\\n")
        print("after on stdout", flush=True)
        print("after on stderr", file=sys.stderr, flush=True)
    """)
    with open(path, "ab") as out:  # as `annexsync assistant` starts it
        subprocess.run([sys.executable, "-c", script], stdout=out, stderr=out, check=True)
    current = path.read_text()
    assert "after on stdout" in current and "after on stderr" in current
    assert "before" not in current
    assert any("before" in p.read_text() for p in tmp_path.glob("daemon.log.*"))
