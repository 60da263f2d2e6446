"""A full disk on either side of a transfer, on a real small filesystem.

The receiving clone lives on a 1.5 MiB tmpfs mounted in a private mount namespace;
a 4 MiB file cannot fit. What a user must see: a clear error naming the file, the
transfer recorded as failed, nothing in the store, the partial download kept — and,
once there is room, the same command finishing from where it stopped.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import make_repo
from annexsync.testing.privileges import need_mount_namespace

BIG = "big.bin"
SIZE = 4 << 20


@pytest.fixture
def src(tmp_path: Path) -> Path:
    need_mount_namespace()
    data = bytes(range(256)) * (SIZE // 256)
    return make_repo(tmp_path / "src", "src", {BIG: data, "small.txt": b"fits\n"}).top


def assert_failed_for_space(record: str) -> None:
    rec = json.loads(record)
    assert rec["success"] is False
    assert any("not enough free space" in n for n in rec["error-messages"]), rec


def in_namespace(tmp_path: Path, script: str) -> dict[str, str]:
    """Run ``script`` (bash) in a private mount namespace with ``$D`` on a 1.5 MiB
    tmpfs; lines ``name=value`` it prints come back as a dict."""
    annexsync = f"{sys.executable} -m annexsync"
    full = f"""set -e
D={tmp_path}/small-disk
T={tmp_path}  # outputs go here: the small disk is full
mkdir -p "$D"
mount -t tmpfs -o size=1536k tmpfs "$D"
annexsync() {{ {annexsync} "$@"; }}
{script}
"""
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", full],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)


def test_get_onto_a_full_disk_fails_clearly_keeps_the_partial_file_and_resumes(
        src: Path, tmp_path: Path) -> None:
    out = in_namespace(tmp_path, f"""
git clone -q {src} "$D/dst"
cd "$D/dst"
annexsync init dst >/dev/null
annexsync get small.txt >/dev/null
echo "small1=$(cat small.txt)"
set +e
annexsync get --json {BIG} > $T/get1.json 2> $T/get1.err
echo "status1=$?"
set -e
echo "json1=$(cat $T/get1.json)"
echo "stored1=$(find .git/annex/objects -type f -name '*.bin' | wc -l)"
echo "partial1=$(stat -c %s .git/annex/tmp/*.bin 2>/dev/null || echo 0)"
echo "failed1=$(ls .git/annex/transfer/failed/download/*/ 2>/dev/null | wc -l)"
mount -o remount,size=16m "$D"
annexsync get --json-progress {BIG} > $T/get2.json 2> $T/get2.err
echo "status2=$?"
echo "first_progress2=$(grep -m1 byte-progress $T/get2.json)"
echo "sum2=$(sha256sum < {BIG} | cut -d' ' -f1)"
echo "failed2=$(ls .git/annex/transfer/failed/download/*/ 2>/dev/null | wc -l)"
echo "tmp2=$(ls .git/annex/tmp | wc -l)"
""")
    assert out["status1"] == "1"
    assert_failed_for_space(out["json1"])
    assert out["small1"] == "fits"  # (room enough for a small file)
    assert out["stored1"] == "0"  # nothing half-written in the store
    assert 0 < int(out["partial1"]) < SIZE  # kept for the resume
    assert out["failed1"] == "1"  # recorded as failed, as git-annex does
    assert out["status2"] == "0"
    first = json.loads(out["first_progress2"])
    assert int(first["byte-progress"]) >= int(out["partial1"])  # resumed, not restarted
    data = bytes(range(256)) * (SIZE // 256)
    import hashlib

    assert out["sum2"] == hashlib.sha256(data).hexdigest()
    assert out["failed2"] == "0" and out["tmp2"] == "0"


def test_copy_to_a_remote_on_a_full_disk_fails_clearly_and_stores_nothing_there(
        src: Path, tmp_path: Path) -> None:
    out = in_namespace(tmp_path, f"""
git clone -q {src} "$D/dst"
(cd "$D/dst" && annexsync init dst >/dev/null)
cd {src}
git remote add small "$D/dst"
set +e
annexsync copy --json --to small {BIG} > $T/copy.json 2> $T/copy.err
echo "status=$?"
set -e
echo "json=$(cat $T/copy.json)"
echo "stored=$(find "$D/dst/.git/annex/objects" -type f 2>/dev/null | wc -l)"
echo "failed=$(ls .git/annex/transfer/failed/upload/*/ 2>/dev/null | wc -l)"
echo "whereis=$(annexsync whereis {BIG} | grep -c small || true)"
""")
    assert out["status"] == "1"
    assert_failed_for_space(out["json"])
    assert out["stored"] == "0"
    assert out["failed"] == "1"
    assert out["whereis"] == "0"  # not recorded as being there
