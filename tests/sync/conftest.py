"""Fixtures for the sync tests (copied from tests/remotes/conftest.py: a real sshd)."""

from __future__ import annotations

import pytest

from annexsync.testing.sshd import SshdUnavailable, SshServer, shared_sshd


@pytest.fixture(scope="session")
def sshd() -> SshServer:
    """The session's sshd on 127.0.0.1 (skipped, with the reason, if it cannot start)."""
    try:
        return shared_sshd()
    except SshdUnavailable as e:
        pytest.skip(f"no sshd for ssh tests: {e} (scripts/test.sh installs openssh-server)")
