"""A conversation found in Asterisk after a restart of this process: watched, not dropped.

The app that built the bridge is gone with its state; what is left to guarantee is that
nobody stays half-bridged. When one side leaves, the others are hung up and the bridge goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ari_apps.machine import Transition
from ari_apps.models import (
    CallEvent,
    ChannelLeftBridge,
    Concurrently,
    DestroyBridge,
    Hangup,
    RuntimeStopping,
    ended_channel,
)
from ari_apps.reconcile import AdoptedBridge


@dataclass(frozen=True)
class AdoptedCall:
    bridge_id: str
    channel_ids: frozenset[str]


def adopt(bridge: AdoptedBridge) -> Transition[AdoptedCall]:
    return Transition(AdoptedCall(bridge.bridge_id, frozenset(bridge.channel_ids)))


class AdoptedBridgeMachine:
    def step(self, state: AdoptedCall, event: CallEvent, now: datetime) -> Transition[AdoptedCall]:
        if isinstance(event, RuntimeStopping):
            return Transition(state, finished=True)  # the next process adopts it again
        left = event.channel.id if isinstance(event, ChannelLeftBridge) else ended_channel(event)
        if left not in state.channel_ids:
            return Transition(state)
        others = sorted(state.channel_ids - {left})
        hangups = tuple(Hangup(channel_id=channel_id) for channel_id in others)
        return Transition(
            state, (Concurrently(commands=hangups), DestroyBridge(bridge_id=state.bridge_id)), True
        )


ADOPTED_BRIDGE = AdoptedBridgeMachine()
