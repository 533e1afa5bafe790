"""The ring race: a panel's call rings every device of the flat; the first answer wins.

One machine per panel call; it owns the panel channel, one originated leg per device and the
bridge. Events reach it one at a time in Asterisk's order, so "two legs answer at once" is
simply two answers in a row: the first wins, the second is hung up as answered elsewhere.
Nothing stays ringing: a win, the panel hanging up, the ring timeout and shutdown all hang
up every leg still alive, at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import ClassVar, Literal

from ari_apps.legs import (
    LEG_ARG,
    ROUTE_HEADER,
    StasisCall,
    answered_leg,
    leg_outcome,
    teardown,
)
from ari_apps.machine import Transition
from ari_apps.models import (
    AddToBridge,
    Answer,
    AriCommand,
    CallEvent,
    ChannelStateChange,
    Command,
    CommandFailed,
    Concurrently,
    Hangup,
    HangupReason,
    InOrder,
    Originate,
    RuntimeStopping,
    StartTimer,
    StasisStart,
    TimerFired,
    ended_channel,
)
from ari_apps.multiring.models import (
    CancelPushes,
    FlatResolved,
    LookupFlat,
    MultiringPolicy,
    RequestPush,
)
from softswitch.directory.models import FlatDevice, FlatLookup
from softswitch.events.models import (
    CallAnswered,
    CallBridged,
    CallDisposition,
    LegOutcome,
    MultiringLegEnded,
    MultiringLegRinging,
    MultiringStarted,
    MultiringTimeout,
    MultiringWon,
    PushRequested,
)

APP = "multiring"
RING_TIMER = "ring"
PUSH_WAIT_HEADER = "X-Softswitch-Push-Wait"

Phase = Literal["looking_up", "ringing", "connected"]
LegState = Literal["dialing", "ringing", "answered", "ended"]


@dataclass(frozen=True)
class Leg:
    channel_id: str
    device: FlatDevice
    state: LegState = "dialing"

    @property
    def alive(self) -> bool:
        return self.state != "ended"


@dataclass(frozen=True, kw_only=True)
class MultiringCall(StasisCall):
    app: ClassVar[str] = APP
    panel_account: str
    dialled: str
    phase: Phase = "looking_up"
    panel_id: str = ""
    building: str = ""
    flat_number: str = ""
    caller_name: str = ""
    legs: tuple[Leg, ...] = ()
    winner: str | None = None
    answered_at: datetime | None = None
    fallback_used: bool = False

    def leg(self, channel_id: str) -> Leg | None:
        return next((leg for leg in self.legs if leg.channel_id == channel_id), None)

    def with_leg(self, channel_id: str, state: LegState) -> MultiringCall:
        legs = tuple(
            replace(leg, state=state) if leg.channel_id == channel_id else leg for leg in self.legs
        )
        return replace(self, legs=legs)


class MultiringMachine:
    def __init__(self, policy: MultiringPolicy) -> None:
        self.policy = policy

    def start(self, event: StasisStart, now: datetime) -> Transition[MultiringCall]:
        # Stasis args: the dialled number, then the route's app_args; app_args[0] names the
        # flat when the keypad entry is not the flat number itself.
        dialled = event.args[1] if len(event.args) > 1 else (event.args or [""])[0]
        call = MultiringCall(
            channel_id=event.channel.id,
            panel_account=event.channel.caller.number,
            dialled=dialled,
            sip_call_id=event.channel.sip_call_id,
            started_at=now,
        )
        return Transition(
            call,
            (
                *call.opening(now, caller=call.panel_account, callee=dialled),
                StartTimer(name=RING_TIMER, seconds=self.policy.ring_seconds),
                LookupFlat(panel_account=call.panel_account, dialled=dialled),
            ),
        )

    def step(
        self, state: MultiringCall, event: CallEvent, now: datetime
    ) -> Transition[MultiringCall]:
        if ended_channel(event) == state.channel_id:
            return self._panel_gone(state, now)
        match event:
            case FlatResolved(lookup=lookup) if state.phase == "looking_up":
                return self._ring_flat(state, lookup, now)
            case TimerFired(name=name) if name == RING_TIMER and state.phase != "connected":
                return self._no_answer(state, now)
            case RuntimeStopping():
                if state.phase == "connected":
                    return Transition(state, finished=True)  # the next process adopts the bridge
                return self._end(state, now, "failed", panel_reason="congestion")
            case CommandFailed(command=Originate(channel_id=channel_id)):
                return self._leg_ended(state, channel_id, "failed", now)
            case CommandFailed(command=AddToBridge() | Answer()):
                return self._end(state, now, "failed", panel_reason="congestion")
            case ChannelStateChange(channel=channel) if channel.state == "Ringing":
                return self._leg_ringing(state, channel.id, now)
        if answered := answered_leg(event):
            return self._leg_answered(state, answered, now)
        if (gone := ended_channel(event)) and state.leg(gone):
            return self._leg_ended(state, gone, leg_outcome(event), now)
        return Transition(state)

    def _ring_flat(
        self, state: MultiringCall, lookup: FlatLookup | None, now: datetime
    ) -> Transition[MultiringCall]:
        devices = lookup.flat.devices if lookup and lookup.flat else ()
        if lookup is None or lookup.panel is None or not devices:
            # No such panel, flat or nobody to ring: the panel shows "unknown flat" (404).
            return self._end(state, now, "rejected", panel_reason="unallocated")
        panel = lookup.panel
        assert lookup.flat is not None
        state = replace(
            state,
            phase="ringing",
            panel_id=panel.panel_id,
            building=lookup.flat.building,
            flat_number=lookup.flat.number,
            caller_name=panel.address or panel.panel_id,
        )
        return self._originate(state, devices, now)

    def _originate(
        self, state: MultiringCall, devices: tuple[FlatDevice, ...], now: datetime
    ) -> Transition[MultiringCall]:
        first = len(state.legs)
        legs = tuple(
            Leg(f"{state.bridge_id}-{first + n}", device) for n, device in enumerate(devices)
        )
        originates = tuple(self._originate_leg(state, leg) for leg in legs)
        pushes: list[Command] = []
        for leg in legs:
            if leg.device.kind == "mobile":
                pushes += [
                    RequestPush(
                        call_id=state.call_id,
                        account=leg.device.target,
                        panel_id=state.panel_id,
                        building=state.building,
                        flat_number=state.flat_number,
                        caller_name=state.caller_name,
                        ring_seconds=max(1, round(self.policy.ring_seconds)),
                        requested_at=now,
                    ),
                    state.event(PushRequested, now, account=leg.device.target),
                ]
        state = replace(state, legs=state.legs + legs)
        started = state.event(
            MultiringStarted,
            now,
            panel=state.panel_id,
            flat=f"{state.building}/{state.flat_number}",
            legs=[leg.device.target for leg in legs],
        )
        return Transition(state, (*pushes, Concurrently(commands=originates), started))

    def _originate_leg(self, state: MultiringCall, leg: Leg) -> Originate:
        variables = {"CALLERID(name)": state.caller_name}
        if leg.device.kind == "mobile":
            # Kamailio holds the INVITE until the app registers after its push (tsilo).
            wait = str(max(1, int(self.policy.ring_seconds)))
            variables[f"PJSIP_HEADER(add,{PUSH_WAIT_HEADER})"] = wait
        elif leg.device.kind == "forward" and not leg.device.target.startswith("sip"):
            # A phone number: Kamailio asks the routing service where it goes.
            variables[f"PJSIP_HEADER(add,{ROUTE_HEADER})"] = "forward"
        return Originate(
            channel_id=leg.channel_id,
            endpoint=self.policy.endpoint(leg.device),
            caller_id=f'"{state.caller_name}" <{state.panel_account}>',
            timeout_seconds=max(1, int(self.policy.ring_seconds + 0.999)),
            app_args=(LEG_ARG, state.call_id),
            variables=variables,
        )

    def _leg_ringing(
        self, state: MultiringCall, channel_id: str, now: datetime
    ) -> Transition[MultiringCall]:
        leg = state.leg(channel_id)
        if leg is None or leg.state != "dialing":
            return Transition(state)
        return Transition(
            state.with_leg(channel_id, "ringing"),
            (state.event(MultiringLegRinging, now, leg=leg.device.target),),
        )

    def _leg_answered(
        self, state: MultiringCall, channel_id: str, now: datetime
    ) -> Transition[MultiringCall]:
        leg = state.leg(channel_id)
        if leg is None or leg.state in ("answered", "ended"):
            return Transition(state)
        if state.phase != "ringing":
            # Answered a moment after the winner (or after the end): too late.
            ended = state.with_leg(channel_id, "ended")
            return Transition(
                ended,
                (
                    Hangup(channel_id=channel_id, reason="answered_elsewhere"),
                    state.event(
                        MultiringLegEnded, now, leg=leg.device.target, outcome="answered_elsewhere"
                    ),
                ),
            )
        losers = [other for other in state.legs if other.alive and other.channel_id != channel_id]
        won = replace(
            state.with_leg(channel_id, "answered"),
            phase="connected",
            winner=channel_id,
            answered_at=now,
        )
        for loser in losers:
            won = won.with_leg(loser.channel_id, "ended")
        ring_seconds = (now - state.started_at).total_seconds()
        bridged = (state.channel_id, channel_id)
        commands: list[Command] = [
            Concurrently(
                commands=(
                    InOrder(
                        commands=(
                            Answer(channel_id=state.channel_id),
                            AddToBridge(bridge_id=state.bridge_id, channel_ids=bridged),
                        )
                    ),
                    *(
                        Hangup(channel_id=loser.channel_id, reason="answered_elsewhere")
                        for loser in losers
                    ),
                )
            ),
            CancelPushes(call_id=state.call_id),
            state.event(MultiringWon, now, leg=leg.device.target, ring_seconds=ring_seconds),
            state.event(CallAnswered, now, leg=leg.device.target),
            state.event(CallBridged, now, bridge_id=state.bridge_id, channel_ids=list(bridged)),
            *(
                state.event(
                    MultiringLegEnded, now, leg=loser.device.target, outcome="answered_elsewhere"
                )
                for loser in losers
            ),
        ]
        return Transition(won, commands)

    def _leg_ended(
        self, state: MultiringCall, channel_id: str, outcome: LegOutcome, now: datetime
    ) -> Transition[MultiringCall]:
        leg = state.leg(channel_id)
        if leg is None or not leg.alive:
            return Transition(state)
        if channel_id == state.winner:
            return self._end(state.with_leg(channel_id, "ended"), now, "answered")
        state = state.with_leg(channel_id, "ended")
        ended = state.event(MultiringLegEnded, now, leg=leg.device.target, outcome=outcome)
        if state.phase == "ringing" and not any(other.alive for other in state.legs):
            # Every device failed before the ring time: nobody can answer any more.
            everyone_busy = outcome == "busy"
            after = self._no_answer(state, now, busy=everyone_busy)
            return replace(after, commands=(ended, *after.commands))
        return Transition(state, (ended,))

    def _no_answer(
        self, state: MultiringCall, now: datetime, *, busy: bool = False
    ) -> Transition[MultiringCall]:
        fallback = self.policy.fallback
        waited = (now - state.started_at).total_seconds()
        use_fallback = (
            self.policy.no_answer == "fallback" and fallback is not None and not state.fallback_used
        )
        timeout = state.event(
            MultiringTimeout,
            now,
            ring_seconds=waited,
            outcome="fallback" if use_fallback else "hangup",
        )
        if not use_fallback or fallback is None or state.phase != "ringing":
            disposition: CallDisposition = "busy" if busy else "no_answer"
            after = self._end(state, now, disposition, panel_reason="busy" if busy else "no_answer")
            return replace(after, commands=(timeout, *after.commands))
        hangups = self._hangup_legs(state, "normal")
        for leg in state.legs:
            state = state.with_leg(leg.channel_id, "ended")
        state = replace(state, fallback_used=True)
        after = self._originate(state, (fallback,), now)
        return replace(
            after,
            commands=(
                timeout,
                *hangups,
                StartTimer(name=RING_TIMER, seconds=self.policy.ring_seconds),
                *after.commands,
            ),
        )

    def _panel_gone(self, state: MultiringCall, now: datetime) -> Transition[MultiringCall]:
        disposition: CallDisposition = "answered" if state.winner else "cancelled"
        return self._end(state, now, disposition, panel_reason=None)

    def _hangup_legs(self, state: MultiringCall, reason: HangupReason) -> tuple[Command, ...]:
        alive = tuple(
            Hangup(channel_id=loser.channel_id, reason=reason)
            for loser in state.legs
            if loser.alive
        )
        return (Concurrently(commands=alive),) if alive else ()

    def _end(
        self,
        state: MultiringCall,
        now: datetime,
        disposition: CallDisposition,
        *,
        panel_reason: HangupReason | None = "normal",
    ) -> Transition[MultiringCall]:
        """Hang up whatever is still alive, report the call, finish."""
        hangups: list[AriCommand] = [
            Hangup(channel_id=leg.channel_id, reason="normal") for leg in state.legs if leg.alive
        ]
        if panel_reason is not None:
            hangups.append(Hangup(channel_id=state.channel_id, reason=panel_reason))
        commands = teardown(
            state.event,
            now,
            bridge_id=state.bridge_id,
            hangups=hangups,
            started_at=state.started_at,
            answered_at=state.answered_at,
            disposition=disposition,
            also=(CancelPushes(call_id=state.call_id),),
        )
        return Transition(state, commands, finished=True)
