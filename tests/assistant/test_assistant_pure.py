"""The assistant's pure parts: the change aggregator and the inotify interpreter."""

from __future__ import annotations

from inotify_simple import flags as F

from annexsync.assistant.aggregator import Aggregator
from annexsync.assistant.events import EventLog
from annexsync.assistant.watcher import Note, interpret


def test_lone_change_is_committed_after_the_quiet_time() -> None:
    agg = Aggregator(quiet=0.02, max_delay=0.5)
    assert agg.decide(10.0) == (None, None)
    agg.add("a.txt", 10.0)
    batch, wait = agg.decide(10.01)
    assert batch is None and wait is not None and abs(wait - 0.01) < 1e-9
    assert agg.decide(10.02) == ({"a.txt"}, None)
    assert agg.decide(10.03) == (None, None)


def test_burst_is_one_batch_but_never_held_past_max_delay() -> None:
    agg = Aggregator(quiet=0.02, max_delay=0.5)
    t = 100.0
    for i in range(40):  # a change every 10 ms: never quiet
        agg.add(f"f{i}", t)
        batch, _ = agg.decide(t)
        assert batch is None
        t += 0.01
    agg.add("last", 100.5)
    batch, _ = agg.decide(100.5)
    assert batch is not None and len(batch) == 41


def test_max_batch_cuts_at_once_and_delayadd_waits() -> None:
    agg = Aggregator(quiet=1.0, max_delay=10.0, max_batch=3)
    for name in "abc":
        agg.add(name, 0.0)
    assert agg.decide(0.0)[0] == {"a", "b", "c"}
    slow = Aggregator(quiet=0.02, max_delay=0.5, delay_add=2.0)
    slow.add("x", 0.0)
    assert slow.decide(1.0)[0] is None
    assert slow.decide(2.0)[0] == {"x"}


def test_rescan_flag() -> None:
    agg = Aggregator()
    agg.rescan(1.0)
    batch, _ = agg.decide(2.0)
    assert batch == set() and agg.take_rescan() and not agg.take_rescan()


def test_interpret_raw_events() -> None:
    assert interpret(F.CLOSE_WRITE, "d", "f") == Note("d/f")
    assert interpret(F.CREATE, "", "f") == Note("f", maybe_open=True)
    assert interpret(F.CREATE | F.ISDIR, "", "new") == Note("new", new_dir=True)
    assert interpret(F.MOVED_FROM | F.ISDIR, "a", "b") == Note("a/b", gone_dir=True)
    assert interpret(F.DELETE, "a", "b") == Note("a/b")
    assert interpret(F.Q_OVERFLOW, "", "") == Note("", rescan=True)
    assert interpret(F.CLOSE_WRITE, "", ".git") is None
    assert interpret(F.IGNORED, "d", "") is None


def test_event_log_ids_increase_and_since_waits() -> None:
    log = EventLog(capacity=3)
    ids = [log.emit("s", "k", n=i).id for i in range(5)]
    assert ids == [1, 2, 3, 4, 5]
    assert [e.id for e in log.since(2)] == [3, 4, 5]  # bounded: the oldest are gone
    assert log.since(5, timeout=0.01) == []
    assert log.wait_for(lambda e: e.data.get("n") == 4, timeout=0.1) is not None
