"""git-annex's rsync special remote, through the system ``rsync``.

Theory of operation
-------------------
Layout (checked against git-annex 10.20261026 with ``encryption=none``): the
content of a key is ``<rsyncurl>/<hashdirlower>/<keyfile>/<keyfile>``, mode 0444;
readers also look under the mixed-case hash directory, as git-annex does. The
``rsyncurl`` is a local path, ``[user@]host:path`` (rsync over ssh, through the
repository's cached ssh connection: :class:`annexsync.remotes.ssh.SshConnections`)
or an rsync daemon URL (``rsync://host/module/path``, ``host::module/path``).

Each operation is one rsync run, as git-annex does it:

* store: the verified file is hard-linked (or copied) into a private staging tree
  ``rsynctmp.N/<hashdir>/<keyfile>/<keyfile>`` and that tree is rsynced onto the
  remote with ``--partial --partial-dir=.rsync-partial`` (an interrupted upload
  resumes; the object appears under its name only when complete).
* retrieve: rsync copies the object into a staging file with ``--inplace`` (an
  interrupted download is rsync's basis for the next attempt), then the bytes from
  the requested offset are written to the sink; verification is the transfer
  layer's job.
* remove: rsync ``--delete`` from an empty directory, with filter rules matching
  only that key's directories.
* check_present: an rsync listing of the object: exit 0 is present, 23 absent,
  anything else means the remote cannot tell.

rsync's ``--progress`` output is parsed to call the meter; the meter may raise
(stall, cancel), which stops rsync. A bandwidth limit becomes ``--bwlimit``.
Key file names are used in rsync filter rules and remote paths, so only keys whose
file name is made of characters with no meaning to rsync or a shell are accepted.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from annexsync.annex.keys import Key
from annexsync.remotes.base import (
    KeyNotPresent,
    Meter,
    RemoteError,
    RemoteInfo,
    RemoteUnavailable,
    Sink,
    TransferAborted,
)
from annexsync.remotes.ssh import ConfigLookup, SshConnections, last_line

if TYPE_CHECKING:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.remotes.registry import RemoteSpec

_SAFE_NAME = re.compile(r"[A-Za-z0-9._,%&=+@^~-]+")
_PROGRESS = re.compile(rb"^\s*([0-9][0-9,]*)\s+[0-9]+%")
_NOT_FOUND = 23
_counter = itertools.count()


def parse_rsyncurl(url: str) -> tuple[str | None, int | None, str, bool]:
    """``(ssh destination or None, port, path, is_daemon)`` of an rsyncurl."""
    if url.startswith("rsync://") or "::" in url.split("/", 1)[0]:
        return None, None, url, True
    colon = url.find(":")
    slash = url.find("/")
    if colon > 0 and (slash < 0 or colon < slash):
        dest, path = url[:colon], url[colon + 1 :]
        if dest.startswith("-") or not re.fullmatch(r"(?:[A-Za-z0-9_.+-]+@)?[A-Za-z0-9_.-]+",
                                                    dest):
            raise ValueError(f"rsyncurl {url!r}: bad host")
        return dest, None, path, False
    return None, None, url, False


def bwlimit_bytes(config: ConfigLookup, remote: str | None) -> float | None:
    """``remote.NAME.annex-bwlimit`` or ``annex.bwlimit`` in bytes per second, or None."""
    from annexsync.transfers.ratelimit import parse_bwlimit

    raw = (config.get(f"remote.{remote}.annex-bwlimit") if remote else None) or config.get(
        "annex.bwlimit")
    return parse_bwlimit(raw) if raw else None


class RsyncRemote:
    """An rsync special remote (see the module docstring)."""

    def __init__(self, info: RemoteInfo, rsyncurl: str, *, work_dir: Path,
                 conns: SshConnections | None = None, transport: Sequence[str] | None = None,
                 options: Sequence[str] = (), upload_options: Sequence[str] = (),
                 download_options: Sequence[str] = (), bwlimit: float | None = None,
                 rsync: str = "rsync", own_connections: bool = False) -> None:
        self.info = info
        self.url = rsyncurl.rstrip("/") or "/"
        self.dest, self.port, self.base, self.daemon = parse_rsyncurl(self.url)
        self.work_dir = work_dir
        self.conns = conns
        self.transport = list(transport) if transport else None
        self.options = list(options)
        self.upload_options = list(upload_options)
        self.download_options = list(download_options)
        self.bwlimit = bwlimit
        self.rsync = rsync
        self.own_connections = own_connections
        self._master_ok = False
        self._aborted = False
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._mutex = threading.Lock()

    # -- paths and argv --------------------------------------------------------------
    def _names(self, key: Key) -> list[str]:
        kf = key.key_file
        if not _SAFE_NAME.fullmatch(kf):
            raise RemoteError(f"{self.info.name}: key {kf[:80]!r} has characters rsync "
                              "would interpret; not stored on rsync remotes")
        return [f"{key.hashdir_lower}{kf}/{kf}", f"{key.hashdir_mixed}{kf}/{kf}"]

    def _remote(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    def _base_argv(self) -> list[str]:
        argv = [self.rsync]
        if self.dest is not None:
            is_ssh = not self.transport or os.path.basename(self.transport[0]) == "ssh"
            if self.conns is not None and is_ssh:
                if not self._master_ok:
                    self.conns.ensure_master(self.dest, port=self.port)
                    self._master_ok = True
                rsh = self.conns.rsync_rsh(self.dest, self.port, self.transport)
            else:
                rsh = " ".join(shlex.quote(a) for a in (self.transport or ["ssh"]))
            argv += ["-e", rsh]
        if self.bwlimit:
            argv.append(f"--bwlimit={max(1, math.ceil(self.bwlimit / 1024))}")
        return argv + self.options

    # -- running rsync -----------------------------------------------------------------
    def _run(self, argv: list[str], meter: Meter | None = None,
             cap: int | None = None) -> tuple[int, bytes, bytes]:
        """Run rsync; feed --progress to ``meter`` (at most ``cap`` bytes in total)."""
        self._aborted = False
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise RemoteUnavailable(f"{self.info.name}: cannot run {argv[0]}: {e.strerror}")
        with self._mutex:
            self._procs.add(proc)
        err = bytearray()
        assert proc.stdout is not None and proc.stderr is not None

        def drain() -> None:
            assert proc.stderr is not None
            while chunk := proc.stderr.read(4096):
                del err[: max(0, len(err) + len(chunk) - 65536)]
                err.extend(chunk)

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        out = bytearray()
        reported = 0
        current = 0
        pending = b""
        try:
            while True:
                chunk = proc.stdout.read1(65536)
                if not chunk:
                    break
                if len(out) < 65536:
                    out.extend(chunk[: 65536 - len(out)])
                if meter is None:
                    continue
                pending += chunk
                parts = re.split(rb"[\r\n]", pending)
                pending = parts.pop()
                for part in parts:
                    m = _PROGRESS.match(part)
                    if m:
                        current = int(m.group(1).replace(b",", b""))
                        if cap is not None:
                            current = min(current, cap)
                        if current > reported:
                            meter(current - reported)
                            reported = current
            rc = proc.wait()
            if rc < 0 and self._aborted:
                raise TransferAborted("transfer aborted")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            t.join(timeout=5)
            proc.stdout.close()
            proc.stderr.close()
            with self._mutex:
                self._procs.discard(proc)
        return rc, bytes(out), bytes(err)

    def _unavailable(self, what: str, rc: int, err: bytes) -> RemoteError:
        msg = f"{self.info.name}: {what}: {last_line(err)} (rsync exit {rc})"
        if rc in (5, 10, 12, 30, 35, 255):  # connection-level failures
            self._master_ok = False
            return RemoteUnavailable(msg)
        return RemoteError(msg)

    # -- the Remote seam ------------------------------------------------------------------
    def available(self) -> bool:
        try:
            self._check_base()  # over ssh: one listing on the cached connection
        except RemoteUnavailable:
            return False
        return True

    def _check_base(self) -> None:
        """RemoteUnavailable unless the remote's top directory exists: an unmounted
        drive is not an empty remote, and rsync would create the directory on store."""
        if self.daemon:
            return
        if self.dest is None:
            if not os.path.isdir(self.base):
                raise RemoteUnavailable(f"{self.info.name}: {self.base} is not there "
                                        "(not mounted?)")
            return
        rc, out, err = self._run([*self._base_argv(), "--dirs", self.url])
        if rc != 0 or not out.startswith(b"d"):
            raise RemoteUnavailable(f"{self.info.name}: {self.url} is not reachable: "
                                    f"{last_line(err)} (rsync exit {rc})")

    def check_present(self, key: Key) -> bool:
        names = self._names(key)
        if self.dest is None:
            self._check_base()
        for rel in names:
            rc, out, err = self._run([*self._base_argv(), self._remote(rel)])
            if rc == 0:
                if any(line.startswith(b"-") for line in out.splitlines()):
                    return True
                continue
            if rc != _NOT_FOUND:
                raise RemoteUnavailable(f"{self.info.name}: cannot check {key}: "
                                        f"{last_line(err)} (rsync exit {rc})")
        if self.dest is not None:
            self._check_base()
        return False

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Path]:
        d = self.work_dir / f"rsynctmp.{os.getpid()}.{next(_counter)}"
        d.mkdir(parents=True)
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def store(self, key: Key, src: Path, meter: Meter) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        rel = self._names(key)[0]
        self._check_base()
        with self._staging() as stage:
            target = stage / rel
            target.parent.mkdir(parents=True)
            try:
                os.link(src, target)
            except OSError as e:
                if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                shutil.copyfile(src, target)
            os.chmod(target, 0o444)
            size = os.stat(target).st_size
            argv = [*self._base_argv(), *self.upload_options, "--outbuf=N", "--progress",
                    "--recursive", "--partial", "--partial-dir=.rsync-partial",
                    f"{stage}/", self.url]
            rc, _, err = self._run(argv, meter, cap=size)
        if rc != 0:
            raise self._unavailable(f"storing {key} failed", rc, err)

    def retrieve(self, key: Key, sink: Sink, offset: int, meter: Meter) -> None:
        staging_dir = self.work_dir / "rsync-download"
        staging_dir.mkdir(parents=True, exist_ok=True)
        staging = staging_dir / key.key_file
        cap = None if key.size is None else max(0, key.size - offset)
        last: tuple[int, bytes] = (0, b"")
        found = False
        for rel in self._names(key):
            argv = [*self._base_argv(), *self.download_options, "--outbuf=N", "--progress",
                    "--inplace", self._remote(rel), str(staging)]
            rc, _, err = self._run(argv, meter, cap=cap)
            if rc == 0:
                found = True
                break
            last = (rc, err)
            if rc != _NOT_FOUND:
                raise self._unavailable(f"retrieving {key} failed (partial data kept)", rc, err)
        if not found:
            with contextlib.suppress(OSError):
                if staging.stat().st_size == 0:
                    staging.unlink()
            self._check_base()
            raise KeyNotPresent(f"{self.info.name} does not have {key} ({last_line(last[1])})")
        try:
            with open(staging, "rb") as f:
                f.seek(offset)
                while chunk := f.read(1 << 20):
                    sink.write(chunk)
        finally:
            with contextlib.suppress(OSError):
                staging.unlink()

    def remove(self, key: Key) -> None:
        if self.info.readonly:
            raise RemoteError(f"{self.info.name} is read-only")
        self._check_base()
        filters: list[str] = []
        kf = key.key_file
        for rel in self._names(key):
            d1, d2 = rel.split("/")[:2]
            filters += [f"--include={d1}", f"--include={d1}/{d2}/", f"--include={d1}/{d2}/{kf}/***"]
        with self._staging() as empty:
            argv = [*self._base_argv(), *filters, "--exclude=*", "--quiet", "--delete",
                    "--recursive", "--partial", "--partial-dir=.rsync-partial",
                    f"{empty}/", self.url]
            rc, _, err = self._run(argv)
        if rc != 0:
            raise self._unavailable(f"removing {key} failed", rc, err)

    @contextlib.contextmanager
    def lock_content(self, key: Key) -> Iterator[bool]:
        yield False  # special remotes cannot lock; drop safety uses check_present

    def abort_transfers(self) -> None:
        """Kill running rsyncs (the transfer layer's stall watchdog calls this)."""
        with self._mutex:
            procs = list(self._procs)
            self._aborted = True
        for p in procs:
            with contextlib.suppress(OSError):
                p.kill()

    def close(self) -> None:
        self.abort_transfers()
        if self.own_connections and self.conns is not None:
            if self.dest is not None and self._master_ok:
                self.conns.stop_master(self.dest, self.port)
            self.conns.release()


def rsync_remote(info: RemoteInfo, config: ConfigLookup, annex_dir: Path,
                 conns: SshConnections | None = None,
                 own_connections: bool = False) -> RsyncRemote:
    """An :class:`RsyncRemote` from git-annex's settings.

    ``info.config`` holds the remote.log parameters (``rsyncurl``); ``config`` is the
    git config (lower-cased names): ``remote.NAME.annex-rsyncurl`` (wins, as in
    git-annex), ``annex-rsync-options``, ``annex-rsync-upload-options``,
    ``annex-rsync-download-options``, ``annex-rsync-transport``, and the bandwidth
    limit (``remote.NAME.annex-bwlimit``, ``annex.bwlimit``).
    """
    name = info.name
    url = config.get(f"remote.{name}.annex-rsyncurl") or info.config.get("rsyncurl")
    if not url:
        raise RemoteError(f"{name}: rsync remote without rsyncurl")

    def split(opt: str) -> list[str]:
        raw = config.get(f"remote.{name}.{opt}")
        return shlex.split(raw) if raw else []

    return RsyncRemote(
        info, url, work_dir=annex_dir / "tmp", conns=conns,
        transport=split("annex-rsync-transport") or None,
        options=split("annex-rsync-options"),
        upload_options=split("annex-rsync-upload-options"),
        download_options=split("annex-rsync-download-options"),
        bwlimit=bwlimit_bytes(config, name), own_connections=own_connections,
    )


def configure_rsync(repo: AnnexRepo, name: str, uuid: str,
                    params: dict[str, str]) -> dict[str, str]:
    """``initremote``/``enableremote`` of a ``type=rsync`` remote with git-annex's parameters.

    Checks ``rsyncurl=`` and ``encryption=none``, writes the per-clone git config
    (``remote.NAME.annex-rsyncurl``, ``annex-uuid``, ``skipfetchall``) and returns the
    fields for remote.log (git-annex stores ``rsyncurl`` there too).
    """
    from annexsync.errors import AnnexError
    from annexsync.git.config import set_config

    url = params.get("rsyncurl")
    if not url:
        raise AnnexError("Specify rsyncurl=")
    try:
        parse_rsyncurl(url)
    except ValueError as e:
        raise AnnexError(str(e))
    if params.get("encryption") != "none":
        raise AnnexError("Specify encryption=none (encrypted remotes are not supported)")
    if params.get("chunk") or params.get("chunksize"):
        raise AnnexError("chunked rsync remotes are not supported yet")
    set_config(repo.git, f"remote.{name}.annex-rsyncurl", url)
    set_config(repo.git, f"remote.{name}.annex-uuid", uuid)
    set_config(repo.git, f"remote.{name}.skipfetchall", "true")
    repo.reload_config()
    return {**params, "type": "rsync", "name": name}


def rsync_remote_factory(spec: RemoteSpec, repo: AnnexRepo) -> RsyncRemote:
    """The registry's factory for ``type=rsync`` special remotes."""
    conns = SshConnections.for_repo(repo.git_dir, repo.config, remote=spec.name)
    return rsync_remote(spec.info(kind="rsync"), repo.config, repo.annex_dir, conns,
                        own_connections=True)


def register_remote_kinds() -> None:
    """Registry plugin hook: ``type=rsync`` special remotes."""
    from annexsync.remotes.registry import EXPENSIVE_COST, register_special_type

    register_special_type("rsync", rsync_remote_factory, EXPENSIVE_COST)
