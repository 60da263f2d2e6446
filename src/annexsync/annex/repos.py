"""What the git-annex branch and git config say about the repositories we know.

Collects uuid.log (descriptions), trust.log, group.log, remote.log and the
``remote.NAME.annex-uuid`` settings into one read-only view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.logs import current_uuid_values, parse_uuid_log
from annexsync.annex.repo import AnnexRepo

WEB_UUID = "00000000-0000-0000-0000-000000000001"
BITTORRENT_UUID = "00000000-0000-0000-0000-000000000002"

TRUST_NAMES = {"1": "trusted", "?": "semitrusted", "0": "untrusted", "X": "dead"}


@dataclass
class RepoMap:
    """Descriptions, trust, groups and remote names of every known repository."""

    here: str
    descriptions: dict[str, str] = field(default_factory=dict)
    trust: dict[str, str] = field(default_factory=dict)
    groups: dict[str, frozenset[str]] = field(default_factory=dict)
    remote_names: dict[str, str] = field(default_factory=dict)
    remote_config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, repo: AnnexRepo, branch: AnnexBranch) -> RepoMap:
        data = branch.read_many(["uuid.log", "trust.log", "group.log", "remote.log"])
        m = cls(here=repo.uuid)
        for u, line in current_uuid_values(parse_uuid_log(data["uuid.log"])).items():
            m.descriptions[u] = line.value
        for u, line in current_uuid_values(parse_uuid_log(data["trust.log"])).items():
            m.trust[u] = TRUST_NAMES.get(line.value.strip(), "semitrusted")
        for u, line in current_uuid_values(parse_uuid_log(data["group.log"])).items():
            m.groups[u] = frozenset(line.value.split())
        for u, line in current_uuid_values(parse_uuid_log(data["remote.log"])).items():
            m.remote_config[u] = line.value
        cfg = repo.config
        for name in cfg.remotes():
            u = cfg.get(f"remote.{name}.annex-uuid")
            if u:
                m.remote_names.setdefault(u, name)
        m.descriptions.setdefault(WEB_UUID, "web")
        m.descriptions.setdefault(BITTORRENT_UUID, "bittorrent")
        return m

    def trust_of(self, uuid: str) -> str:
        return self.trust.get(uuid, "semitrusted")

    def describe(self, uuid: str) -> str:
        """``description [remotename]`` the way git-annex prints a repository."""
        desc = self.descriptions.get(uuid, "")
        if uuid == self.here:
            return f"{desc} [here]".strip() if desc else "[here]"
        name = self.remote_names.get(uuid)
        return f"{desc} [{name}]".strip() if name else desc

    def name_of(self, uuid: str) -> str | None:
        return "here" if uuid == self.here else self.remote_names.get(uuid)

    def resolve(self, name: str) -> str | None:
        """UUID for a remote name, ``here``/``.``, a description, or a UUID."""
        if name in ("here", "."):
            return self.here
        for u, n in self.remote_names.items():
            if n == name:
                return u
        if name in self.descriptions:
            return name
        for u, d in self.descriptions.items():
            if d == name:
                return u
        return None
