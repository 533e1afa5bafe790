"""One call at a time per panel: claims, waiting, busy, and the call itself, as plain calls."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ari_apps.models import (
    AddToBridge,
    Answer,
    Channel,
    ChannelDestroyed,
    Emit,
    Hangup,
    Originate,
    RuntimeStopping,
    StartTimer,
    StasisStart,
    TimerFired,
)
from ari_apps.panel.machine import PanelCallMachine
from ari_apps.panel.models import ClaimPanel, PanelCallPolicy, PanelClaim, ReleasePanel
from tests.unit.test_multiring_machine import ari_commands, destroyed, stasis_start

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
POLICY = PanelCallPolicy(wait_seconds=10, retry_seconds=2, ring_seconds=30, sip_domain="d")
MACHINE = PanelCallMachine(POLICY)
LEG = "panel-c1-0"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call_start() -> StasisStart:
    return StasisStart(
        type="StasisStart",
        application="panel",
        args=["7001", "panel7"],
        channel=Channel(id="c1", caller={"number": "112"}),
    )


GRANTED = PanelClaim(account="panel7", granted=True)
REFUSED = PanelClaim(account="panel7", granted=False, reason="1 call(s) up")


def test_a_free_panel_is_claimed_then_rung() -> None:
    opened = MACHINE.start(call_start(), at(0))
    assert ClaimPanel(account="panel7", call_id="c1") in opened.commands
    ringing = MACHINE.step(opened.state, GRANTED, at(0.01))
    originate = next(c for c in ringing.commands if isinstance(c, Originate))
    assert originate.endpoint == "PJSIP/kamailio/sip:panel7@d"
    assert originate.channel_id == LEG
    answered = MACHINE.step(ringing.state, stasis_start(LEG, "leg", "c1"), at(3))
    assert ari_commands(answered) == [
        Answer(channel_id="c1"),
        AddToBridge(bridge_id="panel-c1", channel_ids=("c1", LEG)),
    ]
    ended = MACHINE.step(answered.state, destroyed(LEG), at(33))
    assert ended.finished
    assert Hangup(channel_id="c1") in ari_commands(ended)
    assert ReleasePanel(account="panel7", call_id="c1") in ended.commands
    call_ended = [c.event.model_dump() for c in ended.commands if isinstance(c, Emit)][-1]
    assert (call_ended["disposition"], call_ended["talk_seconds"]) == ("answered", 30)


def test_a_busy_panel_is_retried_until_free_never_rung_while_busy() -> None:
    transition = MACHINE.start(call_start(), at(0))
    transition = MACHINE.step(transition.state, REFUSED, at(0.01))
    assert transition.commands == (StartTimer(name="retry", seconds=2),)
    assert not any(isinstance(c, Originate) for c in transition.commands)
    transition = MACHINE.step(transition.state, TimerFired(name="retry"), at(2))
    assert transition.commands == (ClaimPanel(account="panel7", call_id="c1"),)
    transition = MACHINE.step(transition.state, GRANTED, at(2.01))
    assert any(isinstance(c, Originate) for c in transition.commands)


def test_a_panel_busy_for_longer_than_the_wait_gives_busy() -> None:
    transition = MACHINE.start(call_start(), at(0))
    for second in (0, 2, 4, 6):
        transition = MACHINE.step(transition.state, REFUSED, at(second + 0.01))
        assert not transition.finished
        transition = MACHINE.step(transition.state, TimerFired(name="retry"), at(second + 2))
    busy = MACHINE.step(transition.state, REFUSED, at(8.5))
    assert busy.finished
    assert Hangup(channel_id="c1", reason="busy") in ari_commands(busy)
    # It never claimed the panel, so it releases nothing of another call's.
    assert not any(isinstance(c, ReleasePanel) for c in busy.commands)


def test_the_panel_answering_busy_itself_releases_and_waits() -> None:
    transition = MACHINE.start(call_start(), at(0))
    transition = MACHINE.step(transition.state, GRANTED, at(0.01))
    transition = MACHINE.step(transition.state, destroyed(LEG, cause=17), at(0.5))
    assert ReleasePanel(account="panel7", call_id="c1") in transition.commands
    assert StartTimer(name="retry", seconds=2) in transition.commands
    transition = MACHINE.step(transition.state, TimerFired(name="retry"), at(2.5))
    transition = MACHINE.step(transition.state, GRANTED, at(2.6))
    second_leg = next(c for c in transition.commands if isinstance(c, Originate))
    assert second_leg.channel_id == "panel-c1-1"


def test_caller_hanging_up_while_waiting_releases_nothing_and_ends() -> None:
    transition = MACHINE.start(call_start(), at(0))
    transition = MACHINE.step(transition.state, REFUSED, at(0.01))
    ended = MACHINE.step(transition.state, destroyed("c1"), at(1))
    assert ended.finished
    assert not any(isinstance(c, ReleasePanel | Originate) for c in ended.commands)


def test_caller_hanging_up_while_the_panel_rings_cancels_the_leg_and_releases() -> None:
    transition = MACHINE.start(call_start(), at(0))
    transition = MACHINE.step(transition.state, GRANTED, at(0.01))
    ended = MACHINE.step(
        transition.state,
        ChannelDestroyed(type="ChannelDestroyed", application="panel", channel=Channel(id="c1")),
        at(1),
    )
    assert Hangup(channel_id=LEG) in ari_commands(ended)
    assert ReleasePanel(account="panel7", call_id="c1") in ended.commands


def test_ring_timeout_and_shutdown() -> None:
    transition = MACHINE.start(call_start(), at(0))
    ringing = MACHINE.step(transition.state, GRANTED, at(0.01))
    timed_out = MACHINE.step(ringing.state, TimerFired(name="ring"), at(30))
    assert Hangup(channel_id="c1", reason="no_answer") in ari_commands(timed_out)
    stopped = MACHINE.step(ringing.state, RuntimeStopping(), at(1))
    assert stopped.finished and Hangup(channel_id=LEG) in ari_commands(stopped)


def test_a_callback_to_a_pool_number_is_reported_with_its_city() -> None:
    start = call_start().model_copy(update={"args": ["+74950000001", "panel7", "sos", "msk"]})
    opened = MACHINE.start(start, at(0))
    routed = [c.event.model_dump() for c in opened.commands if isinstance(c, Emit)]
    assert routed[1]["type"] == "sos.callback.routed"
    assert (routed[1]["city"], routed[1]["number"], routed[1]["panel"]) == (
        "msk",
        "+74950000001",
        "panel7",
    )
    assert ClaimPanel(account="panel7", call_id="c1") in opened.commands


def test_the_ring_timer_running_out_after_the_answer_changes_nothing() -> None:
    transition = MACHINE.start(call_start(), at(0))
    ringing = MACHINE.step(transition.state, GRANTED, at(0.01))
    answered = MACHINE.step(ringing.state, stasis_start(LEG, "leg", "c1"), at(3))
    late = MACHINE.step(answered.state, TimerFired(name="ring"), at(30))
    assert late.commands == () and not late.finished
    # A second answer event for the same leg (state catch-up after a reconnect) is a no-op.
    again = MACHINE.step(answered.state, stasis_start(LEG, "leg", "c1"), at(31))
    assert again.commands == ()
