"""Shared output for commands: git-annex style lines, ``--json`` records, progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def json_record(command: str, *, success: bool, file: str | None = None,
                input: list[str] | None = None, key: str | None = None,
                note: str | None = None, errors: list[str] | None = None,
                **extra: Any) -> dict[str, Any]:
    """A ``--json`` record with git-annex's field names."""
    rec: dict[str, Any] = {"command": command}
    if file is not None:
        rec["file"] = file
    rec["input"] = input if input is not None else []
    if key is not None:
        rec["key"] = key
    if note is not None:
        rec["note"] = note
    rec["success"] = success
    rec["error-messages"] = errors or []
    rec.update(extra)
    return rec


def emit_json(rec: Mapping[str, Any], out: TextIO | None = None) -> None:
    import json  # only --json needs it (start-up of every command)

    out = out or sys.stdout
    out.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


def human_size(n: int) -> str:
    """Sizes the way git-annex prints them ("5 bytes", "1.23 MB")."""
    if n < 1000:
        return f"{n} byte{'s' if n != 1 else ''}"
    units = ["kilobytes", "megabytes", "gigabytes", "terabytes", "petabytes"]
    value = float(n)
    for unit in units:
        value /= 1000
        if value < 1000:
            return f"{value:.2f} {unit}".replace(".00 ", " ")
    return f"{value:.2f} exabytes"


class ProgressLine:
    """One self-overwriting progress line on a terminal; silent when not a terminal."""

    def __init__(self, stream: TextIO | None = None, min_interval: float = 0.1) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.min_interval = min_interval
        self._last = 0.0
        self._shown = False

    def update(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        t = time.monotonic()
        if not force and t - self._last < self.min_interval:
            return
        self._last = t
        self.stream.write("\r\x1b[K" + text)
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
