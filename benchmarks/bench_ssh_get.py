"""Benchmark: get of a 1 GiB file over ssh on loopback against plain rsync over the same ssh.

Run on purpose (not collected by pytest)::

    .venv/bin/python benchmarks/bench_ssh_get.py [--mib 1024] [--runs 3] [--no-git-annex]

A throwaway sshd on 127.0.0.1 (:mod:`annexsync.testing.sshd`) serves a repository
holding one big annexed file. Both contenders use the same cached ssh connection
(one ControlMaster) and write to the same filesystem:

* ``rsync``: ``rsync -e 'ssh -S SOCKET …' host:OBJECT DEST`` (plain, then plus ``sync``
  since annexsync fsyncs what it stores);
* ``annexsync get big.bin`` (the command, in a clone whose ``origin`` is the ssh
  URL), served by ``annexsync-shell p2pstdio``: hashed while received, fsynced,
  renamed into the store, transfer records and location log written;
* for reference, ``git annex get`` over the same sshd (its own ssh master).

Medians of ``--runs`` runs, alternating; the target (issue 4) is annexsync within
1.2x of rsync.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from annexsync.annex.keys import Key
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.remotes.ssh import SshConnections
from annexsync.testing.annexrepos import git, make_repo
from annexsync.testing.gitenv import git_annex_binary, hermetic_env
from annexsync.testing.sshd import SshdUnavailable, SshServer, start_sshd


def make_big_file(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(chunk[:-8] + i.to_bytes(8, "little"))


def drop_local(repo: AnnexRepo, key: Key) -> None:
    store = ObjectStore(repo.annex_dir)
    with store.lock_exclusive(key) as lk:
        store.remove(key, lk)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-git-annex", action="store_true")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="bench-ssh.", dir=os.environ.get("ANNEXSYNC_BENCH_DIR")))
    home = base / "home"
    env = hermetic_env(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # Bytecode cached, as for an installed package (see docs/performance.md).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "annexsync-bench-pycache")
    os.environ.clear()
    os.environ.update(env)
    try:
        sshd = start_sshd(base / "sshd")
    except SshdUnavailable as e:
        sys.exit(f"cannot start sshd: {e}")
    try:
        run(args, base, sshd)
    finally:
        sshd.stop()
        subprocess.run(["chmod", "-R", "u+w", str(base)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: Path, sshd: SshServer) -> None:
    annexsync = str(Path(sys.executable).parent / "annexsync")
    server = make_repo(base / "server", "server")
    big = server.top / "big.bin"
    print(f"making a {args.mib} MiB file...", flush=True)
    make_big_file(big, args.mib)
    subprocess.run([annexsync, "add", "--quiet", "big.bin"], cwd=server.top, check=True)
    git(server.top, "commit", "-q", "-m", "big")
    key = Key.parse(os.path.basename(os.readlink(big)))
    obj = ObjectStore(server.annex_dir).find(key)
    assert obj is not None
    clone_env = {**os.environ, "GIT_SSH_COMMAND": sshd.git_ssh_command()}
    subprocess.run(["git", "clone", "-q", sshd.url(server.top), str(base / "client")],
                   env=clone_env, check=True)
    client = AnnexRepo.find(base / "client")
    subprocess.run([annexsync, "init", "client"], cwd=client.top, check=True,
                   capture_output=True)
    git(client.top, "config", "remote.origin.annex-ssh-options", f"-F {sshd.config_file}")
    git(client.top, "config", "remote.origin.annex-uuid", server.uuid)
    conns = SshConnections(client.annex_dir / "ssh", options=sshd.ssh_options())
    conns.ensure_master(sshd.alias)
    rsync_dest = base / "rsync-dest"
    rsync_dest.mkdir()
    rsh = conns.rsync_rsh(sshd.alias)
    size = obj.stat().st_size

    def t_rsync(with_sync: bool) -> float:
        out = rsync_dest / "big.bin"
        out.unlink(missing_ok=True)
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        subprocess.run(["rsync", "-e", rsh, f"{sshd.alias}:{obj}", str(out)], check=True)
        if with_sync:
            fd = os.open(out, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        dt = time.perf_counter() - t
        assert out.stat().st_size == size
        return dt

    def t_ours() -> float:
        if ObjectStore(client.annex_dir).has(key):
            drop_local(client, key)
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        subprocess.run([annexsync, "get", "--quiet", "big.bin"], cwd=client.top, check=True)
        dt = time.perf_counter() - t
        assert ObjectStore(client.annex_dir).has(key)
        return dt

    rs, rs_sync, ours = [], [], []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", flush=True)
        rs.append(t_rsync(False))
        ours.append(t_ours())
        rs_sync.append(t_rsync(True))
    conns.cleanup()

    ga_time = None
    ga = git_annex_binary()
    if ga and not args.no_git_annex:
        gclone = base / "gaclient"
        genv = {**os.environ, "GIT_SSH_COMMAND": sshd.git_ssh_command()}
        subprocess.run(["git", "clone", "-q", sshd.url(server.top), str(gclone)], env=genv,
                       check=True, capture_output=True)
        git(gclone, "config", "remote.origin.annex-ssh-options", f"-F {sshd.config_file}")
        git(gclone, "config", "remote.origin.annex-shell", "git-annex-shell")
        subprocess.run([ga, "init", "-q", "ga"], cwd=gclone, env=genv, check=True)
        subprocess.run(["sync"], check=True)
        t = time.perf_counter()
        subprocess.run([ga, "get", "-q", "big.bin"], cwd=gclone, env=genv, check=True)
        ga_time = time.perf_counter() - t

    med = statistics.median
    mib = size / (1 << 20)
    print(f"\nget of {mib:.0f} MiB over ssh on 127.0.0.1 (median of {args.runs}):")
    print(f"  rsync over the same ssh         {med(rs):7.2f} s  {mib / med(rs):7.1f} MiB/s")
    print(f"  rsync + fsync                   {med(rs_sync):7.2f} s")
    print(f"  annexsync get (verified)        {med(ours):7.2f} s  {mib / med(ours):7.1f} MiB/s")
    if ga_time is not None:
        print(f"  git annex get (1 run)           {ga_time:7.2f} s")
    print(f"\n  ratio annexsync / rsync         {med(ours) / med(rs):.2f}x  (target <= 1.2x)")
    print(f"  ratio annexsync / rsync+fsync   {med(ours) / med(rs_sync):.2f}x")
    if ga_time is not None:
        print(f"  ratio git-annex / rsync         {ga_time / med(rs):.2f}x")


if __name__ == "__main__":
    main()
