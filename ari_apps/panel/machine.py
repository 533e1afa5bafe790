"""Calls towards an intercom panel: one at a time, a second one waits or hears busy.

A panel handles one SIP call at a time, and an incoming call blocks its keypad. So a call
towards a panel (a resident calling the door, the emergency service calling back) first claims
the panel: granted only when Kamailio knows no call of the panel's account and no other call
of ours holds a claim. Not granted: the caller hears ringing and the claim is retried every
``retry_seconds`` until ``wait_seconds``, then busy. The panel answering busy itself (486) is
retried the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import ClassVar, Literal

from ari_apps.legs import LEG_ARG, OneLegCall, OneLegMachine, hang_up, leg_outcome
from ari_apps.machine import Transition
from ari_apps.models import (
    CallEvent,
    Command,
    HangupReason,
    Originate,
    StartTimer,
    StasisStart,
    TimerFired,
)
from ari_apps.panel.models import ClaimPanel, PanelCallPolicy, PanelClaim, ReleasePanel
from softswitch.events.models import (
    CallDisposition,
    SosCallbackRouted,
)

APP = "panel"
RETRY_TIMER = "retry"
SOS_CALLBACK_ARG = "sos"
RING_TIMER = "ring"

Phase = Literal["claiming", "waiting", "ringing"]


@dataclass(frozen=True, kw_only=True)
class PanelCall(OneLegCall):
    app: ClassVar[str] = APP
    panel_account: str
    caller: str
    phase: Phase = "claiming"
    claimed: bool = False
    attempts: int = 0


class PanelCallMachine(OneLegMachine[PanelCall]):
    def __init__(self, policy: PanelCallPolicy) -> None:
        self.policy = policy

    def start(self, event: StasisStart, now: datetime) -> Transition[PanelCall]:
        # Stasis args: the dialled number, then the route's app_args; app_args[0] names the
        # panel's account when the dialled number is not the account itself.
        dialled = (event.args or [""])[0]
        call = PanelCall(
            channel_id=event.channel.id,
            panel_account=event.args[1] if len(event.args) > 1 else dialled,
            caller=event.channel.caller.number,
            sip_call_id=event.channel.sip_call_id,
            started_at=now,
        )
        # A callback to an emergency-pool number: the routing service adds "sos", city.
        callback: tuple[Command, ...] = ()
        if event.args[2:3] == [SOS_CALLBACK_ARG] and len(event.args) > 3:
            callback = (
                call.event(
                    SosCallbackRouted,
                    now,
                    city=event.args[3],
                    number=dialled,
                    panel=call.panel_account,
                ),
            )
        return Transition(
            call,
            (
                *call.opening(now, caller=call.caller, callee=dialled),
                *callback,
                ClaimPanel(account=call.panel_account, call_id=call.call_id),
            ),
        )

    def step_app(self, state: PanelCall, event: CallEvent, now: datetime) -> Transition[PanelCall]:
        match event:
            case PanelClaim(granted=True) if state.phase == "claiming":
                return self._ring_panel(replace(state, claimed=True), now)
            case PanelClaim(granted=False) if state.phase == "claiming":
                return self._wait_or_busy(state, now)
            case TimerFired(name=name) if name == RETRY_TIMER and state.phase == "waiting":
                return Transition(
                    replace(state, phase="claiming"),
                    (ClaimPanel(account=state.panel_account, call_id=state.call_id),),
                )
            case TimerFired(name=name) if name == RING_TIMER and state.answered_at is None:
                if state.phase == "ringing":
                    return self.end(state, now, "no_answer", "no_answer")
        return Transition(state)

    def leg_failed(
        self, state: PanelCall, event: CallEvent, now: datetime
    ) -> Transition[PanelCall]:
        outcome = leg_outcome(event)
        if outcome == "busy":
            # The panel itself says busy (a call we could not see): wait like for a claim.
            released = replace(state, leg_id=None, claimed=False)
            after = self._wait_or_busy(released, now)
            return replace(after, commands=(*self._release(state), *after.commands))
        disposition: CallDisposition = "no_answer" if outcome == "no_answer" else "failed"
        return self.end(state, now, disposition, "normal")

    def leg_name(self, state: PanelCall) -> str:
        return state.panel_account

    def _ring_panel(self, state: PanelCall, now: datetime) -> Transition[PanelCall]:
        leg_id = f"{state.bridge_id}-{state.attempts}"
        state = replace(state, phase="ringing", leg_id=leg_id, attempts=state.attempts + 1)
        return Transition(
            state,
            (
                Originate(
                    channel_id=leg_id,
                    endpoint=self.policy.endpoint(state.panel_account),
                    caller_id=state.caller,
                    timeout_seconds=max(1, int(self.policy.ring_seconds)),
                    app_args=(LEG_ARG, state.call_id),
                ),
                StartTimer(name=RING_TIMER, seconds=self.policy.ring_seconds),
            ),
        )

    def _wait_or_busy(self, state: PanelCall, now: datetime) -> Transition[PanelCall]:
        waited = (now - state.started_at).total_seconds()
        if waited + self.policy.retry_seconds > self.policy.wait_seconds:
            return self.end(state, now, "busy", "busy")
        return Transition(
            replace(state, phase="waiting"),
            (StartTimer(name=RETRY_TIMER, seconds=self.policy.retry_seconds),),
        )

    def _release(self, state: PanelCall) -> tuple[ReleasePanel]:
        return (ReleasePanel(account=state.panel_account, call_id=state.call_id),)

    def end(
        self,
        state: PanelCall,
        now: datetime,
        disposition: CallDisposition,
        caller_reason: HangupReason | None,
    ) -> Transition[PanelCall]:
        also = self._release(state) if state.claimed else ()
        commands = hang_up(state, now, disposition, caller_reason, also=also)
        return Transition(state, commands, finished=True)
