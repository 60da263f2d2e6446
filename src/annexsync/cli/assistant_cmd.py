"""annexsync assistant: the daemon that keeps a folder and all its clones in sync."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from annexsync.errors import AnnexError

NAME = "assistant"
HELP = "start the daemon that syncs this folder with all its clones automatically"
DESCRIPTION = """\
Start the assistant on DIR (default: the current directory) and return; it runs in
the background until stopped. From then on every change in the folder is committed
within a fraction of a second, pushed to every remote, changes pushed in by other
clones are merged at once, and content moves to where it is wanted (preferred
content; by default every clone wants everything), several transfers at a time.
Content a repository no longer wants (a transfer drive once the clients have it,
a source clone once it sent it) is dropped there, only when numcopies copies are
proven elsewhere, as 'sync --content' and git-annex's assistant do.

If DIR is not a git repository yet it is made one ('git init' and 'annexsync init',
with new files added unlocked: ordinary files, no symlinks). The folder is added to
~/.config/annexsync/autostart.

  --foreground   run in this terminal (logging to .git/annex/daemon.log too)
  --stop         stop the assistant running on DIR
  --autostart    start an assistant for every folder listed in
                 ~/.config/annexsync/autostart (one per line); for login scripts or
                 the systemd user unit shipped as annexsync/data/annexsync.service

Only one assistant (annexsync's or git-annex's) can run on a repository: they take
the same lock on .git/annex/daemon.pid. See 'annexsync status' for what it is doing.
"""


def build_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", metavar="DIR")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--foreground", action="store_true", help="do not go to the background")
    g.add_argument("--stop", action="store_true", help="stop the running assistant")
    g.add_argument("--autostart", action="store_true",
                   help="start assistants for the folders in the autostart file")


def autostart_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"),
                                                             ".config")
    return Path(base) / "annexsync" / "autostart"


def remember(top: Path) -> None:
    f = autostart_file()
    lines = f.read_text().splitlines() if f.exists() else []
    if str(top) not in lines:
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(f, "a") as fh:
            fh.write(f"{top}\n")


def ensure_repository(path: Path, *, watch_only: bool = False) -> object:
    """Open DIR as an annex repository, creating and initialising it if needed."""
    from annexsync.annex.init import init
    from annexsync.annex.repo import AnnexRepo
    from annexsync.errors import NotARepositoryError

    path.mkdir(parents=True, exist_ok=True)
    try:
        repo = AnnexRepo.find(path)
        if repo.top.resolve() != path.resolve() and not (path / ".git").exists():
            raise NotARepositoryError("inside another repository")
    except NotARepositoryError:
        proc = subprocess.run(["git", "init", "-q", str(path)], capture_output=True)
        if proc.returncode != 0:
            raise AnnexError(f"git init {path} failed: {proc.stderr.decode().strip()}"
                             ) from None
        repo = AnnexRepo.find(path)
        subprocess.run(["git", "-C", str(path), "config", "annex.addunlocked", "true"],
                       check=False)
        repo.reload_config()
    if not repo.initialized:
        init(repo)
        repo.reload_config()
    return repo


def _wait_started(repo: object, timeout: float = 15.0) -> int | None:
    from annexsync.assistant.daemon import running_pid

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = running_pid(repo)  # type: ignore[arg-type]
        if pid is not None:
            return pid
        time.sleep(0.05)
    return None


def start_background(path: Path) -> int:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.assistant.daemon import running_pid

    repo = ensure_repository(path)
    assert isinstance(repo, AnnexRepo)
    pid = running_pid(repo)
    if pid is not None:
        print(f"assistant already running on {repo.top} (pid {pid})")
        return 0
    log = open(repo.annex_dir / "daemon.log", "ab")  # noqa: SIM115
    subprocess.Popen([sys.executable, "-m", "annexsync", "assistant", "--foreground",
                      str(repo.top)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                     start_new_session=True, cwd=str(repo.top),
                     env={**os.environ, "ANNEXSYNC_DAEMONIZED": "1"})
    log.close()
    pid = _wait_started(repo)
    if pid is None:
        raise AnnexError(f"the assistant did not start; see {repo.annex_dir / 'daemon.log'}")
    remember(repo.top)
    print(f"assistant started on {repo.top} (pid {pid})")
    return 0


def stop(path: Path) -> int:
    from annexsync.annex.repo import AnnexRepo
    from annexsync.assistant.daemon import running_pid

    repo = AnnexRepo.find(path)
    pid = running_pid(repo)
    if pid is None or pid <= 0:
        print(f"no assistant is running on {repo.top}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if running_pid(repo) is None:
            print(f"assistant stopped on {repo.top}")
            return 0
        time.sleep(0.05)
    raise AnnexError(f"the assistant (pid {pid}) did not stop within 30 s")


def run(args: argparse.Namespace) -> int:
    path = Path(args.dir).absolute()
    if args.stop:
        return stop(path)
    if args.autostart:
        f = autostart_file()
        if not f.exists():
            print(f"nothing to start: {f} does not exist")
            return 0
        status = 0
        for line in f.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                try:
                    start_background(Path(line))
                except AnnexError as e:
                    print(f"annexsync: {line}: {e}", file=sys.stderr)
                    status = 1
        return status
    if not args.foreground:
        return start_background(path)
    from annexsync.annex.repo import AnnexRepo
    from annexsync.assistant.daemon import Assistant

    repo = ensure_repository(path)
    assert isinstance(repo, AnnexRepo)
    Assistant(repo, watch_only=NAME == "watch").run_forever()
    return 0
