"""A queue call, from the caller's side; and a callback, which starts with the agent.

Queue call: the caller is answered and waits in its own bridge with music on hold while the
dispatcher looks for an agent. When told to ring agents, the call originates one leg per
agent through Kamailio; the first to answer is bridged with the caller, the others are hung
up; a leg that ends unanswered is reported so the dispatcher rings the next agent. The
caller may press the queue's callback key: the place is kept, the call ends after a short
confirmation. A supervisor may stop the ringing, send the caller elsewhere or remove it.

Callback: spawned by the dispatcher when a callback request reaches the front. With
``agent_first`` the agent is rung, then (on answer, hearing music) the caller's number;
with ``caller_first`` the reverse. Either side failing is reported and ends the attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import ClassVar, Literal

from ari_apps.acd.models import (
    AcdPolicy,
    AgentAnswered,
    AgentLeg,
    AgentLegFailed,
    AskCallback,
    AskPosition,
    CallbackBooked,
    CallbackMissed,
    CallbackRefused,
    DismissCaller,
    JoinQueue,
    LeaveQueue,
    NotQueued,
    OverflowTo,
    PositionIs,
    Queued,
    RingAgentsNow,
    StopRinging,
    TalkOver,
)
from ari_apps.legs import LEG_ARG, StasisCall, answered_leg, leg_outcome, teardown
from ari_apps.machine import Transition
from ari_apps.models import (
    AddToBridge,
    Answer,
    AriCommand,
    CallEvent,
    ChannelDtmfReceived,
    Command,
    CommandFailed,
    Concurrently,
    CreateBridge,
    Hangup,
    HangupReason,
    Originate,
    Play,
    PlaybackFinished,
    RuntimeStopping,
    StartMoh,
    StartTimer,
    StasisStart,
    StopMoh,
    TimerFired,
    ended_channel,
)
from softswitch.events.models import (
    CallAnswered,
    CallBridged,
    CallDisposition,
    CallRinging,
    CallStarted,
)

APP = "acd"
ANNOUNCE_TIMER = "announce"
GOODBYE_TIMER = "goodbye"

QueuePhase = Literal["joining", "waiting", "talking", "forwarding", "leaving"]


@dataclass(frozen=True, kw_only=True)
class QueueCall(StasisCall):
    app: ClassVar[str] = APP
    queue_id: str
    number: str
    priority: int = 0
    phase: QueuePhase = "joining"
    legs: tuple[tuple[str, str], ...] = ()
    """Agent legs ringing now: (agent id, channel id)."""
    leg_count: int = 0
    agent_id: str | None = None
    agent_leg: str | None = None
    answered_at: datetime | None = None
    music_class: str = "default"
    callback_key: str | None = None
    announce_seconds: float = 0.0
    announcements: int = 0
    callback_asked: bool = False

    @property
    def waiter_id(self) -> str:
        return self.call_id

    def leg_of(self, channel_id: str | None) -> str | None:
        return next((agent for agent, leg in self.legs if leg == channel_id), None)

    def without_legs(self, agent_ids: tuple[str, ...] | None = None) -> QueueCall:
        kept = () if agent_ids is None else tuple(p for p in self.legs if p[0] not in agent_ids)
        return replace(self, legs=kept)


CallbackPhase = Literal["first", "second", "talking"]


@dataclass(frozen=True, kw_only=True)
class CallbackCall(StasisCall):
    """``channel_id`` is the first leg (agent or caller, per ``order``); ``sip_call_id`` None."""

    app: ClassVar[str] = APP
    waiter_id: str
    agent_id: str
    agent_account: str
    number: str
    order: str
    ring_seconds: float
    phase: CallbackPhase = "first"
    second_leg: str | None = None
    answered_at: datetime | None = None

    @property
    def agent_leg(self) -> str:
        return self.channel_id if self.order == "agent_first" else self.second_leg or ""

    @property
    def caller_leg(self) -> str:
        return self.second_leg or "" if self.order == "agent_first" else self.channel_id


AcdCall = QueueCall | CallbackCall


class AcdMachine:
    def __init__(self, policy: AcdPolicy) -> None:
        self.policy = policy

    # Queue calls

    def start(self, event: StasisStart, now: datetime) -> Transition[AcdCall]:
        # Stasis(acd, <dialled>, <queue>[, <priority>]) from a route with app_args; a route
        # without args names the queue by the dialled number itself.
        args = event.args
        queue_id = args[1] if len(args) > 1 else (args[0] if args else "")
        priority = int(args[2]) if len(args) > 2 and args[2].lstrip("-").isdigit() else 0
        call = QueueCall(
            channel_id=event.channel.id,
            sip_call_id=event.channel.sip_call_id,
            started_at=now,
            queue_id=queue_id,
            number=event.channel.caller.number,
            priority=priority,
        )
        return Transition(
            call,
            (
                Answer(channel_id=call.channel_id),
                CreateBridge(bridge_id=call.bridge_id, name=f"queue {call.queue_id}"),
                AddToBridge(bridge_id=call.bridge_id, channel_ids=(call.channel_id,)),
                call.event(CallStarted, now, caller=call.number, callee=call.queue_id),
                JoinQueue(
                    waiter_id=call.waiter_id,
                    queue_id=call.queue_id,
                    priority=call.priority,
                    number=call.number,
                    waiting_since=now,
                ),
            ),
        )

    def step(self, state: AcdCall, event: CallEvent, now: datetime) -> Transition[AcdCall]:
        if isinstance(state, CallbackCall):
            return self._callback_step(state, event, now)
        return self._queue_step(state, event, now)

    def _queue_step(self, call: QueueCall, event: CallEvent, now: datetime) -> Transition[AcdCall]:
        gone = ended_channel(event)
        if gone == call.channel_id:
            return self._caller_gone(call, now)
        if isinstance(event, RuntimeStopping):
            if call.phase in ("talking", "forwarding"):
                return Transition(call, finished=True)  # the bridge is adopted after restart
            return self._end(call, now, "failed", "congestion", leave=True)
        if call.phase == "talking":
            if gone is not None and gone == call.agent_leg:
                return self._end(call, now, "answered", "normal")
            return Transition(call)
        if call.phase == "forwarding":
            return self._forward_step(call, event, now)
        match event:
            case Queued() if call.phase == "joining":
                return self._queued(call, event)
            case NotQueued():
                return self._end(call, now, "failed", "congestion")
            case CommandFailed(command=Answer() | AddToBridge() | CreateBridge()):
                return self._end(call, now, "failed", "congestion", leave=True)
            case RingAgentsNow(agents=agents, timeout_seconds=timeout):
                return self._ring(call, agents, timeout, now)
            case StopRinging(agent_ids=agent_ids):
                return self._stop_ringing(call, agent_ids)
            case ChannelDtmfReceived(digit=digit) if (
                digit == call.callback_key and not call.callback_asked and call.phase == "waiting"
            ):
                return Transition(
                    replace(call, callback_asked=True), (AskCallback(waiter_id=call.waiter_id),)
                )
            case CallbackRefused():
                return Transition(replace(call, callback_asked=False))
            case CallbackBooked():
                return self._leave_with(call, self.policy.callback_confirmation)
            case DismissCaller(goodbye=goodbye):
                return self._leave_with(call, goodbye)
            case OverflowTo(destination=destination):
                return self._overflow(call, destination)
            case TimerFired(name=name) if (
                name == ANNOUNCE_TIMER and call.phase == "waiting" and not call.legs
            ):
                return Transition(call, (AskPosition(waiter_id=call.waiter_id),))
            case PositionIs(position=position) if position is not None and call.phase == "waiting":
                return self._announce(call, position)
            case PlaybackFinished() | TimerFired() if (
                call.phase == "leaving" and self._goodbye_over(call, event)
            ):
                return self._end(
                    call, now, "abandoned" if call.callback_asked else "failed", "normal"
                )
        # Every leg that leaves ``legs`` is hung up then: one answering later is ignored.
        agent_id = call.leg_of(answered_leg(event))
        if agent_id is not None and call.phase in ("joining", "waiting"):
            return self._agent_answered(call, agent_id, now)
        failed = self._failed_leg(call, event)
        if failed is not None:
            agent_id, busy = failed
            left = call.without_legs((agent_id,))
            return Transition(
                left, (AgentLegFailed(waiter_id=call.waiter_id, agent_id=agent_id, busy=busy),)
            )
        return Transition(call)

    @staticmethod
    def _goodbye_over(call: QueueCall, event: CallEvent) -> bool:
        if isinstance(event, PlaybackFinished):
            return event.playback.id == f"{call.bridge_id}-bye"
        return isinstance(event, TimerFired) and event.name == GOODBYE_TIMER

    def _queued(self, call: QueueCall, event: Queued) -> Transition[AcdCall]:
        waiting = replace(
            call,
            phase="waiting",
            music_class=event.music_class,
            callback_key=event.callback_key,
            announce_seconds=event.announce_seconds,
        )
        commands: list[Command] = [
            StartMoh(bridge_id=call.bridge_id, music_class=event.music_class)
        ]
        if event.announce_seconds > 0:
            commands.append(StartTimer(name=ANNOUNCE_TIMER, seconds=event.announce_seconds))
        return Transition(waiting, commands)

    def _announce(self, call: QueueCall, position: int) -> Transition[AcdCall]:
        """ "You are next", or "there are N calls waiting" (ahead of the caller)."""
        media = (
            "sound:queue-youarenext"
            if position == 1
            else f"sound:queue-thereare,number:{position - 1},sound:queue-callswaiting"
        )
        state = replace(call, announcements=call.announcements + 1)
        return Transition(
            state,
            (
                Play(
                    channel_id=call.channel_id,
                    media=media,
                    playback_id=f"{call.bridge_id}-announce-{state.announcements}",
                ),
                StartTimer(name=ANNOUNCE_TIMER, seconds=call.announce_seconds),
            ),
        )

    def _ring(
        self, call: QueueCall, agents: tuple[AgentLeg, ...], timeout: float, now: datetime
    ) -> Transition[AcdCall]:
        if call.phase not in ("joining", "waiting") or call.callback_asked:
            # Too late (the caller asked for a callback): the dispatcher hears of it anyway.
            failed = tuple(
                AgentLegFailed(waiter_id=call.waiter_id, agent_id=a.agent_id) for a in agents
            )
            return Transition(call, failed)
        legs = tuple(
            (a.agent_id, f"{call.bridge_id}-{call.leg_count + i}") for i, a in enumerate(agents)
        )
        originates = tuple(
            Originate(
                channel_id=leg,
                endpoint=self.policy.agent_endpoint(agent.account),
                caller_id=call.number,
                timeout_seconds=max(1, int(timeout + 0.999)),
                app_args=(LEG_ARG, call.call_id),
            )
            for agent, (_, leg) in zip(agents, legs, strict=True)
        )
        ringing = tuple(
            call.event(CallRinging, now, leg=f"{agent.agent_id} {agent.account} {leg}")
            for agent, (_, leg) in zip(agents, legs, strict=True)
        )
        state = replace(call, legs=call.legs + legs, leg_count=call.leg_count + len(legs))
        return Transition(state, (Concurrently(commands=originates), *ringing))

    def _stop_ringing(self, call: QueueCall, agent_ids: tuple[str, ...]) -> Transition[AcdCall]:
        hangups = tuple(Hangup(channel_id=leg) for agent, leg in call.legs if agent in agent_ids)
        state = call.without_legs(agent_ids)
        return Transition(state, (Concurrently(commands=hangups),) if hangups else ())

    def _agent_answered(self, call: QueueCall, agent_id: str, now: datetime) -> Transition[AcdCall]:
        leg = dict(call.legs)[agent_id]
        losers = tuple(
            Hangup(channel_id=other, reason="answered_elsewhere")
            for agent, other in call.legs
            if agent != agent_id
        )
        talking = replace(
            call, phase="talking", legs=(), agent_id=agent_id, agent_leg=leg, answered_at=now
        )
        bridged = (call.channel_id, leg)
        # The dispatcher hears of the answer first: under load the ARI round trips that
        # follow would otherwise count as waiting time (and as a ringing agent).
        return Transition(
            talking,
            (
                AgentAnswered(waiter_id=call.waiter_id, agent_id=agent_id),
                call.event(CallAnswered, now, leg=agent_id),
                Concurrently(
                    commands=(*losers, StopMoh(bridge_id=call.bridge_id)),
                ),
                AddToBridge(bridge_id=call.bridge_id, channel_ids=(leg,)),
                call.event(CallBridged, now, bridge_id=call.bridge_id, channel_ids=list(bridged)),
            ),
        )

    @staticmethod
    def _failed_leg(call: QueueCall, event: CallEvent) -> tuple[str, bool] | None:
        """(agent, busy) of a leg that ended unanswered or could not be placed."""
        if isinstance(event, CommandFailed) and isinstance(event.command, Originate):
            agent_id = call.leg_of(event.command.channel_id)
            return (agent_id, False) if agent_id is not None else None
        agent_id = call.leg_of(ended_channel(event))
        if agent_id is None:
            return None
        return agent_id, leg_outcome(event) == "busy"

    def _leave_with(self, call: QueueCall, media: str) -> Transition[AcdCall]:
        """Stop ringing, play ``media``, then hang up (at the latest after the goodbye timer)."""
        hangups = tuple(Hangup(channel_id=leg) for _, leg in call.legs)
        return Transition(
            replace(call, phase="leaving", legs=()),
            (
                Concurrently(commands=(*hangups, StopMoh(bridge_id=call.bridge_id))),
                Play(channel_id=call.channel_id, media=media, playback_id=f"{call.bridge_id}-bye"),
                StartTimer(name=GOODBYE_TIMER, seconds=self.policy.goodbye_seconds),
            ),
        )

    def _overflow(self, call: QueueCall, destination: str) -> Transition[AcdCall]:
        endpoint, variables = self.policy.endpoint(destination)
        leg = f"{call.bridge_id}-{call.leg_count}"
        hangups = tuple(Hangup(channel_id=other) for _, other in call.legs)
        state = replace(
            call, phase="forwarding", legs=(), agent_leg=leg, leg_count=call.leg_count + 1
        )
        return Transition(
            state,
            (
                *((Concurrently(commands=hangups),) if hangups else ()),
                Originate(
                    channel_id=leg,
                    endpoint=endpoint,
                    caller_id=call.number,
                    app_args=(LEG_ARG, call.call_id),
                    variables=variables,
                ),
            ),
        )

    def _forward_step(
        self, call: QueueCall, event: CallEvent, now: datetime
    ) -> Transition[AcdCall]:
        """The caller overflowed to a number or URI: bridge it when it answers."""
        if call.answered_at is None and answered_leg(event) == call.agent_leg:
            assert call.agent_leg is not None
            return Transition(
                replace(call, answered_at=now),
                (
                    StopMoh(bridge_id=call.bridge_id),
                    AddToBridge(bridge_id=call.bridge_id, channel_ids=(call.agent_leg,)),
                    call.event(CallAnswered, now, leg=call.agent_leg),
                ),
            )
        failed_originate = isinstance(event, CommandFailed) and isinstance(event.command, Originate)
        if failed_originate or ended_channel(event) == call.agent_leg:
            disposition: CallDisposition = "answered" if call.answered_at else "failed"
            return self._end(call, now, disposition, "normal")
        return Transition(call)

    def _caller_gone(self, call: QueueCall, now: datetime) -> Transition[AcdCall]:
        if call.phase == "talking":
            return self._end(call, now, "answered", None)
        if call.phase == "forwarding":
            return self._end(call, now, "answered" if call.answered_at else "abandoned", None)
        # A caller who asked for a callback is not abandoning: the place is kept; one who
        # is being sent off has left the queue already.
        leave = call.phase in ("joining", "waiting") and not call.callback_asked
        return self._end(call, now, "abandoned", None, leave=leave)

    def _end(
        self,
        call: QueueCall,
        now: datetime,
        disposition: CallDisposition,
        caller_reason: HangupReason | None,
        *,
        leave: bool = False,
    ) -> Transition[AcdCall]:
        hangups: list[AriCommand] = [Hangup(channel_id=leg) for _, leg in call.legs]
        also: list[Command] = []
        if call.agent_leg is not None:
            hangups.append(Hangup(channel_id=call.agent_leg))
        if caller_reason is not None:
            hangups.append(Hangup(channel_id=call.channel_id, reason=caller_reason))
        if call.phase == "talking" and call.agent_id is not None:
            also.append(TalkOver(waiter_id=call.waiter_id, agent_id=call.agent_id))
        elif leave:
            also.append(LeaveQueue(waiter_id=call.waiter_id))
        commands = teardown(
            call.event,
            now,
            bridge_id=call.bridge_id,
            hangups=hangups,
            started_at=call.started_at,
            answered_at=call.answered_at,
            disposition=disposition,
            also=also,
        )
        return Transition(call, commands, True)

    # Callbacks

    def open_callback(
        self,
        now: datetime,
        *,
        call_id: str,
        waiter_id: str,
        agent: AgentLeg,
        number: str,
        order: str,
        timeout_seconds: float,
    ) -> Transition[AcdCall]:
        """The first transition of a callback (``call_id``: its first leg's channel id)."""
        call = CallbackCall(
            channel_id=call_id,
            sip_call_id=None,
            started_at=now,
            waiter_id=waiter_id,
            agent_id=agent.agent_id,
            agent_account=agent.account,
            number=number,
            order=order,
            ring_seconds=timeout_seconds,
        )
        first = self._callback_leg(call, call_id, agent_side=order == "agent_first")
        return Transition(
            call,
            (
                CreateBridge(bridge_id=call.bridge_id, name=f"callback {number}"),
                call.event(CallStarted, now, caller=agent.account, callee=number),
                first,
            ),
        )

    def _callback_leg(self, call: CallbackCall, leg: str, *, agent_side: bool) -> Originate:
        variables: dict[str, str] = {}
        if agent_side:
            endpoint = self.policy.agent_endpoint(call.agent_account)
            caller_id, timeout = call.number, call.ring_seconds
        else:
            endpoint, variables = self.policy.endpoint(call.number)
            caller_id, timeout = self.policy.callback_caller_id, self.policy.callback_ring_seconds
        return Originate(
            channel_id=leg,
            endpoint=endpoint,
            caller_id=caller_id,
            timeout_seconds=max(1, int(timeout + 0.999)),
            app_args=(LEG_ARG, call.call_id),
            variables=variables,
        )

    def _callback_step(
        self, call: CallbackCall, event: CallEvent, now: datetime
    ) -> Transition[AcdCall]:
        gone = ended_channel(event)
        originate_failed = isinstance(event, CommandFailed) and isinstance(event.command, Originate)
        if isinstance(event, RuntimeStopping):
            if call.phase == "talking":
                return Transition(call, finished=True)
            return self._callback_end(call, now, self._missed(call, agent_side=True))
        if isinstance(event, StopRinging) and call.phase != "talking":
            # A supervisor removed or sent elsewhere the request: the dispatcher knows.
            return self._callback_end(call, now, ())
        if call.phase == "talking":
            if gone in (call.agent_leg, call.caller_leg):
                return self._callback_end(
                    call, now, (TalkOver(waiter_id=call.waiter_id, agent_id=call.agent_id),)
                )
            return Transition(call)
        current = call.channel_id if call.phase == "first" else call.second_leg
        first_is_agent = call.order == "agent_first"
        if answered_leg(event) == current and current is not None:
            if call.phase == "first":
                second = f"{call.bridge_id}-second"
                state = replace(call, phase="second", second_leg=second)
                return Transition(
                    state,
                    (
                        AddToBridge(bridge_id=call.bridge_id, channel_ids=(call.channel_id,)),
                        StartMoh(bridge_id=call.bridge_id),
                        self._callback_leg(state, second, agent_side=not first_is_agent),
                    ),
                )
            talking = replace(call, phase="talking", answered_at=now)
            return Transition(
                talking,
                (
                    AgentAnswered(waiter_id=call.waiter_id, agent_id=call.agent_id),
                    call.event(CallAnswered, now, leg=call.number),
                    StopMoh(bridge_id=call.bridge_id),
                    AddToBridge(bridge_id=call.bridge_id, channel_ids=(current,)),
                    call.event(
                        CallBridged,
                        now,
                        bridge_id=call.bridge_id,
                        channel_ids=[call.channel_id, current],
                    ),
                ),
            )
        if gone == current or (originate_failed and gone is None):
            ringing_agent = (call.phase == "first") == first_is_agent
            return self._callback_end(
                call, now, self._missed(call, agent_side=ringing_agent, event=event)
            )
        if gone == call.channel_id:  # the first side hung up while the second was rung
            return self._callback_end(call, now, self._missed(call, agent_side=first_is_agent))
        return Transition(call)

    @staticmethod
    def _missed(
        call: CallbackCall, *, agent_side: bool, event: CallEvent | None = None
    ) -> tuple[Command, ...]:
        if agent_side:
            busy = event is not None and leg_outcome(event) == "busy"
            return (AgentLegFailed(waiter_id=call.waiter_id, agent_id=call.agent_id, busy=busy),)
        return (CallbackMissed(waiter_id=call.waiter_id, agent_id=call.agent_id),)

    def _callback_end(
        self, call: CallbackCall, now: datetime, also: tuple[Command, ...]
    ) -> Transition[AcdCall]:
        legs = [leg for leg in (call.channel_id, call.second_leg) if leg]
        commands = teardown(
            call.event,
            now,
            bridge_id=call.bridge_id,
            hangups=[Hangup(channel_id=leg) for leg in legs],
            started_at=call.started_at,
            answered_at=call.answered_at,
            disposition="answered" if call.answered_at else "no_answer",
            also=also,
        )
        return Transition(call, commands, True)
