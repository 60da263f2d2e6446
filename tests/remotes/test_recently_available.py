"""RecentlyAvailable: a per-file question costs one real check per remote per window."""

from __future__ import annotations

from annexsync.remotes.base import RecentlyAvailable, RemoteInfo
from annexsync.testing.clock import FakeClock


class CountingRemote:
    """Only what RecentlyAvailable touches: the info and available()."""

    def __init__(self, name: str) -> None:
        self.info = RemoteInfo(name, f"uuid-{name}", "git")
        self.up = True
        self.asked = 0

    def available(self) -> bool:
        self.asked += 1
        return self.up


def test_a_remote_seen_up_is_not_asked_again_within_the_window() -> None:
    clock = FakeClock()
    avail = RecentlyAvailable(0.5, clock=clock.monotonic)
    r, other = CountingRemote("ssh"), CountingRemote("drive")
    assert all(avail(r) for _ in range(100))
    assert r.asked == 1
    assert avail(other) and other.asked == 1  # each remote has its own answer
    r.up = False
    clock.sleep(0.6)
    assert not avail(r) and r.asked == 2  # the window passed: asked, and it is down


def test_a_remote_seen_down_is_asked_again_unless_told_to_remember() -> None:
    clock = FakeClock()
    r = CountingRemote("ssh")
    r.up = False
    again = RecentlyAvailable(0.5, clock=clock.monotonic)
    assert not any(again(r) for _ in range(3))
    assert r.asked == 3  # a trigger that retries means it may be back: always asked
    r.asked = 0
    remember = RecentlyAvailable(0.5, remember_down=True, clock=clock.monotonic)
    assert not any(remember(r) for _ in range(50))
    assert r.asked == 1  # a command does not wait for a connection timeout per file
    r.up = True
    clock.sleep(0.6)
    assert remember(r) and r.asked == 2
