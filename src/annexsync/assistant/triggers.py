"""The trigger services, assembled: what makes the assistant react to the world.

Theory of operation
-------------------
Besides local edits (watcher, committer) and pushes into us (merger), the assistant
syncs when

* a drive holding a clone is mounted (:class:`~.mountwatcher.MountWatcher`),
* the network comes up (:class:`~.netwatcher.NetWatcher`),
* a clone on a local path changes, even with no daemon there
  (:class:`~.remotewatcher.RemoteWatcher`),
* an ssh remote's branches move (its ``notifychanges`` stream,
  :class:`~.sshnotifier.SshNotifier`),
* a program runs ``annexsync remotechanged`` (:class:`~.control.ControlServer`),

all of which only ask the one :class:`~.resync.Resyncer` for a round. And it runs
``annexsync.changehook`` after commits and merges (:class:`~.changehook.ChangeHook`).
See docs/triggers.md.
"""

from __future__ import annotations

from typing import Any

from annexsync.assistant.hub import Hub


def trigger_services(hub: Hub) -> list[Any]:
    """The services to add to the daemon's list (after the core ones)."""
    services: list[Any] = []
    if hub.settings.git_sync:
        from annexsync.assistant.control import ControlServer
        from annexsync.assistant.mountwatcher import MountWatcher
        from annexsync.assistant.netwatcher import NetWatcher
        from annexsync.assistant.remotewatcher import RemoteWatcher
        from annexsync.assistant.resync import Resyncer
        from annexsync.assistant.sshnotifier import SshNotifier

        resyncer = Resyncer(hub)
        notifier = SshNotifier(hub, resyncer)
        remotes = RemoteWatcher(hub, resyncer, on_config=notifier.refresh)
        services += [resyncer, ControlServer(hub, resyncer), remotes, notifier,
                     MountWatcher(hub, resyncer, on_change=remotes.refresh),
                     NetWatcher(hub, resyncer, on_up=notifier.kick)]
    if hub.settings.change_hook:
        from annexsync.assistant.changehook import ChangeHook

        services.append(ChangeHook(hub, hub.settings.change_hook,
                                   hub.settings.change_hook_timeout))
    return services
