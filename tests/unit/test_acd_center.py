"""The ACD center: callers, agents and supervisors across queues, with time passed in."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acd.center import (
    CALLBACK_ATTEMPTS,
    AcdCenter,
    AgentPhone,
    CallbackAccepted,
    CallbackDue,
    CallbackFailed,
    CancelRing,
    CenterCommand,
    ChangePriority,
    Dismiss,
    FinishCallback,
    ForceAgent,
    Join,
    Leave,
    MaxWaitDue,
    Move,
    OfferAnswered,
    OfferFailed,
    Outcome,
    Overflow,
    Publish,
    Reconfigure,
    Remove,
    RequestCallback,
    RestoreCallbacks,
    RingAgents,
    SaveCallback,
    SendToAgent,
    TalkEnded,
    WakeAt,
    WrapUpDue,
)
from acd.models import Agent, AgentStatus, CallbackRequest, Membership, Queue, Waiter
from softswitch.events.models import AgentStatusChanged, WaiterJoined, WaiterLeft, WaiterMoved

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
S = timedelta(seconds=1)


def agent(agent_id: str, status: AgentStatus = "free", **fields: Any) -> Agent:
    return Agent(
        agent_id=agent_id,
        account=f"1{agent_id[-1]}0{agent_id[-1]}",
        status=status,
        status_since=T0,
        **fields,
    )


def center(
    queues: tuple[Queue, ...] = (Queue(queue_id="sales", strategy="linear", retry_seconds=5),),
    agents: tuple[Agent, ...] = (agent("a1"), agent("a2")),
    members: tuple[tuple[str, str], ...] = (("a1", "sales"), ("a2", "sales")),
) -> AcdCenter:
    memberships = [
        Membership(agent_id=a, queue_id=q, position=i) for i, (a, q) in enumerate(members)
    ]
    return AcdCenter(queues, agents, memberships, rng=random.Random(7))


def waiter(waiter_id: str, queue_id: str = "sales", at: datetime = T0, **fields: Any) -> Waiter:
    return Waiter(
        waiter_id=waiter_id, queue_id=queue_id, waiting_since=at, number=f"+7{waiter_id}", **fields
    )


def rings(outcome: Outcome) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (c.waiter.waiter_id, tuple(a.agent_id for a in c.agents))
        for c in outcome.commands
        if isinstance(c, RingAgents)
    ]


def published(outcome: Outcome, kind: type[Any]) -> list[Any]:
    return [
        c.event for c in outcome.commands if isinstance(c, Publish) and isinstance(c.event, kind)
    ]


def of(outcome: Outcome, kind: type[CenterCommand]) -> list[Any]:
    return [c for c in outcome.commands if isinstance(c, kind)]


def status(acd: AcdCenter, agent_id: str) -> str:
    return acd.snapshot.agents[agent_id].status


def test_a_caller_rings_the_first_agent_is_answered_talks_and_the_agent_wraps_up() -> None:
    acd = center(queues=(Queue(queue_id="sales", strategy="linear", wrap_up_seconds=10),))
    joined = acd.handle(Join(waiter("w1")), T0)
    assert rings(joined) == [("w1", ("a1",))]
    assert [e.position for e in published(joined, WaiterJoined)] == [1]
    assert status(acd, "a1") == "ringing"

    answered = acd.handle(OfferAnswered("w1", "a1"), T0 + 4 * S)
    assert status(acd, "a1") == "busy"
    [left] = published(answered, WaiterLeft)
    assert (left.reason, left.agent, left.waited_seconds) == ("answered", "a1", 4)

    ended = acd.handle(TalkEnded("w1", "a1"), T0 + 64 * S)
    assert status(acd, "a1") == "wrap_up"
    assert [w.at for w in of(ended, WakeAt)] == [T0 + 74 * S]
    acd.handle(WrapUpDue("a1"), T0 + 74 * S)
    assert status(acd, "a1") == "free"
    kpi = acd.queue_kpi["sales"]
    assert (kpi.joined, kpi.answered, kpi.answered_in_service_level, kpi.talk_seconds) == (
        1,
        1,
        1,
        60,
    )


def test_no_answer_moves_the_caller_on_to_the_next_agent_keeping_its_place() -> None:
    acd = center()
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(Join(waiter("w2", at=T0 + S)), T0 + S)  # rings a2
    failed = acd.handle(OfferFailed("w1", "a1"), T0 + 15 * S)
    assert status(acd, "a1") == "wrap_up"  # resting for retry_seconds
    assert rings(failed) == []  # a2 is ringing for w2; w1 is first in line again
    assert acd.position("w1") == 1
    freed = acd.handle(OfferFailed("w2", "a2"), T0 + 16 * S)
    assert rings(freed) == []  # both resting
    back = acd.handle(WrapUpDue("a1"), T0 + 20 * S)
    assert rings(back) == [("w1", ("a1",))]  # longest waiting first
    assert acd.agent_kpi["a1"].missed == 1


def test_ring_all_rings_the_tier_and_the_first_answer_frees_the_others() -> None:
    acd = center(queues=(Queue(queue_id="sales", strategy="ring_all"),))
    assert rings(acd.handle(Join(waiter("w1")), T0)) == [("w1", ("a1", "a2"))]
    answered = acd.handle(OfferAnswered("w1", "a2"), T0 + S)
    assert (status(acd, "a1"), status(acd, "a2")) == ("free", "busy")
    assert of(answered, CancelRing) == [CancelRing("w1", ("a1",))]
    assert acd.agent_kpi["a1"].missed == 0


def test_a_caller_hanging_up_while_ringing_frees_the_agent_for_the_next_caller() -> None:
    acd = center(agents=(agent("a1"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(Join(waiter("w2", at=T0 + S)), T0 + S)
    left = acd.handle(Leave("w1"), T0 + 3 * S)
    assert rings(left) == [("w2", ("a1",))]
    assert of(left, CancelRing) == []  # the caller's call hangs up its own legs
    [abandoned] = [e for e in published(left, WaiterLeft) if e.reason == "abandoned"]
    assert abandoned.call_id == "w1"
    kpi = acd.queue_kpi["sales"]
    assert (kpi.abandoned, kpi.abandoned_short) == (1, 1)  # within abandon_short_seconds


def test_priority_then_longest_waiting_decides_who_is_served() -> None:
    acd = center(agents=(agent("a1", "paused"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("old")), T0)
    acd.handle(Join(waiter("new", at=T0 + S)), T0 + S)
    acd.handle(Join(waiter("vip", at=T0 + 2 * S, priority=5)), T0 + 2 * S)
    assert [acd.position(w) for w in ("vip", "old", "new")] == [1, 2, 3]
    changed = acd.handle(ChangePriority("new", 9, by="sup"), T0 + 3 * S)
    assert [acd.position(w) for w in ("new", "vip", "old")] == [1, 2, 3]
    assert published(changed, AgentStatusChanged) == []
    assert rings(acd.handle(ForceAgent("a1", "unpause"), T0 + 4 * S)) == [("new", ("a1",))]


def test_an_agent_in_two_queues_gets_the_most_deserving_caller_of_both() -> None:
    acd = center(
        queues=(Queue(queue_id="sales"), Queue(queue_id="support")),
        agents=(agent("a1", "paused"),),
        members=(("a1", "sales"), ("a1", "support")),
    )
    acd.handle(Join(waiter("s1", "sales", at=T0 + 5 * S)), T0 + 5 * S)
    acd.handle(Join(waiter("h1", "support", at=T0)), T0 + 5 * S)
    assert rings(acd.handle(ForceAgent("a1", "unpause"), T0 + 6 * S)) == [("h1", ("a1",))]


def test_a_move_keeps_the_wait_time_and_changes_the_order_of_service() -> None:
    acd = center(
        queues=(Queue(queue_id="sales"), Queue(queue_id="support")),
        agents=(agent("a1", "paused"),),
        members=(("a1", "support"),),
    )
    acd.handle(Join(waiter("early", "sales", at=T0)), T0)
    acd.handle(Join(waiter("late", "support", at=T0 + 9 * S)), T0 + 9 * S)
    moved = acd.handle(Move("early", "support", by="sup"), T0 + 10 * S)
    [event] = published(moved, WaiterMoved)
    assert (event.from_queue, event.to_queue, event.by) == ("sales", "support", "sup")
    assert acd.position("early") == 1
    [view] = [v for v in acd.queues_view(T0 + 10 * S) if v.queue.queue_id == "support"]
    assert [(w.waiter_id, w.wait_seconds) for w in view.waiters] == [("early", 10), ("late", 1)]
    assert acd.handle(Move("early", "nowhere"), T0).refused == "no queue nowhere"


def test_removing_a_caller_plays_the_goodbye_and_ringing_stops() -> None:
    acd = center()
    acd.handle(Join(waiter("w1")), T0)
    removed = acd.handle(Remove("w1", by="sup"), T0 + S)
    assert of(removed, CancelRing) == [CancelRing("w1", ("a1",))]
    assert of(removed, Dismiss) == [Dismiss("w1", "sound:vm-goodbye")]
    assert status(acd, "a1") == "free"
    assert "w1" not in acd.waiters
    assert acd.handle(Remove("w1"), T0 + S).refused == "w1 is not waiting"


def test_sending_a_caller_to_a_paused_agent_rings_it_and_the_pause_comes_back_after() -> None:
    acd = center(agents=(agent("a1", "paused", paused_reason="lunch"), agent("a2", "paused")))
    acd.handle(Join(waiter("w1")), T0)
    sent = acd.handle(SendToAgent("w1", "a1", by="sup"), T0 + S)
    assert rings(sent) == [("w1", ("a1",))]
    acd.handle(OfferAnswered("w1", "a1"), T0 + 2 * S)
    acd.handle(TalkEnded("w1", "a1"), T0 + 30 * S)
    back = acd.snapshot.agents["a1"]
    assert (back.status, back.paused_reason, back.calls_taken) == ("paused", "lunch", 1)


def test_a_supervisors_ring_that_fails_returns_the_agent_to_its_status() -> None:
    acd = center(agents=(agent("a1", "offline"), agent("a2", "paused")))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(SendToAgent("w1", "a1"), T0 + S)
    acd.handle(OfferFailed("w1", "a1"), T0 + 20 * S)
    assert status(acd, "a1") == "offline"
    assert acd.position("w1") == 1
    assert acd.handle(SendToAgent("w1", "zz"), T0).refused == "no agent zz"


def test_an_agent_ringing_or_talking_for_the_queue_cannot_be_sent_another_caller() -> None:
    acd = center(agents=(agent("a1"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(Join(waiter("w2")), T0)
    assert acd.handle(SendToAgent("w2", "a1"), T0).refused == "agent a1 is ringing on a queue call"


def test_logging_out_a_ringing_agent_stops_its_ring_and_the_caller_waits_on() -> None:
    acd = center()
    acd.handle(Join(waiter("w1")), T0)
    out = acd.handle(ForceAgent("a1", "logout", by="sup"), T0 + S)
    assert of(out, CancelRing) == [CancelRing("w1", ("a1",))]
    assert status(acd, "a1") == "offline"
    assert rings(out) == [("w1", ("a2",))]


def test_a_pause_of_an_agent_on_a_call_is_refused_with_the_reason() -> None:
    acd = center(agents=(agent("a1"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(OfferAnswered("w1", "a1"), T0)
    assert acd.handle(ForceAgent("a1", "pause"), T0).refused == "agent a1: Pause while busy"


def test_auto_pause_after_n_no_answers() -> None:
    queue = Queue(queue_id="sales", max_no_answers=2, retry_seconds=0)
    acd = center(queues=(queue,), agents=(agent("a1"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(OfferFailed("w1", "a1"), T0 + 15 * S)  # rung again at once: retry 0
    acd.handle(OfferFailed("w1", "a1"), T0 + 30 * S)
    paused = acd.snapshot.agents["a1"]
    assert (paused.status, paused.paused_reason) == ("paused", "no answer")
    assert acd.position("w1") == 1


def test_max_wait_overflows_to_another_queue_keeping_the_wait_time() -> None:
    sales = Queue(queue_id="sales", max_wait_seconds=60, overflow="queue:support")
    acd = center(
        queues=(sales, Queue(queue_id="support")),
        agents=(agent("a1", "paused"),),
        members=(("a1", "sales"),),
    )
    joined = acd.handle(Join(waiter("w1")), T0)
    [wake] = of(joined, WakeAt)
    assert wake == WakeAt(T0 + 60 * S, MaxWaitDue("w1", T0 + 60 * S))
    moved = acd.handle(wake.event, T0 + 60 * S)
    assert [e.to_queue for e in published(moved, WaiterMoved)] == ["support"]
    assert acd.waiters["w1"].waiter.waiting_since == T0
    # A stale wake-up (from before the move) changes nothing.
    assert acd.handle(MaxWaitDue("w1", T0 + 60 * S), T0 + 61 * S).commands == ()


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [("+74951234567", Overflow("w1", "+74951234567")), (None, Dismiss("w1", "sound:bye"))],
)
def test_max_wait_sends_the_caller_to_a_number_or_says_goodbye(
    overflow: str | None, expected: CenterCommand
) -> None:
    queue = Queue(queue_id="sales", max_wait_seconds=30, overflow=overflow, goodbye="sound:bye")
    acd = center(queues=(queue,), agents=(agent("a1", "paused"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    out = acd.handle(MaxWaitDue("w1", T0 + 30 * S), T0 + 30 * S)
    assert of(out, type(expected)) == [expected]
    assert [e.reason for e in published(out, WaiterLeft)] == ["timeout"]
    assert acd.queue_kpi["sales"].timed_out == 1


def test_a_callback_request_keeps_the_place_and_is_offered_when_it_reaches_the_front() -> None:
    queue = Queue(queue_id="sales", callback_enabled=True, callback_order="agent_first")
    acd = center(queues=(queue,), agents=(agent("a1", "paused"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(Join(waiter("w2", at=T0 + S)), T0 + S)
    asked = acd.handle(RequestCallback("w1"), T0 + 30 * S)
    assert of(asked, CallbackAccepted) == [CallbackAccepted("w1")]
    [saved] = of(asked, SaveCallback)
    assert (saved.request.number, saved.request.waiting_since) == ("+7w1", T0)
    assert acd.position("w1") == 1
    offered = acd.handle(ForceAgent("a1", "unpause"), T0 + 40 * S)
    [ring] = of(offered, RingAgents)
    assert (ring.waiter.waiter_id, ring.waiter.callback, ring.callback_order) == (
        "w1",
        True,
        "agent_first",
    )
    done = acd.handle(OfferAnswered("w1", "a1"), T0 + 50 * S)
    assert of(done, FinishCallback) == [FinishCallback("w1", "done")]
    assert acd.queue_kpi["sales"].callbacks_completed == 1


def test_a_callback_is_refused_where_the_queue_takes_none() -> None:
    acd = center(agents=(agent("a1", "paused"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    assert acd.handle(RequestCallback("w1"), T0).refused == "queue sales takes no callback requests"


def test_a_callback_that_misses_the_caller_rests_then_retries_then_gives_up() -> None:
    queue = Queue(queue_id="sales", callback_enabled=True)
    acd = center(queues=(queue,), agents=(agent("a1"),), members=(("a1", "sales"),))
    request = CallbackRequest(
        callback_id="cb1",
        queue_id="sales",
        number="+79130000000",
        waiting_since=T0,
        requested_at=T0,
    )
    now = T0
    out = acd.handle(RestoreCallbacks((request,)), now)
    for attempt in range(1, CALLBACK_ATTEMPTS + 1):
        assert rings(out) == [("cb1", ("a1",))]
        out = acd.handle(CallbackFailed("cb1", "a1"), now)
        assert status(acd, "a1") == "free"
        if attempt < CALLBACK_ATTEMPTS:
            [wake] = of(out, WakeAt)
            assert wake.event == CallbackDue("cb1")
            now = wake.at
            out = acd.handle(wake.event, now)
    assert of(out, FinishCallback) == [FinishCallback("cb1", "failed")]
    assert "cb1" not in acd.waiters


def test_a_phone_busy_elsewhere_is_not_offered_until_its_call_ends() -> None:
    acd = center(agents=(agent("a1"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(OfferFailed("w1", "a1", busy_elsewhere=True), T0 + S)
    busy = acd.snapshot.agents["a1"]
    assert (busy.status, busy.elsewhere, busy.no_answers_in_a_row) == ("busy", True, 0)
    assert rings(acd.handle(AgentPhone("a1", busy=True), T0 + 2 * S)) == []
    assert rings(acd.handle(AgentPhone("a1", busy=False), T0 + 3 * S)) == [("w1", ("a1",))]


def test_the_phone_check_marks_a_free_agent_busy_elsewhere() -> None:
    acd = center(agents=(agent("a1"),), members=(("a1", "sales"),))
    out = acd.handle(AgentPhone("a1", busy=True), T0)
    assert [e.new_status for e in published(out, AgentStatusChanged)] == ["busy"]
    assert rings(acd.handle(Join(waiter("w1")), T0)) == []


def test_reconfiguring_adds_an_agent_and_keeps_the_others_status() -> None:
    acd = center(agents=(agent("a1"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    acd.handle(Join(waiter("w2")), T0)
    out = acd.handle(
        Reconfigure(
            (Queue(queue_id="sales"),),
            (agent("a1"), agent("a3")),
            (
                Membership(agent_id="a1", queue_id="sales"),
                Membership(agent_id="a3", queue_id="sales"),
            ),
        ),
        T0 + S,
    )
    assert status(acd, "a1") == "ringing"  # its runtime status survives the reload
    assert rings(out) == [("w2", ("a3",))]


def test_a_deleted_queue_says_goodbye_to_its_waiting_callers() -> None:
    acd = center(agents=(agent("a1", "paused"),), members=(("a1", "sales"),))
    acd.handle(Join(waiter("w1")), T0)
    out = acd.handle(Reconfigure((), (agent("a1", "paused"),), ()), T0 + S)
    assert of(out, Dismiss) == [Dismiss("w1", "sound:vm-goodbye")]
    assert acd.waiters == {}


def test_stale_answers_are_refused_not_applied() -> None:
    acd = center()
    acd.handle(Join(waiter("w1")), T0)
    assert acd.handle(OfferAnswered("w1", "a2"), T0).refused == "a2 was not ringing for w1"
    assert acd.handle(TalkEnded("w1", "a1"), T0).refused == "w1 was not talking to a1"
    assert acd.handle(Join(waiter("w1")), T0).refused == "w1 is already queued"
    assert acd.handle(Join(waiter("x", "nope")), T0).refused == "no queue nope"


def test_a_callback_in_a_ring_all_queue_reserves_one_agent_not_the_tier() -> None:
    queue = Queue(queue_id="sales", strategy="ring_all", callback_enabled=True)
    acd = center(queues=(queue,))
    request = CallbackRequest(
        callback_id="cb1",
        queue_id="sales",
        number="+79130000000",
        waiting_since=T0,
        requested_at=T0,
    )
    out = acd.handle(RestoreCallbacks((request,)), T0)
    assert rings(out) == [("cb1", ("a1",))]
    assert (status(acd, "a1"), status(acd, "a2")) == ("ringing", "free")
