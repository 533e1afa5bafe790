"""The agent status machine: one event at a time, races as plain cases."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acd.agents import (
    NO_ANSWER,
    AgentEvent,
    Answered,
    BusyElsewhere,
    CallEnded,
    ElsewhereEnded,
    Login,
    Logout,
    OfferRung,
    OfferWithdrawn,
    Pause,
    RingNoAnswer,
    Unpause,
    WrapUpOver,
    phone_settling,
    step,
)
from acd.models import Agent, AgentStatus, Queue

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
SALES = Queue(queue_id="sales", wrap_up_seconds=10, max_no_answers=2, retry_seconds=0)


def agent(status: AgentStatus = "free", **fields: Any) -> Agent:
    return Agent(agent_id="a1", account="1001", status=status, status_since=NOW, **fields)


def test_a_queue_call_rings_is_answered_ends_and_wraps_up() -> None:
    ringing = step(agent(), OfferRung("sales", "w1"), NOW).agent
    assert (ringing.status, ringing.queue_id, ringing.waiter_id) == ("ringing", "sales", "w1")
    busy = step(ringing, Answered(), NOW + 5 * SECOND).agent
    assert (busy.status, busy.calls_taken) == ("busy", 1)
    wrap = step(busy, CallEnded(SALES), NOW + 65 * SECOND).agent
    assert wrap.status == "wrap_up"
    assert wrap.talk_seconds == 60
    assert wrap.last_call_ended_at == NOW + 65 * SECOND
    assert wrap.wrap_up_until == NOW + 75 * SECOND
    assert wrap.queue_id is None
    early = step(wrap, WrapUpOver(), NOW + 70 * SECOND)
    assert early.agent == wrap
    assert early.rejected == "wrap-up not over yet"
    free = step(wrap, WrapUpOver(), NOW + 75 * SECOND).agent
    assert (free.status, free.status_since, free.wrap_up_until) == ("free", NOW + 75 * SECOND, None)


def test_no_wrap_up_time_frees_the_agent_at_once() -> None:
    busy = agent("busy", queue_id="sales")
    after = step(busy, CallEnded(Queue(queue_id="sales")), NOW + 30 * SECOND).agent
    assert (after.status, after.talk_seconds) == ("free", 30)


def test_ring_no_answer_frees_then_auto_pauses_after_n_in_a_row() -> None:
    first = step(agent("ringing", queue_id="sales"), RingNoAnswer(SALES), NOW).agent
    assert (first.status, first.no_answers_in_a_row) == ("free", 1)
    ringing = step(first, OfferRung("sales", "w2"), NOW).agent
    second = step(ringing, RingNoAnswer(SALES), NOW).agent
    assert (second.status, second.paused_reason, second.no_answers_in_a_row) == (
        "paused",
        NO_ANSWER,
        2,
    )
    back = step(second, Unpause(), NOW).agent
    assert (back.status, back.paused_reason, back.no_answers_in_a_row) == ("free", None, 0)


def test_an_answer_resets_the_no_answer_count() -> None:
    ringing = agent("ringing", no_answers_in_a_row=1)
    assert step(ringing, Answered(), NOW).agent.no_answers_in_a_row == 0


def test_max_no_answers_zero_never_pauses() -> None:
    never = Queue(queue_id="q", retry_seconds=0)
    after = step(agent("ringing", no_answers_in_a_row=50), RingNoAnswer(never), NOW).agent
    assert after.status == "free"


def test_a_missed_ring_rests_the_agent_for_the_retry_time_then_frees_it() -> None:
    queue = Queue(queue_id="q", retry_seconds=5)
    rested = step(agent("ringing", queue_id="q", waiter_id="w1"), RingNoAnswer(queue), NOW).agent
    assert (rested.status, rested.wrap_up_until, rested.waiter_id) == (
        "wrap_up",
        NOW + 5 * SECOND,
        None,
    )
    assert step(rested, WrapUpOver(), NOW + 4 * SECOND).rejected == "wrap-up not over yet"
    assert step(rested, WrapUpOver(), NOW + 5 * SECOND).agent.status == "free"


def test_a_withdrawn_ring_frees_the_agent_without_counting_a_miss() -> None:
    ringing = agent("ringing", queue_id="q", waiter_id="w1", no_answers_in_a_row=1)
    after = step(ringing, OfferWithdrawn(), NOW).agent
    assert (after.status, after.no_answers_in_a_row, after.waiter_id) == ("free", 1, None)
    assert step(agent("busy"), OfferWithdrawn(), NOW).rejected == "OfferWithdrawn while busy"


def test_busy_elsewhere_takes_the_agent_out_without_queue_statistics() -> None:
    busy = step(agent(), BusyElsewhere(), NOW).agent
    assert (busy.status, busy.elsewhere) == ("busy", True)
    assert step(busy, CallEnded(SALES), NOW).rejected is not None
    free = step(busy, ElsewhereEnded(), NOW + 60 * SECOND).agent
    assert (free.status, free.elsewhere, free.calls_taken, free.talk_seconds) == (
        "free",
        False,
        0,
        0,
    )
    assert free.last_call_ended_at is None


def test_supervisor_and_agent_controls() -> None:
    paused = step(agent("wrap_up", wrap_up_until=NOW), Pause("lunch"), NOW).agent
    assert (paused.status, paused.paused_reason, paused.wrap_up_until) == ("paused", "lunch", None)
    offline = step(paused, Logout(), NOW).agent
    assert (offline.status, offline.paused_reason) == ("offline", None)
    assert step(offline, Login(), NOW).agent.status == "free"


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("free", Answered()),
        ("free", RingNoAnswer(SALES)),
        ("free", CallEnded(SALES)),
        ("busy", OfferRung("sales", "w1")),
        ("ringing", OfferRung("sales", "w2")),
        ("busy", Pause("lunch")),
        ("ringing", Pause("lunch")),
        ("busy", Logout()),
        ("free", Login()),
        ("free", Unpause()),
        ("paused", BusyElsewhere()),
        ("offline", OfferRung("sales", "w1")),
        ("free", WrapUpOver()),
    ],
)
def test_illegal_events_leave_the_agent_unchanged_and_say_why(
    status: AgentStatus, event: AgentEvent
) -> None:
    before = agent(status)
    after = step(before, event, NOW)
    assert after.agent is before
    assert after.rejected


def test_a_phone_is_settling_only_just_after_a_queue_call_ended() -> None:
    # Kamailio frees the dialog once the BYE went through: a phone that looks busy right
    # after its queue call must not mark the agent busy elsewhere.
    assert not phone_settling(agent(), NOW)
    ended = step(agent("busy", queue_id="sales"), CallEnded(Queue(queue_id="sales")), NOW).agent
    assert phone_settling(ended, NOW + 1.9 * SECOND)
    assert not phone_settling(ended, NOW + 2 * SECOND)
