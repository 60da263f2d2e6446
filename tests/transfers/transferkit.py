"""Helpers for the transfer tests (imported, not collected)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from annexsync.annex.keys import Key


@contextmanager
def download_running_elsewhere(annex_dir: Path, remote_uuid: str, key: Key) -> Iterator[None]:
    """Another process holds the transfer lock of downloading ``key`` from
    ``remote_uuid`` into ``annex_dir`` until the block ends."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from annexsync.annex.keys import Key\n"
        "from annexsync.transfers.info import Direction, Transfer, TransferRecord\n"
        f"t = Transfer(Direction.DOWNLOAD, {remote_uuid!r}, Key.parse({str(key)!r}))\n"
        f"r = TransferRecord.begin(Path({str(annex_dir)!r}), t, 'f', 0)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
        "r.finish(True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
