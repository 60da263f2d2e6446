"""Contract-suite builders for the ssh git remote and the rsync special remote.

Builders get no fixtures, so the ssh ones use the process-wide sshd
(:func:`annexsync.testing.sshd.shared_sshd`) that the ``sshd`` fixture also uses,
and skip the test when it cannot start.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from contract import Harness, _hide, _load

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.location import now
from annexsync.annex.logs import format_remote_config, set_uuid_value
from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.rsync import configure_rsync
from annexsync.testing.annexrepos import clone, git
from annexsync.testing.sshd import SshdUnavailable, SshServer, shared_sshd


def _server() -> SshServer:
    try:
        return shared_sshd()
    except SshdUnavailable as e:
        pytest.skip(f"no sshd for ssh tests: {e}")


def _build_ssh(shell: str) -> Callable[[Path, AnnexRepo], Harness]:
    def build(tmp_path: Path, ours: AnnexRepo) -> Harness:
        sshd = _server()
        path = tmp_path / "remote-over-ssh"
        theirs = clone(ours.top, path, "clone over ssh")
        git(ours.top, "remote", "add", "r", sshd.url(path))
        git(ours.top, "config", "remote.r.annex-uuid", theirs.uuid)
        git(ours.top, "config", "remote.r.annex-ssh-options", f"-F {sshd.config_file}")
        git(ours.top, "config", "remote.r.annex-shell", shell)
        return Harness(_load(ours), *_hide(path))

    return build


def _build_rsync(over_ssh: bool) -> Callable[[Path, AnnexRepo], Harness]:
    def build(tmp_path: Path, ours: AnnexRepo) -> Harness:
        store = tmp_path / "rsync-store"
        store.mkdir()
        url = str(store)
        if over_ssh:
            sshd = _server()
            url = f"{sshd.alias}:{store}"
            git(ours.top, "config", "remote.r.annex-ssh-options", f"-F {sshd.config_file}")
        u = str(uuid.uuid4())
        fields = configure_rsync(ours, "r", u, {"type": "rsync", "rsyncurl": url,
                                               "encryption": "none"})
        branch = AnnexBranch(ours)
        ts = now()
        value = format_remote_config(fields)
        branch.change("remote.log", lambda old: set_uuid_value(old, u, value, ts))
        branch.commit()
        return Harness(_load(ours), *_hide(store))

    return build


BUILDERS: dict[str, Callable[[Path, AnnexRepo], Harness]] = {
    "ssh": _build_ssh("annexsync-shell"),
    "ssh-git-annex-shell": _build_ssh("git-annex-shell"),
    "rsync": _build_rsync(over_ssh=False),
    "rsync-ssh": _build_rsync(over_ssh=True),
}
