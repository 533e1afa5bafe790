"""What a queue call and the ACD dispatcher say to each other, and the app's settings.

Commands go from a call to the dispatcher (``AcdServices``); events come back to a call,
either as the answer to its command or delivered later (agents to ring, a supervisor's
action). Agents are named by id and reached by their SIP account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from ari_apps.legs import ROUTE_HEADER
from ari_apps.models import AppCommand, AppEvent

# Call -> dispatcher


class JoinQueue(AppCommand):
    waiter_id: str
    queue_id: str
    priority: int = 0
    number: str = ""
    waiting_since: datetime


class LeaveQueue(AppCommand):
    """The caller hung up before talking to an agent."""

    waiter_id: str


class AgentAnswered(AppCommand):
    """Agent and caller are connected."""

    waiter_id: str
    agent_id: str


class AgentLegFailed(AppCommand):
    waiter_id: str
    agent_id: str
    busy: bool = False


class TalkOver(AppCommand):
    waiter_id: str
    agent_id: str


class AskCallback(AppCommand):
    waiter_id: str


class CallbackMissed(AppCommand):
    """A callback did not reach the caller."""

    waiter_id: str
    agent_id: str


class AskPosition(AppCommand):
    waiter_id: str


# Dispatcher -> call


class Queued(AppEvent):
    music_class: str
    callback_key: str | None
    announce_seconds: float


class NotQueued(AppEvent):
    reason: str


class AgentLeg(BaseModel):
    model_config = ConfigDict(frozen=True)

    agent_id: str
    account: str


class RingAgentsNow(AppEvent):
    agents: tuple[AgentLeg, ...]
    timeout_seconds: float


class StopRinging(AppEvent):
    agent_ids: tuple[str, ...]


class OverflowTo(AppEvent):
    destination: str


class DismissCaller(AppEvent):
    goodbye: str


class CallbackBooked(AppEvent):
    pass


class CallbackRefused(AppEvent):
    """The queue takes no callback requests (or the caller has no number): keep waiting."""


class PositionIs(AppEvent):
    position: int | None


@dataclass(frozen=True)
class AcdPolicy:
    """How queue calls are placed; from settings, passed to the pure machine."""

    sip_domain: str = "127.0.0.1"
    callback_caller_id: str = ""
    callback_confirmation: str = "sound:queue-thankyou"
    goodbye_seconds: float = 10.0
    callback_ring_seconds: float = 45.0

    def endpoint(self, target: str) -> tuple[str, dict[str, str]]:
        """An account, number or SIP URI, reached through Kamailio (numbers are routed)."""
        if target.startswith(("sip:", "sips:")):
            return f"PJSIP/kamailio/{target}", {}
        endpoint = f"PJSIP/kamailio/sip:{target}@{self.sip_domain}"
        return endpoint, {f"PJSIP_HEADER(add,{ROUTE_HEADER})": "forward"}

    def agent_endpoint(self, account: str) -> str:
        return f"PJSIP/kamailio/sip:{account}@{self.sip_domain}"
