"""What every app that originates outgoing legs shares: how a leg is marked, answered, ended."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from ari_apps.machine import Transition
from ari_apps.models import (
    AddToBridge,
    Answer,
    AriCommand,
    CallEvent,
    ChannelDestroyed,
    ChannelStateChange,
    Command,
    CommandFailed,
    Concurrently,
    CreateBridge,
    DestroyBridge,
    Emit,
    Hangup,
    HangupReason,
    Originate,
    Ring,
    RuntimeStopping,
    StasisStart,
    ended_channel,
)
from softswitch.events.models import (
    CallAnswered,
    CallBridged,
    CallDisposition,
    CallEnded,
    CallStarted,
    Event,
    LegOutcome,
)

ROUTE_HEADER = "X-Softswitch-Route"
"""With value ``forward``: Kamailio routes a number we dial (a forward, an overflow, a
callback) through the routing service like any other call."""

LEG_ARG = "leg"
"""First Stasis arg of every leg we originate: it enters the app on answer, not as a new call."""

# Q.850 causes of a leg that ended by itself (ChannelDestroyed.cause).
BUSY_CAUSES = frozenset({17})
NO_ANSWER_CAUSES = frozenset({18, 19})


def answered_leg(event: CallEvent) -> str | None:
    """The leg an event says answered: it entered Stasis, or was Up after a reconnect.

    A live Up is not an answer: it comes just before the leg's StasisStart, and a leg not yet
    in Stasis cannot be bridged (ARI answers 422 and the call would stay silent).
    """
    if isinstance(event, StasisStart) and LEG_ARG in event.args:
        return event.channel.id
    if isinstance(event, ChannelStateChange) and event.resynced and event.channel.state == "Up":
        return event.channel.id
    return None


def leg_outcome(event: CallEvent) -> LegOutcome:
    cause = event.cause if isinstance(event, ChannelDestroyed) else 0
    if cause in BUSY_CAUSES:
        return "busy"
    if cause in NO_ANSWER_CAUSES:
        return "no_answer"
    return "failed"


def call_event(
    event_type: type[Event],
    now: datetime,
    *,
    call_id: str,
    sip_call_id: str | None,
    channel_id: str,
    **fields: Any,
) -> Emit:
    return Emit(
        event=event_type(
            occurred_at=now,
            call_id=call_id,
            sip_call_id=sip_call_id,
            channel_id=channel_id,
            **fields,
        )
    )


class EventOfCall(Protocol):
    """A call state's ``event`` method: an event carrying the call's correlation ids."""

    def __call__(self, event_type: type[Event], now: datetime, **fields: Any) -> Emit: ...


def teardown(
    event: EventOfCall,
    now: datetime,
    *,
    bridge_id: str,
    hangups: Sequence[AriCommand],
    started_at: datetime,
    answered_at: datetime | None,
    disposition: CallDisposition,
    also: Sequence[Command] = (),
) -> tuple[Command, ...]:
    """End a call: hang up what is still alive (all at once), drop the bridge, the app's own
    clean-up (``also``), then ``call.ended`` with the seconds waited and talked."""
    return (
        *((Concurrently(commands=tuple(hangups)),) if hangups else ()),
        DestroyBridge(bridge_id=bridge_id),
        *also,
        event(
            CallEnded,
            now,
            disposition=disposition,
            wait_seconds=max(0.0, ((answered_at or now) - started_at).total_seconds()),
            talk_seconds=max(0.0, (now - answered_at).total_seconds()) if answered_at else 0.0,
        ),
    )


@dataclass(frozen=True, kw_only=True)
class StasisCall:
    """What every app's call state starts with: the channel that entered the app.

    Its channel id is the call id of every event of the call; the bridge and the legs the
    call creates carry the app's prefix, so a restarted process knows them as ours.
    """

    app: ClassVar[str]
    channel_id: str
    sip_call_id: str | None
    started_at: datetime

    @property
    def call_id(self) -> str:
        return self.channel_id

    @property
    def bridge_id(self) -> str:
        return f"{self.app}-{self.call_id}"

    def event(self, event_type: type[Event], now: datetime, **fields: Any) -> Emit:
        return call_event(
            event_type,
            now,
            call_id=self.call_id,
            sip_call_id=self.sip_call_id,
            channel_id=self.channel_id,
            **fields,
        )

    def opening(self, now: datetime, *, caller: str, callee: str) -> tuple[Command, ...]:
        """Ringing to the caller at once (nobody hangs up on silence), the bridge, call.started."""
        return (
            Concurrently(
                commands=(
                    Ring(channel_id=self.channel_id),
                    CreateBridge(bridge_id=self.bridge_id, name=f"{self.app} {callee}"),
                )
            ),
            self.event(CallStarted, now, caller=caller, callee=callee),
        )


@dataclass(frozen=True, kw_only=True)
class OneLegCall(StasisCall):
    """A call that places one outgoing leg and bridges it with the caller when it answers."""

    leg_id: str | None = None
    answered_at: datetime | None = None


def connect(call: OneLegCall, now: datetime, *, leg_name: str) -> tuple[Command, ...]:
    """The caller answered and bridged with the leg that answered."""
    assert call.leg_id is not None
    bridged = (call.channel_id, call.leg_id)
    return (
        Answer(channel_id=call.channel_id),
        AddToBridge(bridge_id=call.bridge_id, channel_ids=bridged),
        call.event(CallAnswered, now, leg=leg_name),
        call.event(CallBridged, now, bridge_id=call.bridge_id, channel_ids=list(bridged)),
    )


def hang_up(
    call: OneLegCall,
    now: datetime,
    disposition: CallDisposition,
    caller_reason: HangupReason | None,
    *,
    also: Sequence[Command] = (),
) -> tuple[Command, ...]:
    """End a one-leg call: the leg, the caller (unless it is gone: ``caller_reason`` None)."""
    hangups: list[AriCommand] = []
    if call.leg_id is not None:
        hangups.append(Hangup(channel_id=call.leg_id))
    if caller_reason is not None:
        hangups.append(Hangup(channel_id=call.channel_id, reason=caller_reason))
    return teardown(
        call.event,
        now,
        bridge_id=call.bridge_id,
        hangups=hangups,
        started_at=call.started_at,
        answered_at=call.answered_at,
        disposition=disposition,
        also=also,
    )


Call = TypeVar("Call", bound=OneLegCall)


class OneLegMachine(ABC, Generic[Call]):
    """What every one-leg app does alike, so each app's ``step_app`` holds only its own part:
    the caller leaving ends everything; a refused originate or bridge ends the call; on
    shutdown a conversation is left up for the next process to adopt; the leg answering
    is bridged once; the leg ending ends an answered call."""

    def step(self, state: Call, event: CallEvent, now: datetime) -> Transition[Call]:
        gone = ended_channel(event)
        if gone == state.channel_id:
            disposition: CallDisposition = "answered" if state.answered_at else "cancelled"
            return self.end(state, now, disposition, None)
        if isinstance(event, CommandFailed) and isinstance(
            event.command, Originate | AddToBridge | Answer
        ):
            return self.end(state, now, "failed", "congestion")
        if isinstance(event, RuntimeStopping):
            if state.answered_at is not None:
                return Transition(state, finished=True)
            return self.end(state, now, "failed", "congestion")
        if state.leg_id is not None and answered_leg(event) == state.leg_id:
            if state.answered_at is not None:
                return Transition(state)
            answered = replace(state, answered_at=now)
            return Transition(answered, connect(answered, now, leg_name=self.leg_name(state)))
        if state.leg_id is not None and gone == state.leg_id:
            if state.answered_at is not None:
                return self.end(state, now, "answered", "normal")
            return self.leg_failed(state, event, now)
        return self.step_app(state, event, now)

    @abstractmethod
    def step_app(self, state: Call, event: CallEvent, now: datetime) -> Transition[Call]: ...

    @abstractmethod
    def leg_failed(self, state: Call, event: CallEvent, now: datetime) -> Transition[Call]:
        """The leg ended before answering."""

    @abstractmethod
    def leg_name(self, state: Call) -> str:
        """What the events call the leg (the panel's account, the emergency number)."""

    @abstractmethod
    def end(
        self,
        state: Call,
        now: datetime,
        disposition: CallDisposition,
        caller_reason: HangupReason | None,
    ) -> Transition[Call]:
        """Hang up (``caller_reason`` None: the caller is gone already) and clean up."""
