"""The supervisor: runs named services in threads and restarts the ones that fail.

Each service is an object with a ``name`` and a ``run(stop: threading.Event)`` method
that returns when ``stop`` is set. A service that raises is logged (event
``service-failed`` with the reason) and restarted after a back-off that doubles up to
a minute, so one broken part never takes the daemon down (Syncthing's suture pattern).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Sequence
from typing import Protocol

from annexsync.assistant.events import EventLog


class Service(Protocol):
    name: str

    def run(self, stop: threading.Event) -> None: ...


class Supervisor:
    """Starts, restarts and stops a set of services."""

    def __init__(self, services: Sequence[Service], events: EventLog, *,
                 max_backoff: float = 60.0) -> None:
        self.services = list(services)
        self.events = events
        self.stop_event = threading.Event()
        self.max_backoff = max_backoff
        self.threads: list[threading.Thread] = []
        self.restarts: dict[str, int] = {}

    def _loop(self, svc: Service) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                self.events.emit("supervisor", "service-started", service=svc.name)
                svc.run(self.stop_event)
                if self.stop_event.is_set():
                    return
                reason = "returned unexpectedly"
            except Exception as e:  # noqa: BLE001 - any failure is reported and restarted
                reason = f"{type(e).__name__}: {e}"
                self.events.emit("supervisor", "service-failed", service=svc.name,
                                 error=reason, trace=traceback.format_exc(limit=8))
            self.restarts[svc.name] = self.restarts.get(svc.name, 0) + 1
            self.events.emit("supervisor", "service-restarting", service=svc.name,
                             reason=reason, delay=backoff)
            if self.stop_event.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff)

    def start(self) -> None:
        for svc in self.services:
            t = threading.Thread(target=self._loop, args=(svc,), name=svc.name, daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        for svc in self.services:
            stopper = getattr(svc, "wake", None)
            if stopper is not None:
                stopper()
        for t in self.threads:
            t.join(timeout)
