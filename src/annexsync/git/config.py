"""git configuration: read once with ``git config -z --list``, written with ``git config``."""

from __future__ import annotations

from collections.abc import Iterator

from annexsync.git.runner import Git

_TRUE = {"true", "yes", "on", "1", ""}
_FALSE = {"false", "no", "off", "0"}


class GitConfig:
    """A snapshot of a repository's git config (multi-valued, keys case-folded like git)."""

    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    @classmethod
    def read(cls, git: Git) -> GitConfig:
        proc = git.run_status("config", "-z", "--list")
        values: dict[str, list[str]] = {}
        for rec in proc.stdout.split(b"\0"):
            if not rec:
                continue
            text = rec.decode("utf-8", "surrogateescape")
            name, _, value = text.partition("\n")
            values.setdefault(_normalize(name), []).append(value)
        return cls(values)

    def get(self, name: str, default: str | None = None) -> str | None:
        vals = self._values.get(_normalize(name))
        return vals[-1] if vals else default

    def get_all(self, name: str) -> list[str]:
        return list(self._values.get(_normalize(name), []))

    def get_bool(self, name: str, default: bool = False) -> bool:
        v = self.get(name)
        if v is None:
            return default
        v = v.lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        return default

    def get_int(self, name: str, default: int) -> int:
        """An integer as git reads it (``10k``, ``1m``, ``2g``: binary multiples);
        ``default`` when unset or not a number."""
        v = self.get(name)
        if v is None:
            return default
        v = v.strip()
        scale = _INT_SUFFIXES.get(v[-1:].lower(), 1)
        if scale != 1:
            v = v[:-1]
        try:
            return int(v) * scale
        except ValueError:
            return default

    def names(self) -> Iterator[str]:
        return iter(self._values)

    def remotes(self) -> list[str]:
        """Names of configured remotes, in config order."""
        seen: dict[str, None] = {}
        for name in self._values:
            if name.startswith("remote.") and name.count(".") >= 2:
                seen.setdefault(name[len("remote."):name.rfind(".")], None)
        return list(seen)


_INT_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def _normalize(name: str) -> str:
    # section and key are case-insensitive, a subsection (the middle) is not
    first, dot, rest = name.partition(".")
    if not dot:
        return name.lower()
    middle, dot2, last = rest.rpartition(".")
    if not dot2:
        return first.lower() + "." + rest.lower()
    return first.lower() + "." + middle + "." + last.lower()


def set_config(git: Git, name: str, value: str, *, file: str | None = None) -> None:
    """``git config NAME VALUE`` (in the repository's config, or ``file``)."""
    args = ["config"]
    if file:
        args += ["--file", file]
    git.run(*args, name, value)


def unset_config(git: Git, name: str) -> None:
    git.run_status("config", "--unset-all", name)
