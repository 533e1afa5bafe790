"""A queue call and a callback as plain function calls: what each event makes the call do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ari_apps.acd.machine import AcdCall, AcdMachine, CallbackCall, QueueCall
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
    OverflowTo,
    PositionIs,
    Queued,
    RingAgentsNow,
    StopRinging,
    TalkOver,
)
from ari_apps.machine import Transition
from ari_apps.models import (
    AddToBridge,
    Answer,
    CallEvent,
    Channel,
    ChannelDtmfReceived,
    Command,
    CommandFailed,
    CreateBridge,
    Emit,
    Hangup,
    Originate,
    Play,
    Playback,
    PlaybackFinished,
    StartMoh,
    StartTimer,
    StasisStart,
    StopMoh,
    TimerFired,
)
from tests.unit.test_multiring_machine import destroyed, flatten, state_change

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MACHINE = AcdMachine(AcdPolicy(sip_domain="pbx.test", callback_caller_id="+74950000000"))
BRIDGE = "acd-c1"
A1 = AgentLeg(agent_id="a1", account="1101")
A2 = AgentLeg(agent_id="a2", account="1102")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def start(*args: str) -> StasisStart:
    return StasisStart(
        type="StasisStart",
        application="acd",
        args=list(args),
        channel=Channel(id="c1", caller={"number": "+79131112233"}),
    )


def leg_answered(channel_id: str, call_id: str = "c1") -> StasisStart:
    return StasisStart(
        type="StasisStart", application="acd", args=["leg", call_id], channel=Channel(id=channel_id)
    )


def commands(transition: Transition[AcdCall]) -> list[Command]:
    return [c for c in flatten(transition.commands) if not isinstance(c, Emit)]


def events(transition: Transition[AcdCall]) -> list[str]:
    return [c.event.type for c in transition.commands if isinstance(c, Emit)]


def run(state: AcdCall, *steps: tuple[float, CallEvent]) -> Transition[AcdCall]:
    transition = Transition(state)
    for seconds, event in steps:
        transition = MACHINE.step(transition.state, event, at(seconds))
    return transition


QUEUED = Queued(music_class="jazz", callback_key="1", announce_seconds=0)


def waiting() -> QueueCall:
    opened = MACHINE.start(start("5000", "support", "3"), at(0))
    state = MACHINE.step(opened.state, QUEUED, at(0.01)).state
    assert isinstance(state, QueueCall)
    return state


def ringing(*agents: AgentLeg) -> Transition[AcdCall]:
    return MACHINE.step(waiting(), RingAgentsNow(agents=agents, timeout_seconds=15), at(1))


def test_the_caller_is_answered_bridged_and_queued_with_its_priority_then_hears_music() -> None:
    opened = MACHINE.start(start("5000", "support", "3"), at(0))
    assert commands(opened) == [
        Answer(channel_id="c1"),
        CreateBridge(bridge_id=BRIDGE, name="queue support"),
        AddToBridge(bridge_id=BRIDGE, channel_ids=("c1",)),
        JoinQueue(
            waiter_id="c1",
            queue_id="support",
            priority=3,
            number="+79131112233",
            waiting_since=at(0),
        ),
    ]
    assert events(opened) == ["call.started"]
    queued = MACHINE.step(opened.state, QUEUED, at(0.01))
    assert commands(queued) == [StartMoh(bridge_id=BRIDGE, music_class="jazz")]


def test_a_route_without_args_names_the_queue_by_the_dialled_number() -> None:
    opened = MACHINE.start(start("support"), at(0))
    assert isinstance(opened.state, QueueCall)
    assert (opened.state.queue_id, opened.state.priority) == ("support", 0)


def test_agents_are_rung_through_kamailio_and_the_first_answer_is_bridged() -> None:
    rung = ringing(A1, A2)
    originates = [c for c in commands(rung) if isinstance(c, Originate)]
    assert [(o.channel_id, o.endpoint, o.caller_id) for o in originates] == [
        ("acd-c1-0", "PJSIP/kamailio/sip:1101@pbx.test", "+79131112233"),
        ("acd-c1-1", "PJSIP/kamailio/sip:1102@pbx.test", "+79131112233"),
    ]
    assert all(o.app_args == ("leg", "c1") and o.timeout_seconds == 15 for o in originates)
    answered = MACHINE.step(rung.state, leg_answered("acd-c1-1"), at(5))
    # The dispatcher is told before the ARI round trips, which would count as waiting.
    assert commands(answered) == [
        AgentAnswered(waiter_id="c1", agent_id="a2"),
        Hangup(channel_id="acd-c1-0", reason="answered_elsewhere"),
        StopMoh(bridge_id=BRIDGE),
        AddToBridge(bridge_id=BRIDGE, channel_ids=("acd-c1-1",)),
    ]
    assert events(answered) == ["call.answered", "call.bridged"]
    # The other leg answering in the same instant is not bridged (its hangup is on its way).
    late = MACHINE.step(answered.state, leg_answered("acd-c1-0"), at(5))
    assert commands(late) == []


def test_a_leg_ending_unanswered_is_reported_busy_or_not() -> None:
    rung = ringing(A1, A2)
    busy = MACHINE.step(rung.state, destroyed("acd-c1-0", cause=17), at(2))
    assert commands(busy) == [AgentLegFailed(waiter_id="c1", agent_id="a1", busy=True)]
    timeout = MACHINE.step(busy.state, destroyed("acd-c1-1", cause=19), at(16))
    assert commands(timeout) == [AgentLegFailed(waiter_id="c1", agent_id="a2", busy=False)]
    assert isinstance(timeout.state, QueueCall) and timeout.state.legs == ()
    refused = Originate(channel_id="acd-c1-2", endpoint="PJSIP/kamailio/sip:1101@pbx.test")
    again = MACHINE.step(timeout.state, RingAgentsNow(agents=(A1,), timeout_seconds=15), at(17))
    failed = MACHINE.step(again.state, CommandFailed(command=refused, status=400), at(17))
    assert commands(failed) == [AgentLegFailed(waiter_id="c1", agent_id="a1", busy=False)]


def test_the_caller_hanging_up_while_agents_ring_leaves_the_queue_and_stops_them() -> None:
    gone = MACHINE.step(ringing(A1, A2).state, destroyed("c1"), at(3))
    assert gone.finished
    cmds = commands(gone)
    assert Hangup(channel_id="acd-c1-0") in cmds and Hangup(channel_id="acd-c1-1") in cmds
    assert LeaveQueue(waiter_id="c1") in cmds
    assert events(gone)[-1] == "call.ended"


def test_a_supervisor_stopping_one_ring_hangs_up_that_leg_only() -> None:
    stopped = MACHINE.step(ringing(A1, A2).state, StopRinging(agent_ids=("a1",)), at(3))
    assert commands(stopped) == [Hangup(channel_id="acd-c1-0")]
    # Its end is then not reported as a failed offer: the dispatcher knows already.
    assert commands(MACHINE.step(stopped.state, destroyed("acd-c1-0"), at(3.1))) == []


def test_talk_ends_when_either_side_hangs_up() -> None:
    talking = MACHINE.step(ringing(A1).state, leg_answered("acd-c1-0"), at(5)).state
    agent_gone = MACHINE.step(talking, destroyed("acd-c1-0"), at(65))
    assert agent_gone.finished
    assert TalkOver(waiter_id="c1", agent_id="a1") in commands(agent_gone)
    assert Hangup(channel_id="c1", reason="normal") in commands(agent_gone)
    caller_gone = MACHINE.step(talking, destroyed("c1"), at(65))
    assert TalkOver(waiter_id="c1", agent_id="a1") in commands(caller_gone)
    assert Hangup(channel_id="acd-c1-0") in commands(caller_gone)
    assert LeaveQueue(waiter_id="c1") not in commands(caller_gone)


def test_the_callback_key_books_a_callback_then_the_call_ends_without_leaving_the_queue() -> None:
    asked = MACHINE.step(
        waiting(),
        ChannelDtmfReceived(
            type="ChannelDtmfReceived", application="acd", channel=Channel(id="c1"), digit="1"
        ),
        at(20),
    )
    assert commands(asked) == [AskCallback(waiter_id="c1")]
    booked = MACHINE.step(asked.state, CallbackBooked(), at(20.01))
    assert [type(c) for c in commands(booked)] == [StopMoh, Play, StartTimer]
    done = MACHINE.step(booked.state, playback_finished("acd-c1-bye"), at(23))
    assert done.finished
    assert LeaveQueue(waiter_id="c1") not in commands(done)
    # Hanging up during the confirmation does not leave the queue either.
    hung_up = MACHINE.step(booked.state, destroyed("c1"), at(21))
    assert LeaveQueue(waiter_id="c1") not in commands(hung_up)


def test_a_refused_callback_lets_the_caller_wait_on_and_leave_normally() -> None:
    dtmf = ChannelDtmfReceived(
        type="ChannelDtmfReceived", application="acd", channel=Channel(id="c1"), digit="1"
    )
    refused = run(waiting(), (20, dtmf), (20.01, CallbackRefused()))
    gone = MACHINE.step(refused.state, destroyed("c1"), at(30))
    assert LeaveQueue(waiter_id="c1") in commands(gone)


def playback_finished(playback_id: str) -> PlaybackFinished:
    return PlaybackFinished(
        type="PlaybackFinished", application="acd", playback=Playback(id=playback_id)
    )


def test_a_dismissed_caller_hears_the_goodbye_and_is_hung_up_even_if_playback_is_lost() -> None:
    dismissed = MACHINE.step(ringing(A1).state, DismissCaller(goodbye="sound:bye"), at(5))
    assert Hangup(channel_id="acd-c1-0") in commands(dismissed)
    assert Play(channel_id="c1", media="sound:bye", playback_id="acd-c1-bye") in commands(dismissed)
    over = MACHINE.step(dismissed.state, TimerFired(name="goodbye"), at(15))
    assert over.finished and Hangup(channel_id="c1", reason="normal") in commands(over)


def test_overflow_to_a_number_is_routed_through_kamailio_and_bridged_on_answer() -> None:
    over = MACHINE.step(waiting(), OverflowTo(destination="+74957654321"), at(60))
    [originate] = [c for c in commands(over) if isinstance(c, Originate)]
    assert originate.endpoint == "PJSIP/kamailio/sip:+74957654321@pbx.test"
    assert originate.variables == {"PJSIP_HEADER(add,X-Softswitch-Route)": "forward"}
    answered = MACHINE.step(over.state, leg_answered(originate.channel_id), at(65))
    assert AddToBridge(bridge_id=BRIDGE, channel_ids=(originate.channel_id,)) in commands(answered)
    assert MACHINE.step(answered.state, destroyed(originate.channel_id), at(90)).finished


def test_position_announcements_while_waiting() -> None:
    opened = MACHINE.start(start("5000", "support"), at(0))
    announcing = Queued(music_class="default", callback_key=None, announce_seconds=30)
    queued = MACHINE.step(opened.state, announcing, at(0.01))
    assert StartTimer(name="announce", seconds=30) in commands(queued)
    asked = MACHINE.step(queued.state, TimerFired(name="announce"), at(30))
    assert commands(asked) == [AskPosition(waiter_id="c1")]
    told = MACHINE.step(asked.state, PositionIs(position=3), at(30.01))
    assert commands(told) == [
        Play(
            channel_id="c1",
            media="sound:queue-thereare,number:2,sound:queue-callswaiting",
            playback_id="acd-c1-announce-1",
        ),
        StartTimer(name="announce", seconds=30),
    ]


def callback(order: str = "agent_first") -> Transition[AcdCall]:
    return MACHINE.open_callback(
        at(0),
        call_id="acd-callback-1-w9",
        waiter_id="w9",
        agent=A1,
        number="+79130000009",
        order=order,
        timeout_seconds=20,
    )


def test_a_callback_rings_the_agent_then_the_caller_and_connects_them() -> None:
    opened = callback()
    [first] = [c for c in commands(opened) if isinstance(c, Originate)]
    assert (first.channel_id, first.endpoint, first.caller_id, first.timeout_seconds) == (
        "acd-callback-1-w9",
        "PJSIP/kamailio/sip:1101@pbx.test",
        "+79130000009",
        20,
    )
    agent_up = MACHINE.step(
        opened.state, leg_answered("acd-callback-1-w9", "acd-callback-1-w9"), at(3)
    )
    [second] = [c for c in commands(agent_up) if isinstance(c, Originate)]
    assert (second.endpoint, second.caller_id) == (
        "PJSIP/kamailio/sip:+79130000009@pbx.test",
        "+74950000000",
    )
    assert StartMoh(bridge_id="acd-acd-callback-1-w9", music_class="default") in commands(agent_up)
    # Up comes before the leg enters Stasis, where it can be bridged: not the answer yet.
    up = MACHINE.step(agent_up.state, state_change(second.channel_id, "Up"), at(10))
    assert commands(up) == []
    caller_up = MACHINE.step(up.state, leg_answered(second.channel_id, "acd-callback-1-w9"), at(10))
    assert AgentAnswered(waiter_id="w9", agent_id="a1") in commands(caller_up)
    ended = MACHINE.step(caller_up.state, destroyed(second.channel_id), at(70))
    assert ended.finished and TalkOver(waiter_id="w9", agent_id="a1") in commands(ended)


@pytest.mark.parametrize(
    ("order", "first_fails", "expected"),
    [
        ("agent_first", True, AgentLegFailed(waiter_id="w9", agent_id="a1")),
        ("agent_first", False, CallbackMissed(waiter_id="w9", agent_id="a1")),
        ("caller_first", True, CallbackMissed(waiter_id="w9", agent_id="a1")),
        ("caller_first", False, AgentLegFailed(waiter_id="w9", agent_id="a1")),
    ],
)
def test_a_callback_side_not_answering_is_reported_as_what_it_is(
    order: str, first_fails: bool, expected: Any
) -> None:
    opened = callback(order)
    if first_fails:
        ended = MACHINE.step(opened.state, destroyed("acd-callback-1-w9", cause=19), at(20))
    else:
        up = MACHINE.step(
            opened.state, leg_answered("acd-callback-1-w9", "acd-callback-1-w9"), at(3)
        )
        assert isinstance(up.state, CallbackCall) and up.state.second_leg is not None
        ended = MACHINE.step(up.state, destroyed(up.state.second_leg, cause=19), at(40))
        assert Hangup(channel_id="acd-callback-1-w9") in commands(ended)
    assert ended.finished
    assert expected in commands(ended)


def test_a_callback_stopped_by_a_supervisor_ends_without_reporting_a_miss() -> None:
    stopped = MACHINE.step(callback().state, StopRinging(agent_ids=("a1",)), at(2))
    assert stopped.finished
    assert commands(stopped)[:1] == [Hangup(channel_id="acd-callback-1-w9")]
    assert not [c for c in commands(stopped) if isinstance(c, AgentLegFailed | CallbackMissed)]


def test_agents_rung_before_the_queue_answer_arrives_are_still_bridged() -> None:
    opened = MACHINE.start(start("5000", "support"), at(0))
    rung = MACHINE.step(opened.state, RingAgentsNow(agents=(A1,), timeout_seconds=15), at(0.01))
    answered = MACHINE.step(rung.state, leg_answered("acd-c1-0"), at(2))
    assert AgentAnswered(waiter_id="c1", agent_id="a1") in commands(answered)
