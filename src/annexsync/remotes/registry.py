"""Building :class:`~annexsync.remotes.base.Remote` objects from configuration.

Theory of operation
-------------------
The remotes of a repository are named in git config (``remote.NAME.*``). For each:

* a remote with a ``url`` is a *git remote*. :func:`classify_url` says what kind of
  location the URL is ("local" path, "ssh", or something we cannot use), and the
  factory registered for that kind in :data:`GIT_REMOTE_KINDS` builds it;
* a remote without a URL but with ``annex-uuid`` is a *special remote*: its type is
  ``type=`` in its remote.log entry, and the factory registered in
  :data:`SPECIAL_REMOTE_TYPES` builds it.

Common settings (git-annex's names): ``remote.NAME.annex-uuid`` (for a local git
remote read from the remote's own config and cached here if missing, as git-annex
does), ``annex-cost`` (default per kind: local 100, ssh 200), ``annex-ignore``,
``annex-sync``, ``annex-readonly``. Remotes are returned cheapest first (config
order breaks ties), which is the order content is fetched in.

Adding a kind (the ssh and rsync engineers): in a module listed in
:data:`PLUGIN_MODULES`, define ``register_remote_kinds()`` that calls
:func:`register_git_kind` or :func:`register_special_type` with a factory
``(RemoteSpec, AnnexRepo) -> Remote`` and a default cost. Plugins are imported
lazily, the first time remotes are listed, so they may import this module.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from annexsync.annex.branch import AnnexBranch
from annexsync.annex.logs import current_uuid_values, parse_remote_config, parse_uuid_log
from annexsync.annex.repo import AnnexRepo
from annexsync.errors import AnnexError
from annexsync.git.config import GitConfig, set_config
from annexsync.remotes.base import Remote, RemoteInfo

__all__ = [
    "GIT_REMOTE_KINDS",
    "SPECIAL_REMOTE_TYPES",
    "RemoteKind",
    "RemoteSpec",
    "classify_url",
    "find_remote",
    "load_remotes",
    "local_path_of",
    "register_git_kind",
    "load_plugins",
    "register_special_type",
    "remote_specs",
]

CHEAP_COST = 100
EXPENSIVE_COST = 200


@dataclass
class RemoteSpec:
    """Everything configuration says about one remote (before contacting it)."""

    name: str
    kind: str  # "local", "ssh", ... for git remotes; the type= for special remotes
    url: str | None
    uuid: str
    cost: int
    ignore: bool = False
    sync: bool = True
    readonly: bool = False
    special: bool = False
    remote_config: dict[str, str] = field(default_factory=dict)  # remote.log fields
    git_config: dict[str, str] = field(default_factory=dict)  # remote.NAME.* settings

    def info(self, *, kind: str | None = None, supports_locking: bool = False) -> RemoteInfo:
        """The RemoteInfo a factory puts on its Remote."""
        return RemoteInfo(name=self.name, uuid=self.uuid, kind=kind or self.kind,
                          cost=self.cost, url=self.url, sync=self.sync, ignore=self.ignore,
                          readonly=self.readonly, supports_locking=supports_locking,
                          config=dict(self.remote_config))


RemoteBuilder = Callable[[RemoteSpec, AnnexRepo], Remote]


@dataclass(frozen=True)
class RemoteKind:
    """A factory and the cost a remote of this kind has unless configured."""

    factory: RemoteBuilder
    default_cost: int


#: Git remotes, by :func:`classify_url` result.
GIT_REMOTE_KINDS: dict[str, RemoteKind] = {}
#: Special remotes, by their remote.log ``type=``.
SPECIAL_REMOTE_TYPES: dict[str, RemoteKind] = {}


def register_git_kind(kind: str, factory: RemoteBuilder, default_cost: int) -> None:
    """Make git remotes whose URL classifies as ``kind`` usable."""
    GIT_REMOTE_KINDS[kind] = RemoteKind(factory, default_cost)


def register_special_type(type_: str, factory: RemoteBuilder, default_cost: int) -> None:
    """Make special remotes of ``type=type_`` usable."""
    SPECIAL_REMOTE_TYPES[type_] = RemoteKind(factory, default_cost)


_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_RE = re.compile(r"^(?:[^@/:]+@)?(?:\[[^\]]+\]|[^/:\[\]]+):")


def classify_url(url: str) -> str:
    """"local" (a path or file:// URL), "ssh" (ssh:// or scp-like host:path) or "other"."""
    m = _SCHEME_RE.match(url)
    if m:
        scheme = m.group(1).lower()
        if scheme == "file":
            return "local"
        if scheme in ("ssh", "git+ssh", "ssh+git"):
            return "ssh"
        return "other"
    if url.startswith(("/", "./", "../", "~")) or url in (".", ".."):
        return "local"
    if _SCP_RE.match(url):
        return "ssh"
    return "local"


def local_path_of(url: str, repo_top: Path) -> Path:
    """The directory a local URL names (relative URLs are relative to the repository)."""
    if url.lower().startswith("file://"):
        url = url[len("file://"):]
    p = Path(os.path.expanduser(url))
    return p if p.is_absolute() else (repo_top / p)


#: Modules whose ``register_remote_kinds()`` adds remote kinds (missing ones are skipped).
PLUGIN_MODULES = ["annexsync.remotes.ssh", "annexsync.remotes.rsync"]
_plugins_loaded = False


def load_plugins() -> None:
    """Import :data:`PLUGIN_MODULES` once and let them register their kinds."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    import importlib

    for name in PLUGIN_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        hook = getattr(mod, "register_remote_kinds", None)
        if callable(hook):
            hook()


def remote_specs(repo: AnnexRepo, branch: AnnexBranch | None = None, *,
                 cache_uuids: bool = True) -> list[RemoteSpec]:
    """Every configured remote, cheapest first (not filtered by annex-ignore)."""
    load_plugins()
    cfg = repo.config
    names = cfg.remotes()
    if not names:
        return []
    branch = branch or AnnexBranch(repo)
    remote_log = {u: parse_remote_config(line.value) for u, line in current_uuid_values(
        parse_uuid_log(branch.read("remote.log"))).items()}
    specs: list[tuple[int, int, RemoteSpec]] = []
    for order, name in enumerate(names):
        spec = _spec(repo, cfg, name, remote_log, cache_uuids)
        if spec is not None:
            specs.append((spec.cost, order, spec))
    return [s for _, _, s in sorted(specs, key=lambda t: (t[0], t[1]))]


def _spec(repo: AnnexRepo, cfg: GitConfig, name: str, remote_log: dict[str, dict[str, str]],
          cache_uuids: bool) -> RemoteSpec | None:
    prefix = f"remote.{name}."
    settings = {n[len(prefix):]: v for n in cfg.names() if n.startswith(prefix)
                if (v := cfg.get(n)) is not None}
    url = settings.get("url")
    uuid = settings.get("annex-uuid", "")
    if url is None:
        if not uuid:
            return None
        rc = remote_log.get(uuid, {})
        kind, special = rc.get("type", ""), True
        default = SPECIAL_REMOTE_TYPES.get(kind)
        cost_default = default.default_cost if default else EXPENSIVE_COST
    else:
        kind, special, rc = classify_url(url), False, {}
        if kind == "local" and not uuid and cache_uuids:
            from annexsync.remotes.gitlocal import read_remote_uuid

            try:
                found = read_remote_uuid(local_path_of(url, repo.top))
            except (OSError, AnnexError):
                found = None
            if found:
                uuid = found
                try:
                    set_config(repo.git, f"remote.{name}.annex-uuid", uuid)
                except AnnexError:
                    pass  # only a cache; another thread or process holds config.lock
        default = GIT_REMOTE_KINDS.get(kind)
        cost_default = default.default_cost if default else EXPENSIVE_COST
    try:
        cost = int(float(settings.get("annex-cost", cost_default)))
    except ValueError:
        cost = cost_default
    return RemoteSpec(
        name=name, kind=kind, url=url, uuid=uuid, cost=cost,
        ignore=cfg.get_bool(prefix + "annex-ignore", False),
        sync=cfg.get_bool(prefix + "annex-sync", True),
        readonly=cfg.get_bool(prefix + "annex-readonly", False),
        special=special, remote_config=rc, git_config=settings)


def build_remote(spec: RemoteSpec, repo: AnnexRepo) -> Remote:
    """The Remote object for ``spec``; AnnexError if its kind is not supported."""
    table = SPECIAL_REMOTE_TYPES if spec.special else GIT_REMOTE_KINDS
    kind = table.get(spec.kind)
    if kind is None:
        what = f"type={spec.kind}" if spec.special else f"URL {spec.url}"
        raise AnnexError(f"remote {spec.name}: {what} is not supported")
    return kind.factory(spec, repo)


def load_remotes(repo: AnnexRepo, branch: AnnexBranch | None = None, *,
                 include_ignored: bool = False, skip_unsupported: bool = True) -> list[Remote]:
    """Remote objects for every usable remote, cheapest first.

    Remotes with ``annex-ignore`` are left out unless ``include_ignored``; remotes
    without a UUID (not git-annex repositories, or unreachable before their UUID was
    ever cached) and kinds nobody registered are skipped.
    """
    out: list[Remote] = []
    for spec in remote_specs(repo, branch):
        if spec.kind == "ssh" and not spec.special and not spec.uuid and not spec.ignore:
            spec.uuid = _discover_ssh(repo, spec)
        if (spec.ignore and not include_ignored) or not spec.uuid:
            continue
        try:
            out.append(build_remote(spec, repo))
        except AnnexError:
            if not skip_unsupported:
                raise
    return out


_ssh_tried: set[tuple[str, str]] = set()


def _discover_ssh(repo: AnnexRepo, spec: RemoteSpec) -> str:
    """Ask an ssh remote for its UUID once per process (git-annex does it on first
    contact and caches it in remote.NAME.annex-uuid); "" if it has none or is down."""
    ident = (str(repo.git_dir), spec.name)
    if ident in _ssh_tried or spec.url is None:
        return ""
    _ssh_tried.add(ident)
    from annexsync.remotes.p2p import discover_ssh_uuid

    try:
        return discover_ssh_uuid(repo, spec.name, spec.url) or ""
    except (OSError, AnnexError):
        return ""


def find_remote(remotes: list[Remote], name: str) -> Remote:
    """The remote called ``name`` (or with that UUID); git-annex's error otherwise."""
    for r in remotes:
        if r.info.name == name or r.info.uuid == name:
            return r
    raise AnnexError(f"there is no available git remote named \"{name}\"")


# -- the kinds built here ------------------------------------------------------------------

def _git_local(spec: RemoteSpec, repo: AnnexRepo) -> Remote:
    from annexsync.remotes.gitlocal import GitLocalRemote

    assert spec.url is not None
    return GitLocalRemote(spec.info(kind="git", supports_locking=True),
                          local_path_of(spec.url, repo.top))


def _directory(spec: RemoteSpec, repo: AnnexRepo) -> Remote:
    from annexsync.remotes.directory import DirectoryRemote

    d = spec.git_config.get("annex-directory")
    if not d:
        raise AnnexError(f"remote {spec.name}: remote.{spec.name}.annex-directory is not set "
                         f"(run 'annexsync enableremote {spec.name} directory=PATH')")
    return DirectoryRemote(spec.info(kind="directory"), Path(d))


register_git_kind("local", _git_local, CHEAP_COST)
register_special_type("directory", _directory, CHEAP_COST)
