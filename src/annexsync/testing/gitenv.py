"""A hermetic git environment for tests and benchmarks.

Nothing in it depends on the user's git configuration: HOME points at a scratch
directory, global and system config are off, identity and dates are pinned.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

PINNED_DATE = "1700000000 +0000"


def hermetic_env(home: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return an environment for running git / git-annex / annexsync hermetically.

    ``home`` becomes HOME; a ``.gitconfig`` is *not* read (GIT_CONFIG_GLOBAL is a
    file inside ``home`` that only sets ``gc.autoDetach=false``) and system config is
    disabled.
    """
    env = dict(os.environ if base is None else base)
    for name in list(env):
        if name.startswith(("GIT_", "ANNEXSYNC_")):
            del env[name]
    home.mkdir(parents=True, exist_ok=True)
    gitconfig = home / "gitconfig-empty"
    # Nothing of the user's; only git's automatic gc runs in the foreground, so a
    # test that triggers it never has a background gc racing its cleanup.
    gitconfig.write_text("[gc]\n\tautoDetach = false\n")
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test Author",
        GIT_AUTHOR_EMAIL="author@example.com",
        GIT_COMMITTER_NAME="Test Committer",
        GIT_COMMITTER_EMAIL="committer@example.com",
        GIT_AUTHOR_DATE=PINNED_DATE,
        GIT_COMMITTER_DATE=PINNED_DATE,
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C.UTF-8",
        TZ="UTC",
    )
    return env


def git_annex_binary() -> str | None:
    """Path of the real git-annex (the PyPI wheel's, next to this Python, first)."""
    import sys

    beside = Path(sys.executable).parent / "git-annex"
    if beside.exists():
        return str(beside)
    return shutil.which("git-annex")
