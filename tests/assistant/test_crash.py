"""kill -9 of an assistant at any moment, then a restart: nothing is lost, fsck agrees."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from annexsync.testing.daemons import Daemon, wait_for
from conftest import make_clones, sh


@pytest.mark.interop
def test_kill9_at_random_moments_loses_nothing(tmp_path: Path, git_annex: str) -> None:
    a, b = make_clones(tmp_path, 2)
    rng = random.Random(1234)
    written: dict[str, bytes] = {}
    db = Daemon(b).start()
    try:
        for round_ in range(4):
            da = Daemon(a).start()
            # write a batch of files, and kill the daemon somewhere in the middle of it
            n = rng.randint(20, 60)
            kill_at = rng.randint(0, n)
            for i in range(n):
                name = f"r{round_}/f{i}.bin"
                (a / name).parent.mkdir(exist_ok=True)
                data = os.urandom(rng.randint(1, 5000))
                (a / name).write_bytes(data)
                written[name] = data
                if i == kill_at:
                    da.kill9()
            da.kill9()
        da = Daemon(a).start()
        try:
            def settled() -> bool:
                files = set(sh(a, "git", "ls-files").split())
                return (set(written) <= files and sh(a, "git", "status", "--porcelain") == "")
            wait_for(settled, 60, what="a to commit everything after the crashes")
            for name, data in written.items():
                assert (a / name).read_bytes() == data, name
            wait_for(lambda: all((b / n).exists() and (b / n).read_bytes() == d
                                 for n, d in written.items()), 90, what="b to get everything")
        finally:
            da.stop()
    finally:
        db.stop()
    fsck = subprocess.run([git_annex, "fsck", "--json"], cwd=a, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout[-2000:] + fsck.stderr[-2000:]
    recs = [json.loads(x) for x in fsck.stdout.splitlines()]
    assert recs and all(r["success"] for r in recs)
