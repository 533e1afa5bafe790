"""A panel's emergency call: lease a caller number of its city, call 112 through the gateway.

The panel hears ringing at once; the lease picks a number of the panel's city (the one it had
last if still reserved for it); the call leaves towards the city's emergency number at the
city's gateway with that number as caller ID and the panel's location in SIP headers. On
hangup the number goes back to the pool, reserved for this panel's callbacks.

An emergency call is never dropped for a configuration gap: no city, no pool, an exhausted
pool or even an unreachable database still place the call (with the city's fallback number,
the global fallback number or the panel's own caller ID, through the city's or the global
gateway); the gap is reported by the pool (event, metric, log). Only when no gateway at all
is known does the call fail, loudly.
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
    StasisStart,
)
from ari_apps.sos.models import (
    LOCATION_HEADERS,
    LeaseNumber,
    NumberLeased,
    ReleaseNumber,
    SosPolicy,
)
from softswitch.events.models import (
    CallDisposition,
)
from softswitch.sos.models import LeaseOutcome

APP = "sos"

Phase = Literal["leasing", "calling"]


@dataclass(frozen=True, kw_only=True)
class EmergencyCall(OneLegCall):
    app: ClassVar[str] = APP
    panel_account: str
    dialled: str
    phase: Phase = "leasing"
    number: str | None = None
    pool_number: bool = False


class EmergencyCallMachine(OneLegMachine[EmergencyCall]):
    def __init__(self, policy: SosPolicy) -> None:
        self.policy = policy

    def start(self, event: StasisStart, now: datetime) -> Transition[EmergencyCall]:
        call = EmergencyCall(
            channel_id=event.channel.id,
            panel_account=event.channel.caller.number,
            dialled=(event.args or [""])[0],
            sip_call_id=event.channel.sip_call_id,
            started_at=now,
        )
        return Transition(
            call,
            (
                *call.opening(now, caller=call.panel_account, callee=call.dialled),
                LeaseNumber(panel_account=call.panel_account, call_id=call.call_id),
            ),
        )

    def step_app(
        self, state: EmergencyCall, event: CallEvent, now: datetime
    ) -> Transition[EmergencyCall]:
        if isinstance(event, NumberLeased) and state.phase == "leasing":
            return self._call_out(state, event.outcome, now)
        return Transition(state)

    def leg_failed(
        self, state: EmergencyCall, event: CallEvent, now: datetime
    ) -> Transition[EmergencyCall]:
        if leg_outcome(event) == "busy":
            return self.end(state, now, "busy", "busy")
        return self.end(state, now, "failed", "congestion")

    def leg_name(self, state: EmergencyCall) -> str:
        return state.dialled

    def _call_out(
        self, state: EmergencyCall, outcome: LeaseOutcome | None, now: datetime
    ) -> Transition[EmergencyCall]:
        lease = outcome.lease if outcome else None
        gateway = (lease.gateway_uri if lease else None) or self.policy.fallback_gateway_uri
        if gateway is None:
            return self.end(state, now, "failed", "congestion")
        emergency_number = (
            lease.emergency_number if lease and lease.emergency_number else None
        ) or self.policy.emergency_number
        number = lease.number if lease else state.panel_account
        variables: dict[str, str] = {}
        location = lease.location if lease else None
        if location is not None:
            for field, header in LOCATION_HEADERS.items():
                value = getattr(location, field)
                if value:
                    variables[f"PJSIP_HEADER(add,{header})"] = str(value)
        leg_id = f"{state.bridge_id}-0"
        state = replace(
            state,
            phase="calling",
            number=number,
            pool_number=bool(lease and lease.how != "fallback"),
            leg_id=leg_id,
        )
        return Transition(
            state,
            (
                Originate(
                    channel_id=leg_id,
                    endpoint=self.policy.endpoint(gateway, emergency_number),
                    caller_id=number,
                    timeout_seconds=max(1, int(self.policy.ring_seconds)),
                    app_args=(LEG_ARG, state.call_id),
                    variables=variables,
                ),
            ),
        )

    def end(
        self,
        state: EmergencyCall,
        now: datetime,
        disposition: CallDisposition,
        caller_reason: HangupReason | None,
    ) -> Transition[EmergencyCall]:
        release: tuple[Command, ...] = ()
        if state.pool_number and state.number is not None:
            release = (ReleaseNumber(number=state.number, call_id=state.call_id),)
        return Transition(
            state, hang_up(state, now, disposition, caller_reason, also=release), True
        )
