"""The ring race as plain function calls: answers in every order, hangups, timeouts."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ari_apps.machine import Transition
from ari_apps.models import (
    AddToBridge,
    Answer,
    CallEvent,
    Channel,
    ChannelDestroyed,
    ChannelHangupRequest,
    ChannelStateChange,
    Command,
    CommandFailed,
    Concurrently,
    CreateBridge,
    DestroyBridge,
    Emit,
    Hangup,
    InOrder,
    Originate,
    Ring,
    RuntimeStopping,
    StasisEnd,
    StasisStart,
    TimerFired,
)
from ari_apps.multiring.machine import LEG_ARG, MultiringCall, MultiringMachine
from ari_apps.multiring.models import (
    CancelPushes,
    FlatResolved,
    LookupFlat,
    MultiringPolicy,
    RequestPush,
)
from softswitch.directory.models import Flat, FlatDevice, FlatLookup, Panel

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PANEL = Panel(panel_id="door-1", account="panel1", building="b1", address="Lenina 1")
DEVICES = (
    FlatDevice(kind="sip", target="1001"),
    FlatDevice(kind="mobile", target="m-1002"),
    FlatDevice(kind="sip", target="1003"),
)
LOOKUP = FlatLookup(
    panel=PANEL, flat=Flat(building="b1", number="15", devices=DEVICES), source="database"
)
POLICY = MultiringPolicy(ring_seconds=20, sip_domain="sip.example")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def channel(channel_id: str, state: str = "Ring", **extra: Any) -> Channel:
    return Channel(id=channel_id, state=state, **extra)


def stasis_start(channel_id: str, *args: str, **extra: Any) -> StasisStart:
    return StasisStart(
        type="StasisStart", application="multiring", args=list(args), channel=channel(channel_id)
    )


def destroyed(channel_id: str, cause: int = 16) -> ChannelDestroyed:
    return ChannelDestroyed(
        type="ChannelDestroyed", application="multiring", channel=channel(channel_id), cause=cause
    )


def state_change(channel_id: str, state: str, *, resynced: bool = False) -> ChannelStateChange:
    return ChannelStateChange(
        type="ChannelStateChange",
        application="multiring",
        channel=channel(channel_id, state),
        resynced=resynced,
    )


def panel_start() -> StasisStart:
    return StasisStart(
        type="StasisStart",
        application="multiring",
        args=["15"],
        channel=Channel(
            id="p1",
            caller={"number": "panel1"},
            channelvars={"SIP_CALL_ID": "sip-1"},
        ),
    )


def flatten(commands: Iterable[Command]) -> list[Command]:
    out: list[Command] = []
    for command in commands:
        nested = isinstance(command, Concurrently | InOrder)
        out += flatten(command.commands) if nested else [command]
    return out


def ari_commands(transition: Transition[MultiringCall]) -> list[Command]:
    return [c for c in flatten(transition.commands) if not isinstance(c, Emit)]


def emitted(transition: Transition[MultiringCall]) -> list[str]:
    return [c.event.type for c in transition.commands if isinstance(c, Emit)]


def ringing(machine: MultiringMachine | None = None) -> Transition[MultiringCall]:
    """A call whose three legs are originated."""
    machine = machine or MultiringMachine(POLICY)
    opened = machine.start(panel_start(), at(0))
    return machine.step(opened.state, FlatResolved(lookup=LOOKUP), at(0.05))


def run(
    machine: MultiringMachine,
    transition: Transition[MultiringCall],
    events: Sequence[CallEvent],
    start: float = 1.0,
) -> list[Transition[MultiringCall]]:
    steps = []
    for n, event in enumerate(events):
        assert not transition.finished, f"machine finished before {event}"
        transition = machine.step(transition.state, event, at(start + n * 0.1))
        steps.append(transition)
    return steps


LEGS = ("multiring-p1-0", "multiring-p1-1", "multiring-p1-2")


def test_start_rings_the_panel_at_once_and_looks_up_the_flat() -> None:
    opened = MultiringMachine(POLICY).start(panel_start(), at(0))
    assert ari_commands(opened)[:2] == [
        Ring(channel_id="p1"),
        CreateBridge(bridge_id="multiring-p1", name="multiring 15"),
    ]
    assert LookupFlat(panel_account="panel1", dialled="15") in opened.commands
    assert emitted(opened) == ["call.started"]


def test_app_args_name_the_flat_instead_of_the_keypad_entry() -> None:
    start = panel_start().model_copy(update={"args": ["0015", "15"]})
    opened = MultiringMachine(POLICY).start(start, at(0))
    assert LookupFlat(panel_account="panel1", dialled="15") in opened.commands


def test_every_device_is_originated_through_kamailio_and_mobiles_are_pushed() -> None:
    transition = ringing()
    originates = [c for c in ari_commands(transition) if isinstance(c, Originate)]
    assert [o.channel_id for o in originates] == list(LEGS)
    assert [o.endpoint for o in originates] == [
        "PJSIP/kamailio/sip:1001@sip.example",
        "PJSIP/kamailio/sip:m-1002@sip.example",
        "PJSIP/kamailio/sip:1003@sip.example",
    ]
    assert all(o.app_args == (LEG_ARG, "p1") for o in originates)
    assert all(o.caller_id == '"Lenina 1" <panel1>' for o in originates)
    # Only the mobile leg waits in Kamailio for its app to register after the push.
    assert "PJSIP_HEADER(add,X-Softswitch-Push-Wait)" in originates[1].variables
    assert "PJSIP_HEADER(add,X-Softswitch-Push-Wait)" not in originates[0].variables
    pushes = [c for c in transition.commands if isinstance(c, RequestPush)]
    assert [p.account for p in pushes] == ["m-1002"]
    assert emitted(transition) == ["push.requested", "multiring.started"]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("answer", ["stasis_start", "up_after_reconnect"])
def test_first_answer_wins_whatever_the_order(order: tuple[int, ...], answer: str) -> None:
    machine = MultiringMachine(POLICY)
    transition = ringing(machine)

    def answered(leg: str) -> CallEvent:
        return (
            stasis_start(leg, LEG_ARG, "p1")
            if answer == "stasis_start"
            else state_change(leg, "Up", resynced=True)
        )

    steps = run(machine, transition, [answered(LEGS[n]) for n in order])
    winner = LEGS[order[0]]
    won = steps[0]
    losers = sorted(set(LEGS) - {winner})
    # The bridge does not wait for the losers' hangups: both start at once.
    assert won.commands[0] == Concurrently(
        commands=(
            InOrder(
                commands=(
                    Answer(channel_id="p1"),
                    AddToBridge(bridge_id="multiring-p1", channel_ids=("p1", winner)),
                )
            ),
            *(Hangup(channel_id=leg, reason="answered_elsewhere") for leg in losers),
        )
    )
    assert CancelPushes(call_id="p1") in won.commands
    assert won.state.winner == winner
    assert emitted(won)[:3] == ["multiring.won", "call.answered", "call.bridged"]
    # The others answering a moment later (their hangup crossed their 200 OK) are only
    # hung up again, never bridged: exactly one winner.
    for step in steps[1:]:
        assert not any(isinstance(c, AddToBridge) for c in ari_commands(step))
        assert step.state.winner == winner
        assert not step.finished


def test_two_answers_in_the_same_instant_have_exactly_one_winner() -> None:
    machine = MultiringMachine(POLICY)
    transition = ringing(machine)
    same_instant = at(3)
    first = machine.step(transition.state, stasis_start(LEGS[2], LEG_ARG, "p1"), same_instant)
    second = machine.step(first.state, stasis_start(LEGS[0], LEG_ARG, "p1"), same_instant)
    assert first.state.winner == LEGS[2]
    assert second.state.winner == LEGS[2]
    bridges = [c for t in (first, second) for c in ari_commands(t) if isinstance(c, AddToBridge)]
    assert bridges == [AddToBridge(bridge_id="multiring-p1", channel_ids=("p1", LEGS[2]))]
    # The first answer already hung up the second leg; its own answer repeats nothing harmful.
    assert Hangup(channel_id=LEGS[0], reason="answered_elsewhere") in ari_commands(first)


def test_a_live_up_waits_for_the_legs_stasis_start_before_bridging() -> None:
    # Asterisk reports Up just before the answered leg enters Stasis; bridging it then fails
    # (422) and the call stays silent. Only the StasisStart that follows wins.
    machine = MultiringMachine(POLICY)
    call = ringing(machine).state
    up = machine.step(call, state_change(LEGS[1], "Up"), at(2))
    assert not any(isinstance(c, AddToBridge) for c in ari_commands(up))
    won = machine.step(up.state, stasis_start(LEGS[1], LEG_ARG, "p1"), at(2.001))
    assert AddToBridge(bridge_id="multiring-p1", channel_ids=("p1", LEGS[1])) in ari_commands(won)


def test_a_late_answer_after_the_win_is_hung_up_as_answered_elsewhere() -> None:
    machine = MultiringMachine(POLICY)
    call = ringing(machine).state
    # Leg 0 wins; leg 1 is a leg the machine already ended, so nothing more happens for it;
    # a fresh leg added by the fallback would be the only one to be hung up here.
    won = machine.step(call, stasis_start(LEGS[0], LEG_ARG, "p1"), at(2))
    assert [leg.state for leg in won.state.legs] == ["answered", "ended", "ended"]
    again = machine.step(won.state, stasis_start(LEGS[1], LEG_ARG, "p1"), at(2.01))
    assert again.commands == ()


def test_ringing_legs_are_reported_once() -> None:
    machine = MultiringMachine(POLICY)
    steps = run(
        machine,
        ringing(machine),
        [state_change(LEGS[0], "Ringing")] * 2 + [state_change("x", "Up")],
    )
    assert emitted(steps[0]) == ["multiring.leg_ringing"]
    assert steps[1].commands == () and steps[2].commands == ()


@pytest.mark.parametrize(
    "panel_gone",
    [
        StasisEnd(type="StasisEnd", application="multiring", channel=Channel(id="p1")),
        ChannelHangupRequest(
            type="ChannelHangupRequest", application="multiring", channel=Channel(id="p1")
        ),
    ],
)
def test_panel_hangup_while_ringing_cancels_every_leg_and_pushes(panel_gone: CallEvent) -> None:
    machine = MultiringMachine(POLICY)
    steps = run(machine, ringing(machine), [state_change(LEGS[1], "Ringing"), panel_gone])
    ended = steps[-1]
    assert ended.finished
    assert ari_commands(ended) == [
        *(Hangup(channel_id=leg) for leg in LEGS),
        DestroyBridge(bridge_id="multiring-p1"),
        CancelPushes(call_id="p1"),
    ]
    call_ended = [c.event for c in ended.commands if isinstance(c, Emit)][-1]
    assert call_ended.model_dump()["disposition"] == "cancelled"


def test_panel_hangup_during_origination_cancels_legs_not_yet_ringing() -> None:
    machine = MultiringMachine(POLICY)
    opened = machine.start(panel_start(), at(0))
    resolved = machine.step(opened.state, FlatResolved(lookup=LOOKUP), at(0.01))
    ended = machine.step(resolved.state, destroyed("p1"), at(0.02))
    assert {c.channel_id for c in ari_commands(ended) if isinstance(c, Hangup)} == set(LEGS)
    assert ended.finished


def test_panel_hangup_before_the_directory_answers_ends_without_originating() -> None:
    machine = MultiringMachine(POLICY)
    opened = machine.start(panel_start(), at(0))
    ended = machine.step(opened.state, destroyed("p1"), at(0.1))
    assert ended.finished
    assert not any(isinstance(c, Originate) for c in ari_commands(ended))


def test_after_the_win_either_side_hanging_up_ends_the_call() -> None:
    machine = MultiringMachine(POLICY)
    won = machine.step(ringing(machine).state, stasis_start(LEGS[1], LEG_ARG, "p1"), at(4))
    by_resident = machine.step(won.state, destroyed(LEGS[1]), at(64))
    assert by_resident.finished
    assert Hangup(channel_id="p1") in ari_commands(by_resident)
    ended = [c.event.model_dump() for c in by_resident.commands if isinstance(c, Emit)][-1]
    assert ended["disposition"] == "answered"
    assert ended["talk_seconds"] == 60 and ended["wait_seconds"] == 4
    by_panel = machine.step(won.state, destroyed("p1"), at(10))
    assert Hangup(channel_id=LEGS[1]) in ari_commands(by_panel)
    assert by_panel.finished


def test_no_answer_within_the_ring_time_hangs_up_everything() -> None:
    machine = MultiringMachine(POLICY)
    ended = machine.step(ringing(machine).state, TimerFired(name="ring"), at(20))
    assert ended.finished
    assert Hangup(channel_id="p1", reason="no_answer") in ari_commands(ended)
    assert {c.channel_id for c in ari_commands(ended) if isinstance(c, Hangup)} == {"p1", *LEGS}
    assert emitted(ended) == ["multiring.timeout", "call.ended"]


def test_no_answer_goes_to_the_fallback_once() -> None:
    concierge = FlatDevice(kind="forward", target="sip:concierge@pbx.example")
    machine = MultiringMachine(
        MultiringPolicy(ring_seconds=20, no_answer="fallback", fallback=concierge)
    )
    timed_out = machine.step(ringing(machine).state, TimerFired(name="ring"), at(20))
    assert not timed_out.finished
    commands = ari_commands(timed_out)
    assert {c.channel_id for c in commands if isinstance(c, Hangup)} == set(LEGS)
    fallback = [c for c in commands if isinstance(c, Originate)]
    assert [o.endpoint for o in fallback] == ["PJSIP/kamailio/sip:concierge@pbx.example"]
    answered = machine.step(
        timed_out.state, stasis_start(fallback[0].channel_id, LEG_ARG, "p1"), at(25)
    )
    assert answered.state.winner == fallback[0].channel_id
    again = machine.step(timed_out.state, TimerFired(name="ring"), at(40))
    assert again.finished and Hangup(channel_id="p1", reason="no_answer") in ari_commands(again)


def test_every_device_failing_ends_the_call_before_the_ring_time() -> None:
    machine = MultiringMachine(POLICY)
    steps = run(
        machine,
        ringing(machine),
        [destroyed(LEGS[0], 1), destroyed(LEGS[1], 19), destroyed(LEGS[2], 17)],
    )
    assert [s.finished for s in steps] == [False, False, True]
    outcomes = [
        c.event.model_dump()["outcome"]
        for s in steps
        for c in s.commands
        if isinstance(c, Emit) and c.event.type == "multiring.leg_ended"
    ]
    assert outcomes == ["failed", "no_answer", "busy"]


def test_a_refused_originate_is_a_failed_leg() -> None:
    machine = MultiringMachine(POLICY)
    transition = ringing(machine)
    originate = next(c for c in ari_commands(transition) if isinstance(c, Originate))
    failed = machine.step(transition.state, CommandFailed(command=originate, status=500), at(1))
    assert failed.state.legs[0].state == "ended"
    assert not failed.finished


@pytest.mark.parametrize(
    "lookup",
    [
        None,
        FlatLookup(panel=None, flat=None, source="database"),
        FlatLookup(panel=PANEL, flat=None, source="crm"),
        FlatLookup(panel=PANEL, flat=Flat(building="b1", number="15"), source="database"),
    ],
)
def test_unknown_panel_flat_or_empty_flat_is_refused(lookup: FlatLookup | None) -> None:
    machine = MultiringMachine(POLICY)
    opened = machine.start(panel_start(), at(0))
    ended = machine.step(opened.state, FlatResolved(lookup=lookup), at(0.1))
    assert ended.finished
    assert Hangup(channel_id="p1", reason="unallocated") in ari_commands(ended)


def test_shutdown_ends_ringing_calls_but_leaves_conversations_for_adoption() -> None:
    machine = MultiringMachine(POLICY)
    call = ringing(machine).state
    stopped = machine.step(call, RuntimeStopping(), at(1))
    assert stopped.finished and Hangup(channel_id="p1", reason="congestion") in ari_commands(
        stopped
    )
    won = machine.step(call, stasis_start(LEGS[0], LEG_ARG, "p1"), at(2))
    kept = machine.step(won.state, RuntimeStopping(), at(3))
    assert kept.finished and ari_commands(kept) == []


def test_a_failed_bridge_does_not_leave_anyone_half_connected() -> None:
    machine = MultiringMachine(POLICY)
    won = machine.step(ringing(machine).state, stasis_start(LEGS[0], LEG_ARG, "p1"), at(2))
    add = next(c for c in ari_commands(won) if isinstance(c, AddToBridge))
    failed = machine.step(won.state, CommandFailed(command=add, status=500), at(2.1))
    assert failed.finished
    assert {c.channel_id for c in ari_commands(failed) if isinstance(c, Hangup)} == {"p1", LEGS[0]}


def test_forwards_to_numbers_are_routed_and_to_sip_uris_relayed() -> None:
    forwards = (
        FlatDevice(kind="forward", target="+79161234567"),
        FlatDevice(kind="forward", target="sip:concierge@pbx.example"),
    )
    lookup = LOOKUP.model_copy(update={"flat": Flat(building="b1", number="15", devices=forwards)})
    machine = MultiringMachine(POLICY)
    opened = machine.start(panel_start(), at(0))
    ringing = machine.step(opened.state, FlatResolved(lookup=lookup), at(0.01))
    to_number, to_uri = [c for c in ari_commands(ringing) if isinstance(c, Originate)]
    assert to_number.endpoint == "PJSIP/kamailio/sip:+79161234567@sip.example"
    assert to_number.variables["PJSIP_HEADER(add,X-Softswitch-Route)"] == "forward"
    assert to_uri.endpoint == "PJSIP/kamailio/sip:concierge@pbx.example"
    assert "PJSIP_HEADER(add,X-Softswitch-Route)" not in to_uri.variables
