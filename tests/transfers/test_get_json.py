"""``get --json`` and ``--json-progress``: what scripts read, with git-annex's fields.

As in git-annex, ``--json-progress`` alone means JSON output (progress objects and
one record per file); every line of stdout is then a JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annexsync.testing.annexrepos import clone, make_repo, run_cli

FILES = {"a.txt": b"alpha\n", "big.bin": b"x" * (3 << 20)}


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    src = make_repo(tmp_path / "src", "src", FILES)
    return clone(src.top, tmp_path / "dst", "dst").top


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]  # every line is JSON


def test_json_records_have_git_annex_fields(dst: Path) -> None:
    code, out, _ = run_cli(dst, "get", "--json")
    assert code == 0
    recs = lines(out)
    assert sorted(r["file"] for r in recs) == ["a.txt", "big.bin"]
    for r in recs:
        assert {"command", "file", "input", "key", "note", "success",
                "error-messages"} <= set(r)
        assert r["command"] == "get" and r["success"] is True
        assert r["note"] == "from origin..."
        assert r["error-messages"] == []


def test_json_progress_alone_means_json_with_progress_objects(dst: Path) -> None:
    code, out, _ = run_cli(dst, "get", "--json-progress", "big.bin")
    assert code == 0
    recs = lines(out)
    progress = [r for r in recs if "byte-progress" in r]
    final = [r for r in recs if "success" in r]
    assert progress and len(final) == 1
    assert final[0]["file"] == "big.bin" and final[0]["success"] is True
    last = progress[-1]
    assert last["byte-progress"] == last["total-size"] == len(FILES["big.bin"])
    action = last["action"]
    assert isinstance(action, dict)
    assert action["command"] == "get" and action["file"] == "big.bin"
    assert action["note"] == "from origin..."


def test_a_failure_is_a_record_with_its_reason(dst: Path, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(tmp_path / "src")  # the only copy is gone
    code, out, _ = run_cli(dst, "get", "--json", "a.txt")
    assert code == 1
    (rec,) = lines(out)
    assert rec["success"] is False and rec["file"] == "a.txt"
    assert rec["error-messages"]


@pytest.mark.parametrize(("done", "total", "shown"), [
    (32752, 300000000, "0.01%"), (21812832, 300000000, "7.27%"), (3, 3, "100%"),
    (1, 2, "50%"), (141, 2000, "7.05%"), (1, 3, "33.33%"), (0, 5, "0%"),
    (2, 3, "66.67%"), (99999, 100000, "100%"), (1001, 100000, "1%"), (10100, 100000, "10.1%"),
])
def test_percent_is_written_as_git_annex_writes_it(done: int, total: int, shown: str) -> None:
    from annexsync.cli.transferui import percent

    assert percent(done, total) == shown
