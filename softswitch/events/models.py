"""Every call event analytics consume: one typed model per routing key.

An event carries its own id (consumers drop duplicates by it), its schema version, when it
happened (UTC), and the correlation ids: ``call_id`` (ours: ties every leg of one call),
``sip_call_id``, ``channel_id`` and ``bridge_id``. On the wire it is the model's JSON with
``type`` = routing key; AMQP properties repeat the id, type and timestamp.

Schema versions: a field may be added with a default without a new version; renaming,
removing or retyping a field bumps ``schema_version`` of that event.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


def utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    routing_key: ClassVar[str]
    type: str
    schema_version: int = 1
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    occurred_at: datetime = Field(default_factory=utc_now)
    call_id: str | None = Field(default=None, description="our id tying every leg of a call")
    sip_call_id: str | None = None
    channel_id: str | None = None
    bridge_id: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        key = cls.__dict__.get("routing_key")
        if key:
            EVENT_TYPES[key] = cls

    def body(self) -> bytes:
        return self.model_dump_json().encode()


EVENT_TYPES: dict[str, type[Event]] = {}

CallDisposition = Literal[
    "answered", "no_answer", "busy", "failed", "rejected", "cancelled", "abandoned"
]
LegOutcome = Literal["answered", "answered_elsewhere", "no_answer", "busy", "failed", "cancelled"]


# Calls


class CallStarted(Event):
    """A new call reached the softswitch (Kamailio asked for a route, or a Stasis app got it)."""

    routing_key: ClassVar[str] = "call.started"
    type: Literal["call.started"] = "call.started"
    caller: str
    callee: str
    caller_host: str = ""
    callee_host: str = ""


class CallRouted(Event):
    """The routing service decided the call (numbers after rewrites)."""

    routing_key: ClassVar[str] = "call.routed"
    type: Literal["call.routed"] = "call.routed"
    route: str | None
    chain: list[str] = Field(default_factory=list)
    action: Literal["relay", "app", "reject"]
    caller: str
    callee: str
    destinations: list[str] = Field(default_factory=list)
    app: str | None = None
    reject_code: int | None = None
    flags: list[str] = Field(default_factory=list)


class CallRinging(Event):
    """One leg of the call is ringing (one event per leg)."""

    routing_key: ClassVar[str] = "call.ringing"
    type: Literal["call.ringing"] = "call.ringing"
    leg: str = Field(description="the ringing leg's endpoint or account")


class CallAnswered(Event):
    """The call was answered by the leg named."""

    routing_key: ClassVar[str] = "call.answered"
    type: Literal["call.answered"] = "call.answered"
    leg: str = ""


class CallBridged(Event):
    """Channels were joined in a bridge (caller with agent, panel with resident)."""

    routing_key: ClassVar[str] = "call.bridged"
    type: Literal["call.bridged"] = "call.bridged"
    channel_ids: list[str]


class CallTransferred(Event):
    """The call was transferred to a new target."""

    routing_key: ClassVar[str] = "call.transferred"
    type: Literal["call.transferred"] = "call.transferred"
    target: str
    attended: bool = False


class CallEnded(Event):
    """The call ended: disposition, Q.850 cause, seconds waited before answer and talked."""

    routing_key: ClassVar[str] = "call.ended"
    type: Literal["call.ended"] = "call.ended"
    disposition: CallDisposition
    cause: int = Field(default=16, description="Q.850 cause code")
    cause_text: str = ""
    wait_seconds: float = Field(ge=0)
    talk_seconds: float = Field(ge=0)


# ACD queues


class WaiterJoined(Event):
    """A caller joined an ACD queue at the given position."""

    routing_key: ClassVar[str] = "acd.waiter.joined"
    type: Literal["acd.waiter.joined"] = "acd.waiter.joined"
    queue: str
    priority: int = 0
    position: int = Field(ge=1)


class WaiterLeft(Event):
    """A caller left an ACD queue, and why."""

    routing_key: ClassVar[str] = "acd.waiter.left"
    type: Literal["acd.waiter.left"] = "acd.waiter.left"
    queue: str
    reason: Literal["answered", "abandoned", "timeout", "callback", "removed", "moved"]
    waited_seconds: float = Field(ge=0)
    agent: str | None = None


class WaiterPriorityChanged(Event):
    """A supervisor changed a waiting caller's priority."""

    routing_key: ClassVar[str] = "acd.waiter.priority_changed"
    type: Literal["acd.waiter.priority_changed"] = "acd.waiter.priority_changed"
    queue: str
    old_priority: int
    new_priority: int
    by: str = ""


class WaiterMoved(Event):
    """A supervisor moved a waiting caller to another queue."""

    routing_key: ClassVar[str] = "acd.waiter.moved"
    type: Literal["acd.waiter.moved"] = "acd.waiter.moved"
    from_queue: str
    to_queue: str
    by: str = ""


class AgentStatusChanged(Event):
    """An agent's status changed (free, ringing, busy, wrap_up, paused, offline)."""

    routing_key: ClassVar[str] = "acd.agent.status_changed"
    type: Literal["acd.agent.status_changed"] = "acd.agent.status_changed"
    agent: str
    old_status: str
    new_status: Literal["offline", "free", "ringing", "busy", "wrap_up", "paused"]
    reason: str = ""


class CallbackRequested(Event):
    """A waiting caller asked to be called back, keeping the place in the queue."""

    routing_key: ClassVar[str] = "acd.callback.requested"
    type: Literal["acd.callback.requested"] = "acd.callback.requested"
    queue: str
    number: str
    position: int = Field(ge=1)


# Multiring (intercom calls to every device of a flat)


class MultiringStarted(Event):
    """An intercom call started ringing every device of a flat."""

    routing_key: ClassVar[str] = "multiring.started"
    type: Literal["multiring.started"] = "multiring.started"
    panel: str
    flat: str
    legs: list[str]


class MultiringLegRinging(Event):
    """One device of the flat is ringing."""

    routing_key: ClassVar[str] = "multiring.leg_ringing"
    type: Literal["multiring.leg_ringing"] = "multiring.leg_ringing"
    leg: str


class MultiringLegEnded(Event):
    """One device's leg ended without winning (or won: outcome answered)."""

    routing_key: ClassVar[str] = "multiring.leg_ended"
    type: Literal["multiring.leg_ended"] = "multiring.leg_ended"
    leg: str
    outcome: LegOutcome


class MultiringWon(Event):
    """The first device to answer won; the others are being hung up."""

    routing_key: ClassVar[str] = "multiring.won"
    type: Literal["multiring.won"] = "multiring.won"
    leg: str
    ring_seconds: float = Field(ge=0)


class MultiringTimeout(Event):
    """Nobody in the flat answered within the ring time."""

    routing_key: ClassVar[str] = "multiring.timeout"
    type: Literal["multiring.timeout"] = "multiring.timeout"
    ring_seconds: float = Field(ge=0)
    outcome: Literal["hangup", "fallback"]


class PushRequested(Event):
    """A push notification was requested for a mobile-app account."""

    routing_key: ClassVar[str] = "push.requested"
    type: Literal["push.requested"] = "push.requested"
    account: str
    gateway_status: int | None = None


# 112 / emergency number pool


class SosNumberLeased(Event):
    """An intercom calling 112 got a number of its city's pool."""

    routing_key: ClassVar[str] = "sos.number.leased"
    type: Literal["sos.number.leased"] = "sos.number.leased"
    city: str
    number: str
    panel: str
    how: Literal["reused", "lru", "taken_over", "fallback", ""] = Field(
        default="",
        description="the panel's own reservation, least recently used, taken over"
        " from the oldest reservation (pool exhausted), or the city's fallback number",
    )


class SosNumberReleased(Event):
    """A pool number went back to the pool."""

    routing_key: ClassVar[str] = "sos.number.released"
    type: Literal["sos.number.released"] = "sos.number.released"
    city: str
    number: str
    panel: str
    held_seconds: float = Field(ge=0)


class SosPoolExhausted(Event):
    """An intercom called 112 and its city's pool had no free number."""

    routing_key: ClassVar[str] = "sos.number.exhausted"
    type: Literal["sos.number.exhausted"] = "sos.number.exhausted"
    city: str
    panel: str


class SosCallbackRouted(Event):
    """A callback to a pool number was routed to the intercom that held it."""

    routing_key: ClassVar[str] = "sos.callback.routed"
    type: Literal["sos.callback.routed"] = "sos.callback.routed"
    city: str
    number: str
    panel: str


class MalformedEvent(ValueError):
    pass


def parse_event(body: bytes) -> Event:
    """The typed event a message body holds; MalformedEvent says why it is not one."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedEvent("not a JSON object")
    event_type = EVENT_TYPES.get(str(document.get("type")))
    if event_type is None:
        raise MalformedEvent(f"unknown event type {document.get('type')!r}")
    try:
        return event_type.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise MalformedEvent(f"{event_type.routing_key}: {problems}") from None
