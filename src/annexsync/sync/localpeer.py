"""Fetching from and pushing to a clone on this machine without the wire protocol's costs.

Theory of operation
-------------------
A remote whose URL is a local path is a repository we can read directly. ``git fetch``
and ``git push`` still talk to it through upload-pack and receive-pack, and both
check the connectivity of what arrived (``rev-list --objects NEW --not --all``),
which walks every tree of the old tips: for a git-annex branch with 100,000 location
logs that walk costs more than the rest of a sync round together.

*Fetch*: one ``for-each-ref`` in the clone lists its branches; when each of them is
already our ``refs/remotes/NAME/<branch>`` with the same id (and the remote's fetch
refspec is the default), a fetch would change nothing and is not run.

*Push*: the objects sent are exactly the ones ``git push`` sends: ``pack-objects
--revs`` of our new tips minus the clone's current tips (which we have, since our
tracking refs equal them), unpacked in the clone (``unpack-objects``, or
``index-pack`` for big packs, as receive-pack does); then the clone's refs move in one
``update-ref --stdin`` transaction whose old values are the ones we read
(compare-and-swap: if the clone moved meanwhile nothing changes and the caller falls
back to ``git push``). The push rules are ``git push``'s: a non-forced ref only moves
by fast-forward, a checked-out branch of a non-bare clone is never moved. Afterwards
our ``refs/remotes/NAME/*`` follow, as ``git push`` does.

This path is only taken where receive-pack would do nothing more: no receive hooks in
the clone (``pre-receive``, ``update``, ``post-receive``, ``post-update``,
``proc-receive``, ``reference-transaction``) and no ``core.hooksPath``; no
``receive.fsckObjects``/``transfer.fsckObjects``, ``receive.denyNonFastForwards``,
``receive.denyCurrentBranch`` other than the default, ``receive.procReceiveRefs``;
no ``remote.NAME.pushurl``/``receivepack``/``uploadpack``; the same object format.
Anything else, or any failure before the clone's refs moved, means "not done here":
the caller runs ``git push``/``git fetch`` as before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from annexsync.annex.repo import AnnexRepo
from annexsync.git.config import GitConfig
from annexsync.git.runner import Git, bulk_env
from annexsync.remotes.registry import RemoteSpec

NULL = "0" * 40
RECEIVE_HOOKS = ("pre-receive", "update", "post-receive", "post-update", "proc-receive",
                 "reference-transaction")
UNPACK_LIMIT = 100  # receive-pack's default: fewer objects are stored loose


@dataclass
class LocalPeer:
    """A local clone as read at one moment: its git, config, HEAD and branches."""

    git: Git
    config: GitConfig
    head: str | None  # the ref HEAD points to (None: detached or unknown)
    heads: dict[str, str]  # refs/heads/* -> object id

    @property
    def bare(self) -> bool:
        return self.git.bare


ConfigCache = dict[str, tuple[tuple[int, int, int, int], GitConfig]]


def open_peer(repo: AnnexRepo, spec: RemoteSpec,
              config_cache: ConfigCache | None = None) -> LocalPeer | None:
    """The clone behind a local remote, or None when the fast paths must not be used
    (not a plain local clone, not there now, or configured in a way only receive-pack
    honours). ``config_cache`` keeps clones' configs while their files are unchanged."""
    if spec.kind != "local" or not spec.url:
        return None
    cfg = repo.config
    prefix = f"remote.{spec.name}."
    if any(cfg.get(prefix + k) is not None for k in ("pushurl", "receivepack", "uploadpack")):
        return None
    if cfg.get("extensions.objectformat", "sha1") != "sha1":
        return None
    from annexsync.remotes.gitlocal import find_git_dir
    from annexsync.remotes.registry import local_path_of

    found = find_git_dir(local_path_of(spec.url, repo.top))
    if found is None:
        return None
    git = Git(found[0], found[1], env=dict(repo.git.env))
    pcfg = _peer_config(git, config_cache)
    if pcfg is None or not _plain_receiver(git, pcfg):
        return None
    out = git.run_status("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/")
    if out.returncode != 0:
        return None
    heads: dict[str, str] = {}
    for line in out.stdout.decode("utf-8", "surrogateescape").splitlines():
        oid, _, name = line.partition(" ")
        heads[name] = oid
    return LocalPeer(git, pcfg, _symbolic_head(git.git_dir), heads)


def _peer_config(git: Git, cache: ConfigCache | None) -> GitConfig | None:
    path = git.git_dir / "config"
    try:
        st = os.stat(path)
    except OSError:
        return None
    sig = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    hit = cache.get(str(path)) if cache is not None else None
    if hit is not None and hit[0] == sig:
        return hit[1]
    cfg = GitConfig.read(git)
    if not cfg.get("core.repositoryformatversion"):
        return None  # git could not read it (for example a repository of another user)
    if cache is not None:
        cache[str(path)] = (sig, cfg)
    return cfg


def _plain_receiver(git: Git, cfg: GitConfig) -> bool:
    if cfg.get("core.hookspath") is not None or cfg.get("receive.procreceiverefs") is not None:
        return False
    if cfg.get("extensions.objectformat", "sha1") != "sha1":
        return False
    if (cfg.get_bool("receive.fsckobjects", cfg.get_bool("transfer.fsckobjects"))
            or cfg.get_bool("receive.denynonfastforwards")):
        return False
    deny = cfg.get("receive.denycurrentbranch")
    if deny is not None and deny.lower() not in ("refuse", "true", "yes", "on", "1"):
        return False
    hooks = git.git_dir / "hooks"
    return not any(os.access(hooks / h, os.X_OK) for h in RECEIVE_HOOKS)


def _symbolic_head(git_dir: Path) -> str | None:
    try:
        text = (git_dir / "HEAD").read_text()
    except OSError:
        return None
    return text[5:].strip() if text.startswith("ref: ") else None


def tracking_refs(repo: AnnexRepo, remote: str) -> dict[str, str]:
    """Our ``refs/remotes/REMOTE/*`` (without the HEAD symref), by the branch they track."""
    prefix = f"refs/remotes/{remote}/"
    out = repo.git.run("for-each-ref", "--format=%(objectname) %(refname)", prefix)
    refs: dict[str, str] = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        oid, _, name = line.partition(" ")
        if name != prefix + "HEAD":
            refs["refs/heads/" + name[len(prefix):]] = oid
    return refs


def default_fetch_refspec(repo: AnnexRepo, remote: str) -> bool:
    return repo.config.get_all(f"remote.{remote}.fetch") == [
        f"+refs/heads/*:refs/remotes/{remote}/*"]


def nothing_to_fetch(repo: AnnexRepo, remote: str, peer: LocalPeer) -> bool:
    """Would ``git fetch REMOTE`` change nothing? (Every branch of the clone is already
    our tracking ref, with the default refspec.)"""
    if not default_fetch_refspec(repo, remote):
        return False
    ours = tracking_refs(repo, remote)
    return all(ours.get(name) == oid for name, oid in peer.heads.items())


@dataclass(frozen=True)
class RefUpdate:
    ref: str  # in the clone
    new: str
    old: str | None  # None: the ref does not exist yet


class NotDone(Exception):
    """The fast path cannot do this push; ``git push`` must (the reason is the message)."""


def push(repo: AnnexRepo, remote: str, peer: LocalPeer, ours: dict[str, str],
         refspecs: list[tuple[str, str, bool, bool]]) -> list[RefUpdate]:
    """Push ``refspecs`` — (our ref, their ref, forced, required) — to the clone.

    A ref that may not move (not a fast-forward, the clone's checked-out branch) makes
    the whole push :class:`NotDone` when ``required``, and is left alone otherwise
    (git push would reject that one ref). Returns the updates made (possibly none).
    """
    if not default_fetch_refspec(repo, remote):
        raise NotDone("custom fetch refspec")
    tracking = tracking_refs(repo, remote)
    if any(tracking.get(name) != oid for name, oid in peer.heads.items()):
        raise NotDone("our tracking refs are not the clone's refs")
    updates: list[RefUpdate] = []
    need_ff: dict[str, list[tuple[str, RefUpdate, bool]]] = {}
    for src, dst, forced, required in refspecs:
        new = ours.get(src)
        if new is None:
            continue
        old = peer.heads.get(dst)
        if old == new:
            continue
        if not peer.bare and dst == peer.head:
            if required:
                raise NotDone(f"{dst} is checked out in the clone")
            continue
        upd = RefUpdate(dst, new, old)
        if old is None or forced:
            updates.append(upd)
        else:
            # old is a tracking ref here (the refs are equal): ask git about all the
            # refs pushed onto one tip at once.
            need_ff.setdefault(new, []).append(
                (f"refs/remotes/{remote}/{dst.removeprefix('refs/heads/')}", upd, required))
    for new, items in need_ff.items():
        out = repo.git.run("for-each-ref", "--format=%(refname)", f"--merged={new}",
                           *[r for r, _, _ in items])
        merged = set(out.decode("utf-8", "surrogateescape").splitlines())
        for tref, upd, required in items:
            if tref in merged:
                updates.append(upd)
            elif required:
                raise NotDone(f"{upd.ref} is not a fast-forward")
    if not updates:
        return []
    _send_objects(repo.git, peer.git, {u.new for u in updates}, set(peer.heads.values()))
    script = "".join(f"update {u.ref} {u.new} {u.old or NULL}\n" for u in updates)
    proc = peer.git.run_status("update-ref", "-m", "push", "--stdin", input=script.encode())
    if proc.returncode != 0:
        raise NotDone("the clone's refs moved")
    # As git push does: our tracking refs follow (the clone's refs already moved, so a
    # failure here only means the next fetch updates them).
    track = "".join(f"update refs/remotes/{remote}/{u.ref.removeprefix('refs/heads/')} "
                    f"{u.new}\n" for u in updates)
    repo.git.run_status("update-ref", "--stdin", input=track.encode())
    return updates


def _send_objects(ours: Git, theirs: Git, tips: set[str], have: set[str]) -> None:
    """Copy every object reachable from ``tips`` and not from ``have`` into the clone."""
    revs = "".join(f"{t}\n" for t in sorted(tips)) + "".join(f"^{h}\n" for h in sorted(have))
    pack = ours.popen("pack-objects", "--revs", "--stdout", "-q", "--delta-base-offset",
                      env=bulk_env(), stderr=subprocess.PIPE)
    assert pack.stdin is not None and pack.stdout is not None
    try:
        pack.stdin.write(revs.encode())
        pack.stdin.close()
        header = pack.stdout.read(12)
        if len(header) != 12 or header[:4] != b"PACK":
            raise NotDone("pack-objects failed")
        count = int.from_bytes(header[8:12], "big")
        if count == 0:
            pack.stdout.read()
        else:
            # (index-pack has no -q; with it, it refused every big pack, so those
            # pushes fell back to git push.)
            args = (["unpack-objects", "-q"] if count < UNPACK_LIMIT
                    else ["index-pack", "--stdin"])
            sink = theirs.popen(*args, env=bulk_env(), stdout=subprocess.DEVNULL)
            assert sink.stdin is not None
            try:
                sink.stdin.write(header)
                shutil.copyfileobj(pack.stdout, sink.stdin, 1 << 20)
                sink.stdin.close()
            except BrokenPipeError:
                pass
            err = sink.stderr.read() if sink.stderr else b""
            if sink.wait() != 0:
                raise NotDone(f"{args[0]} in the clone failed: {err.decode(errors='replace')}")
    finally:
        if pack.stdin and not pack.stdin.closed:
            pack.stdin.close()
        if pack.stdout:
            pack.stdout.close()
        err = pack.stderr.read() if pack.stderr else b""
        if pack.wait() != 0:
            raise NotDone(f"pack-objects failed: {err.decode(errors='replace')}")
