"""A panel's 112 call as plain function calls: lease, call out, bridge, release; and gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ari_apps.models import (
    AddToBridge,
    Answer,
    Channel,
    CommandFailed,
    Emit,
    Hangup,
    Originate,
    RuntimeStopping,
    StasisStart,
)
from ari_apps.sos.machine import EmergencyCallMachine
from ari_apps.sos.models import LeaseNumber, NumberLeased, ReleaseNumber, SosPolicy
from softswitch.sos.models import Lease, LeaseOutcome, PanelLocation
from tests.unit.test_multiring_machine import ari_commands, destroyed, stasis_start

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MACHINE = EmergencyCallMachine(SosPolicy(fallback_gateway_uri="sip:gw-default.example"))
LEG = "sos-p1-0"
LOCATION = PanelLocation(
    panel_id="door-7",
    account="panel7",
    address="Lenina 5, entrance 2",
    city_id="msk",
    city_name="Moscow",
    fias_code="0c5b2444-70a0-4932-980c-b4dc0d3f02b5",
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def lease(number: str = "+74950000001", **fields: object) -> LeaseOutcome:
    values: dict[str, object] = {
        "number": number,
        "how": "lru",
        "call_id": "p1",
        "panel_account": "panel7",
        "panel_id": "door-7",
        "city_id": "msk",
        "gateway_uri": "sip:gw.msk.example:5060",
        "emergency_number": "112",
        "leased_at": T0,
        "location": LOCATION,
        **fields,
    }
    return LeaseOutcome(reason="leased", lease=Lease.model_validate(values))


def opened() -> StasisStart:
    return StasisStart(
        type="StasisStart",
        application="sos",
        args=["112"],
        channel=Channel(id="p1", caller={"number": "panel7"}),
    )


def test_the_call_leaves_with_the_pool_number_and_the_panel_location() -> None:
    started = MACHINE.start(opened(), at(0))
    assert LeaseNumber(panel_account="panel7", call_id="p1") in started.commands
    calling = MACHINE.step(started.state, NumberLeased(outcome=lease()), at(0.01))
    (originate,) = [c for c in calling.commands if isinstance(c, Originate)]
    assert originate.endpoint == "PJSIP/kamailio/sip:112@gw.msk.example:5060"
    assert originate.caller_id == "+74950000001"
    assert originate.variables == {
        "PJSIP_HEADER(add,X-Panel-Id)": "door-7",
        "PJSIP_HEADER(add,X-Location-Address)": "Lenina 5, entrance 2",
        "PJSIP_HEADER(add,X-Location-City)": "Moscow",
        "PJSIP_HEADER(add,X-Location-FIAS)": "0c5b2444-70a0-4932-980c-b4dc0d3f02b5",
    }
    answered = MACHINE.step(calling.state, stasis_start(LEG, "leg", "p1"), at(5))
    assert ari_commands(answered)[:2] == [
        Answer(channel_id="p1"),
        AddToBridge(bridge_id="sos-p1", channel_ids=("p1", LEG)),
    ]
    ended = MACHINE.step(answered.state, destroyed("p1"), at(65))
    assert ended.finished
    assert Hangup(channel_id=LEG) in ari_commands(ended)
    assert ReleaseNumber(number="+74950000001", call_id="p1") in ended.commands


def test_no_city_or_no_pool_still_calls_out_with_the_fallback() -> None:
    started = MACHINE.start(opened(), at(0))
    fallback = LeaseOutcome(
        reason="no_city",
        lease=Lease(
            number="+74950009999", how="fallback", call_id="p1", panel_account="panel7",
            panel_id="door-7", city_id=None, gateway_uri=None, emergency_number=None,
            leased_at=T0, location=None,
        ),
    )  # fmt: skip
    calling = MACHINE.step(started.state, NumberLeased(outcome=fallback), at(0.01))
    (originate,) = [c for c in calling.commands if isinstance(c, Originate)]
    assert originate.endpoint == "PJSIP/kamailio/sip:112@gw-default.example"
    assert originate.caller_id == "+74950009999"
    ended = MACHINE.step(calling.state, destroyed("p1"), at(3))
    # A fallback number is no pool number: nothing to release.
    assert not any(isinstance(c, ReleaseNumber) for c in ended.commands)


def test_pool_unreachable_calls_out_with_the_panels_own_caller_id() -> None:
    started = MACHINE.start(opened(), at(0))
    calling = MACHINE.step(started.state, NumberLeased(outcome=None), at(0.01))
    (originate,) = [c for c in calling.commands if isinstance(c, Originate)]
    assert originate.caller_id == "panel7"
    assert originate.endpoint == "PJSIP/kamailio/sip:112@gw-default.example"


def test_no_gateway_anywhere_fails_loudly_instead_of_ringing_forever() -> None:
    machine = EmergencyCallMachine(SosPolicy())
    started = machine.start(opened(), at(0))
    failed = machine.step(started.state, NumberLeased(outcome=None), at(0.01))
    assert failed.finished
    assert Hangup(channel_id="p1", reason="congestion") in ari_commands(failed)
    ended = [c.event.model_dump() for c in failed.commands if isinstance(c, Emit)][-1]
    assert ended["disposition"] == "failed"


def test_gateway_busy_or_failing_releases_the_number_and_tells_the_panel() -> None:
    started = MACHINE.start(opened(), at(0))
    calling = MACHINE.step(started.state, NumberLeased(outcome=lease()), at(0.01))
    busy = MACHINE.step(calling.state, destroyed(LEG, cause=17), at(1))
    assert Hangup(channel_id="p1", reason="busy") in ari_commands(busy)
    assert ReleaseNumber(number="+74950000001", call_id="p1") in busy.commands
    originate = next(c for c in calling.commands if isinstance(c, Originate))
    refused = MACHINE.step(calling.state, CommandFailed(command=originate), at(1))
    assert Hangup(channel_id="p1", reason="congestion") in ari_commands(refused)


def test_panel_hanging_up_before_the_lease_answers_releases_nothing() -> None:
    started = MACHINE.start(opened(), at(0))
    ended = MACHINE.step(started.state, destroyed("p1"), at(0.5))
    assert ended.finished
    assert not any(isinstance(c, ReleaseNumber | Originate) for c in ended.commands)


def test_shutdown_keeps_a_connected_emergency_call_up() -> None:
    started = MACHINE.start(opened(), at(0))
    calling = MACHINE.step(started.state, NumberLeased(outcome=lease()), at(0.01))
    answered = MACHINE.step(calling.state, stasis_start(LEG, "leg", "p1"), at(2))
    kept = MACHINE.step(answered.state, RuntimeStopping(), at(3))
    assert kept.finished and ari_commands(kept) == []
