"""What to do with Asterisk's channels and bridges after (re)connecting: adopt or clean up.

Between two ARI sessions events are lost: Asterisk may have restarted (every channel gone), or
this process may have restarted while Asterisk kept its calls. ``plan`` compares a snapshot of
Asterisk with what the process owns and decides, without I/O:

- a bridge of ours with two or more live channels is a conversation: adopt it (it is watched
  and torn down as a whole when one side leaves, so nobody stays half-bridged);
- any other bridge of ours is destroyed, and channels of ours outside adopted bridges (legs
  still ringing, callers waiting for a dead app) are hung up: nothing is left ringing;
- channels and bridges of other ARI clients are never touched.

"Ours" means: in the Stasis app of one of our apps, or named with one of our apps' id prefix
(legs we originated are not in Stasis until they answer).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from ari_apps.models import Bridge, Channel


def owned_prefix(app: str) -> str:
    """The id prefix of every channel and bridge an app creates."""
    return f"{app}-"


def app_of(object_id: str, apps: Collection[str]) -> str | None:
    return next((app for app in apps if object_id.startswith(owned_prefix(app))), None)


@dataclass(frozen=True)
class AdoptedBridge:
    app: str
    bridge_id: str
    channel_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReconcilePlan:
    adopt: tuple[AdoptedBridge, ...] = ()
    destroy_bridges: tuple[str, ...] = ()
    hang_up: tuple[str, ...] = ()


def plan(
    channels: Iterable[Channel],
    bridges: Iterable[Bridge],
    *,
    apps: Collection[str],
    owned: Collection[str],
) -> ReconcilePlan:
    live = {channel.id: channel for channel in channels}

    def channel_app(channel: Channel) -> str | None:
        in_stasis = channel.stasis_app
        return in_stasis if in_stasis in apps else app_of(channel.id, apps)

    adopt: list[AdoptedBridge] = []
    destroy: list[str] = []
    kept: set[str] = set()
    for bridge in bridges:
        app = app_of(bridge.id, apps)
        if app is None or bridge.id in owned:
            continue
        members = tuple(c for c in bridge.channels if c in live and c not in owned)
        if len(members) >= 2:
            adopt.append(AdoptedBridge(app, bridge.id, members))
            kept.update(members)
        else:
            destroy.append(bridge.id)
    hang_up = tuple(
        channel.id
        for channel in live.values()
        if channel.id not in owned and channel.id not in kept and channel_app(channel)
    )
    return ReconcilePlan(tuple(adopt), tuple(destroy), hang_up)
