"""sync --content: content follows preferred content to every clone."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import run_cli


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(list(args), cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


annexsync = run_cli


@pytest.fixture
def ab(tmp_path: Path) -> tuple[Path, Path]:
    a = tmp_path / "a"
    a.mkdir()
    sh(a, "git", "init", "-q", "-b", "main")
    annexsync(a, "init", "A")
    sh(tmp_path, "git", "clone", "-q", str(a), "b")
    b = tmp_path / "b"
    annexsync(b, "init", "B")
    sh(a, "git", "remote", "add", "b", str(b))
    return a, b


def test_content_reaches_the_other_clone(ab: tuple[Path, Path]) -> None:
    a, b = ab
    (a / "photo.jpg").write_bytes(b"\xff\xd8 jpeg bytes")
    (a / "notes.txt").write_text("notes\n")
    code, _, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    code, _, err = annexsync(b, "sync", "--content")
    assert code == 0, err
    assert (b / "photo.jpg").read_bytes() == b"\xff\xd8 jpeg bytes"
    assert (b / "notes.txt").read_text() == "notes\n"
    code, out, _ = annexsync(a, "whereis", "--json", "photo.jpg")
    assert {w["description"] for w in json.loads(out)["whereis"]} == {"A", "B"}


def test_content_flows_from_the_clone_that_has_it(ab: tuple[Path, Path]) -> None:
    a, b = ab
    (b / "fromb.bin").write_bytes(b"b's data")
    sh(b, "git", "remote", "add", "a", str(a))
    assert annexsync(b, "sync")[0] == 0  # git only: a learns of the file, not the content
    code, _, err = annexsync(a, "sync", "--content")
    assert code == 0, err
    assert (a / "fromb.bin").read_bytes() == b"b's data"
