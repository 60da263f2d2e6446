"""Skips for tests that need root or kernel features (namespaces, mounts).

CI runs the suite as root on Debian 12, where all of them are available; elsewhere
such a test is skipped with the reason rather than failing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, mounts); scripts/test.sh runs it as root in CI")


def need_mount_namespace(*, nsenter: bool = False) -> None:
    """Skip unless a private mount namespace with a tmpfs can be made here
    (and, with ``nsenter``, entered from outside)."""
    need_root()
    tools = ["unshare", "nsenter"] if nsenter else ["unshare"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"{'/'.join(missing)} (util-linux) not installed")
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        "mount -t tmpfs none /mnt && umount /mnt"],
                       capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"the kernel forbids mount namespaces here: {p.stderr.strip()}")
