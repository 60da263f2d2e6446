"""annex.verify / remote.NAME.annex-verify: trusting a remote's bytes, as git-annex does.

Verification is on unless ``annex.verify`` is false or the remote's
``annex-verify`` is false (both must allow it). Off, a download is checked only by
size; ``fsck`` still finds what a trusted remote got wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from annexsync.annex.keys import Key
from annexsync.annex.objects import ObjectStore
from annexsync.annex.repo import AnnexRepo
from annexsync.testing.annexrepos import clone, git, make_repo, run_cli

SMALL = "small.txt"
BIG = "big.bin"  # above the small-key fast path: the copy_file_range path
FILES = {SMALL: b"small content\n", BIG: b"0123456789abcdef" * (1 << 17)}  # 2 MiB


def corrupt_in(src: AnnexRepo, name: str) -> Key:
    """Replace the content of ``name`` in ``src`` with wrong bytes of the same size."""
    key = Key.parse(os.path.basename(os.readlink(src.top / name)))
    obj = ObjectStore(src.annex_dir).find(key)
    assert obj is not None
    os.chmod(obj.parent, 0o755)
    os.chmod(obj, 0o644)
    obj.write_bytes(b"X" * len(FILES[name]))
    return key


@pytest.fixture
def corrupt_pair(tmp_path: Path) -> tuple[AnnexRepo, AnnexRepo]:
    src = make_repo(tmp_path / "src", "src", FILES)
    dst = clone(src.top, tmp_path / "dst", "dst")
    for name in FILES:
        corrupt_in(src, name)
    return src, dst


def present(repo: AnnexRepo, name: str) -> bool:
    key = Key.parse(os.path.basename(os.readlink(repo.top / name)))
    return ObjectStore(repo.annex_dir).has(key)


def test_by_default_wrong_bytes_never_enter_the_store(
        corrupt_pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    _, dst = corrupt_pair
    code, _, _ = run_cli(dst.top, "get", SMALL, BIG)
    assert code == 1
    assert not present(dst, SMALL) and not present(dst, BIG)


@pytest.mark.parametrize("setting", ["annex.verify", "remote.origin.annex-verify"])
def test_verify_false_trusts_the_remote_and_fsck_still_catches_it(
        corrupt_pair: tuple[AnnexRepo, AnnexRepo], setting: str) -> None:
    _, dst = corrupt_pair
    git(dst.top, "config", setting, "false")
    code, _, err = run_cli(dst.top, "get", SMALL, BIG)
    assert code == 0, err
    assert present(dst, SMALL) and present(dst, BIG)
    assert (dst.top / BIG).read_bytes() == b"X" * len(FILES[BIG])
    code, out, _ = run_cli(dst.top, "fsck", BIG)
    assert code == 1 and BIG in out


def test_remote_cannot_turn_verification_back_on_against_annex_verify(
        corrupt_pair: tuple[AnnexRepo, AnnexRepo]) -> None:
    _, dst = corrupt_pair
    git(dst.top, "config", "annex.verify", "true")
    git(dst.top, "config", "remote.origin.annex-verify", "false")
    assert run_cli(dst.top, "get", SMALL)[0] == 0  # either one false: no verification
    git(dst.top, "config", "annex.verify", "false")
    git(dst.top, "config", "remote.origin.annex-verify", "true")
    assert run_cli(dst.top, "get", BIG)[0] == 0


def test_a_wrong_size_is_refused_even_without_verification(tmp_path: Path) -> None:
    src = make_repo(tmp_path / "src", "src", FILES)
    dst = clone(src.top, tmp_path / "dst", "dst")
    key = Key.parse(os.path.basename(os.readlink(src.top / BIG)))
    obj = ObjectStore(src.annex_dir).find(key)
    assert obj is not None
    os.chmod(obj.parent, 0o755)
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.truncate(len(FILES[BIG]) // 2)
    git(dst.top, "config", "annex.verify", "false")
    code, _, _ = run_cli(dst.top, "get", BIG)
    assert code == 1
    assert not present(dst, BIG)
