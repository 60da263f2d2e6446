"""The event log: every service reports what it does here, with increasing ids.

Theory of operation: a bounded ring of :class:`Event` records, each with an id one
larger than the last. Readers ask for events ``since`` an id (the status command's
``--follow``, a future dashboard's long-poll/SSE with ``Last-Event-ID``) and may block
until a new one arrives. Writers never block on readers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    service: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "service": self.service,
                "kind": self.kind, **self.data}


class EventLog:
    """Thread-safe, bounded, id-numbered event log."""

    def __init__(self, capacity: int = 10000, clock: Any = time.time) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._next_id = 1
        self._cond = threading.Condition()
        self._clock = clock
        self._listeners: list[Any] = []

    def emit(self, service: str, kind: str, /, **data: Any) -> Event:
        with self._cond:
            ev = Event(self._next_id, self._clock(), service, kind, data)
            self._next_id += 1
            self._events.append(ev)
            self._cond.notify_all()
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(ev)
            except Exception:  # a broken listener must not break a service
                pass
        return ev

    def listen(self, fn: Any) -> None:
        """Call ``fn(event)`` for every new event (the log file writer)."""
        with self._cond:
            self._listeners.append(fn)

    @property
    def last_id(self) -> int:
        with self._cond:
            return self._next_id - 1

    def since(self, last_id: int, timeout: float | None = None) -> list[Event]:
        """Events with id > last_id; waits up to ``timeout`` for one if there are none."""
        with self._cond:
            if timeout is not None and self._next_id - 1 <= last_id:
                self._cond.wait_for(lambda: self._next_id - 1 > last_id, timeout)
            return [e for e in self._events if e.id > last_id]

    def wait_for(self, predicate: Any, timeout: float) -> Event | None:
        """Block until an event satisfying ``predicate`` is emitted (tests, status)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            with self._cond:
                for e in self._events:
                    if e.id > seen:
                        seen = e.id
                        if predicate(e):
                            return e
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
