"""The network watcher: when the network comes back, every network remote is resynced.

Theory of operation
-------------------
An ``AF_NETLINK``/``NETLINK_ROUTE`` socket (the standard library's ``socket``, no
D-Bus, no NetworkManager) subscribed to the multicast groups for links, IPv4/IPv6
addresses and routes receives a message each time the kernel's network
configuration changes. :func:`parse_netlink` turns a datagram into
:class:`NetChange` records; a change is *up* when a link becomes operational
(``IFF_UP`` and ``IFF_RUNNING`` or ``IFF_LOWER_UP``), or an address or route is
added, and *down* otherwise. Loopback changes are ignored.

Bringing an interface up produces a burst (link, then carrier, then addresses and
routes, IPv6 autoconfiguration later), so changes are debounced: the resync
happens once the burst has been quiet for ``debounce`` (200 ms), or at the latest
``max_hold`` (2 s) after its first message. A resync asks the
:class:`~annexsync.assistant.resync.Resyncer` to fetch, merge and push every
*network* git remote (every remote that is not a local path) and to retry failed
transfers; it forgets the pusher's back-off for them, and tells the ssh notifier to
reopen lost ``notifychanges`` streams at once. A socket receive-buffer
overflow (``ENOBUFS``) counts as an "up" change: we cannot know what we missed.

While the network is down nothing is retried busily: this service only acts on
events, the pusher retries a failed remote only at its back-off steps (1 s, 2 s,
4 s ... at most ``push_retry_max``) and logs one line per step, and the resyncer
logs repeated fetch failures once per back-off step too. As git-annex's
NetWatcherFallback does, network remotes are resynced every hour anyway
(:data:`FALLBACK_SECONDS`), in case an event was missed.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from annexsync.assistant.hub import Hub
from annexsync.assistant.resync import Resyncer
from annexsync.remotes.registry import remote_specs

RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE
          | RTMGRP_IPV6_ROUTE)

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_OIF = 4
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_RUNNING = 0x40
IFF_LOWER_UP = 0x10000
LOOPBACK_INDEX = 1  # the loopback device is the first one of every network namespace

#: Network remotes are resynced this often even without an event.
FALLBACK_SECONDS = 3600.0

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


@dataclass(frozen=True)
class NetChange:
    """One rtnetlink notification, reduced to what the watcher needs."""

    what: str  # "link" | "addr" | "route" | "overrun"
    up: bool
    ifindex: int = 0
    loopback: bool = False


def _align(n: int) -> int:
    return (n + 3) & ~3


def _route_oif(payload: bytes) -> int:
    off = _RTMSG.size
    while off + _RTATTR.size <= len(payload):
        ln, typ = _RTATTR.unpack_from(payload, off)
        if ln < _RTATTR.size:
            break
        if typ == RTA_OIF and ln >= _RTATTR.size + 4:
            return int(struct.unpack_from("=i", payload, off + _RTATTR.size)[0])
        off += _align(ln)
    return 0


def parse_netlink(data: bytes) -> list[NetChange]:
    """The changes in one rtnetlink datagram (several messages may be packed in it)."""
    out: list[NetChange] = []
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, typ, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        payload = data[off + _NLMSGHDR.size:off + length]
        off += _align(length)
        if typ in (RTM_NEWLINK, RTM_DELLINK) and len(payload) >= _IFINFOMSG.size:
            _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
            running = bool(flags & IFF_UP) and bool(flags & (IFF_RUNNING | IFF_LOWER_UP))
            out.append(NetChange("link", typ == RTM_NEWLINK and running, index,
                                 bool(flags & IFF_LOOPBACK) or index == LOOPBACK_INDEX))
        elif typ in (RTM_NEWADDR, RTM_DELADDR) and len(payload) >= _IFADDRMSG.size:
            index = _IFADDRMSG.unpack_from(payload)[4]
            out.append(NetChange("addr", typ == RTM_NEWADDR, index,
                                 index == LOOPBACK_INDEX))
        elif typ in (RTM_NEWROUTE, RTM_DELROUTE) and len(payload) >= _RTMSG.size:
            index = _route_oif(payload)
            out.append(NetChange("route", typ == RTM_NEWROUTE, index,
                                 index == LOOPBACK_INDEX))
        elif typ == NLMSG_OVERRUN:
            out.append(NetChange("overrun", True))
        elif typ == NLMSG_DONE:
            break
    return out


def network_remote_names(hub: Hub) -> list[str]:
    """Syncable git remotes that are not on a local path (ssh and other URLs)."""
    return [s.name for s in remote_specs(hub.repo, hub.branch)
            if not s.special and s.url and s.kind != "local" and s.sync]


class Debouncer:
    """Collapses a burst of changes into one action (pure: the caller gives ``now``)."""

    def __init__(self, quiet: float, max_hold: float) -> None:
        self.quiet = quiet
        self.max_hold = max_hold
        self.first: float | None = None
        self.last = 0.0

    def note(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def due(self, now: float) -> bool:
        return self.first is not None and (now - self.last >= self.quiet
                                           or now - self.first >= self.max_hold)

    def wait(self, now: float) -> float | None:
        """Seconds until :meth:`due` becomes true (None: nothing pending)."""
        if self.first is None:
            return None
        return max(0.0, min(self.last + self.quiet, self.first + self.max_hold) - now)

    def reset(self) -> None:
        self.first = None


class NetWatcher:
    """Service: resyncs network remotes when the network comes (back) up."""

    name = "netwatcher"

    def __init__(self, hub: Hub, resyncer: Resyncer, *, debounce: float = 0.2,
                 max_hold: float = 2.0, fallback: float = FALLBACK_SECONDS,
                 on_up: Callable[[], None] | None = None) -> None:
        self.hub = hub
        self.resyncer = resyncer
        self.on_up = on_up  # e.g. the ssh notifier: reconnect lost streams now
        self.fallback = fallback
        self._up = Debouncer(debounce, max_hold)
        self._down = Debouncer(debounce, max_hold)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.resyncs = 0  # how many resyncs the network triggered (tests)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
        except (OSError, AttributeError) as e:
            self.hub.emit(self.name, "netlink-unavailable", error=str(e))
            return None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, GROUPS))
        except OSError as e:
            sock.close()
            self.hub.emit(self.name, "netlink-unavailable", error=str(e))
            return None
        sock.setblocking(False)
        return sock

    def run(self, stop: threading.Event) -> None:
        sock = self._open()
        if sock is not None:
            self.hub.emit(self.name, "watching")
        next_fallback = time.monotonic() + self.fallback
        try:
            while not stop.is_set():
                now = time.monotonic()
                waits = [next_fallback - now]
                for d in (self._up, self._down):
                    if (w := d.wait(now)) is not None:
                        waits.append(w)
                fds = [self._wake_r] + ([sock.fileno()] if sock is not None else [])
                r, _, _ = select.select(fds, [], [], max(0.0, min(waits)))
                if self._wake_r in r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if stop.is_set():
                    break
                now = time.monotonic()
                if sock is not None and sock.fileno() in r:
                    self._drain(sock, now)
                if self._down.due(now):
                    self._down.reset()
                    if self._up.first is None:
                        self.hub.emit(self.name, "network-down")
                if self._up.due(now):
                    self._up.reset()
                    if self.on_up is not None:
                        self.on_up()
                    self.resync("network-up")
                    next_fallback = now + self.fallback
                elif now >= next_fallback:
                    self.resync("hourly")
                    next_fallback = now + self.fallback
        finally:
            if sock is not None:
                sock.close()

    def _drain(self, sock: socket.socket, now: float) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # we missed some: assume the worst (best)
                    self._up.note(now)
                    continue
                raise
            for ch in parse_netlink(data):
                if ch.loopback:
                    continue
                (self._up if ch.up else self._down).note(now)

    def resync(self, reason: str) -> None:
        """Ask for a resync of every network remote (and a retry of failed transfers)."""
        names = network_remote_names(self.hub)
        self.resyncs += 1
        self.hub.emit(self.name, reason, remotes=names)
        self.resyncer.request(names, reason)
