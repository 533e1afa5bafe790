"""Who is offered to whom: every strategy, tiers, service order, the cross-queue rule, and
the indexed snapshot held to the naive reference."""

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acd.agents import OfferRung, RingNoAnswer, step
from acd.models import STRATEGIES, Agent, AgentStatus, Membership, Queue, Strategy, Waiter
from acd.policy import (
    AcdSnapshot,
    Offer,
    RoundRobinMemory,
    assign,
    assign_naive,
    choose_agents,
    next_waiter,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
NO_MEMORY = RoundRobinMemory()


def agent(agent_id: str, status: AgentStatus = "free", **fields: Any) -> Agent:
    return Agent(
        agent_id=agent_id, account=f"sip-{agent_id}", status=status, status_since=NOW, **fields
    )


def waiter(waiter_id: str, queue_id: str = "q", *, ago: int = 1, priority: int = 0) -> Waiter:
    return Waiter(
        waiter_id=waiter_id, queue_id=queue_id, waiting_since=NOW - ago * MINUTE, priority=priority
    )


def choose(
    strategy: Strategy,
    members: Sequence[Membership],
    agents: Sequence[Agent],
    *,
    memory: RoundRobinMemory = NO_MEMORY,
    seed: int = 1,
    exclude: frozenset[str] = frozenset(),
) -> tuple[tuple[str, ...], RoundRobinMemory]:
    by_id = {m.agent_id: m for m in members}
    return choose_agents(
        Queue(queue_id="q", strategy=strategy),
        [a for a in by_id if a not in exclude],
        by_id,
        {a.agent_id: a for a in agents},
        memory,
        random.Random(seed),
    )


def member(agent_id: str, *, penalty: int = 0, weight: int = 1, position: int = 0) -> Membership:
    return Membership(
        agent_id=agent_id, queue_id="q", penalty=penalty, weight=weight, position=position
    )


# --- service order -------------------------------------------------------------------------


def test_next_waiter_highest_priority_then_longest_waiting_then_id() -> None:
    vip, old, a, b = (
        waiter("vip", ago=1, priority=1),
        waiter("old", ago=5),
        waiter("a"),
        waiter("b"),
    )
    assert next_waiter([old, vip]) == vip
    assert next_waiter([a, old]) == old
    assert next_waiter([b, a]) == a
    assert next_waiter([]) is None


def test_priority_change_and_move_keep_waiting_since_and_change_the_order() -> None:
    early, late = waiter("early", "q", ago=10), waiter("late", "q", ago=2)
    assert next_waiter([early, late]) == early
    boosted = late.with_priority(5)
    assert boosted.waiting_since == late.waiting_since
    assert next_waiter([early, boosted]) == boosted
    # Moved into "r", the long waiter goes ahead of r's own newer caller.
    moved = early.moved_to("r")
    assert moved.waiting_since == early.waiting_since
    assert next_waiter([waiter("local", "r", ago=3), moved]) == moved


def test_a_callback_request_keeps_its_place_and_is_offered_as_a_callback() -> None:
    call_me = replace(waiter("cb", ago=9), callback=True)
    offers, _ = assign(
        [Queue(queue_id="q", strategy="linear")],
        [waiter("new", ago=1), call_me],
        [member("a1")],
        [agent("a1")],
        NOW,
        NO_MEMORY,
        random.Random(1),
    )
    assert offers == [Offer("q", "cb", ("a1",), callback=True)]


# --- strategies ----------------------------------------------------------------------------


def test_ring_all_rings_every_free_agent_of_the_best_tier() -> None:
    members = [member("a3"), member("a1"), member("a2", penalty=1), member("a4")]
    agents = [agent("a1"), agent("a2"), agent("a3"), agent("a4", "busy")]
    assert choose("ring_all", members, agents)[0] == ("a1", "a3")


def test_a_higher_penalty_tier_is_rung_only_when_the_lower_has_nobody_free() -> None:
    members = [member("a1"), member("a2", penalty=1), member("a3", penalty=1)]
    agents = [agent("a1", "paused"), agent("a2"), agent("a3")]
    assert choose("ring_all", members, agents)[0] == ("a2", "a3")
    assert choose("linear", members, agents)[0] == ("a2",)
    assert choose("linear", members, [agent("a1"), *agents[1:]])[0] == ("a1",)


@pytest.mark.parametrize("status", ["offline", "ringing", "busy", "wrap_up", "paused"])
def test_only_free_agents_are_candidates(status: AgentStatus) -> None:
    for strategy in STRATEGIES:
        assert choose(strategy, [member("a1")], [agent("a1", status)])[0] == ()


def test_linear_follows_position_then_id() -> None:
    members = [member("a1", position=3), member("a2", position=1), member("a3", position=1)]
    agents = [agent("a1"), agent("a2"), agent("a3")]
    assert choose("linear", members, agents)[0] == ("a2",)


def test_round_robin_continues_after_the_last_agent_rung_in_that_queue() -> None:
    members = [member("a1"), member("a2"), member("a3")]
    agents = [agent("a1"), agent("a2"), agent("a3")]
    rung: list[str] = []
    memory = RoundRobinMemory({"other": "a1"})
    for _ in range(4):
        (chosen,), memory = choose("round_robin", members, agents, memory=memory)
        rung.append(chosen)
    assert rung == ["a1", "a2", "a3", "a1"]
    assert memory.last_rung == {"other": "a1", "q": "a1"}
    # The next in turn is busy: the one after it.
    busy_a2 = [agent("a1"), agent("a2", "busy"), agent("a3")]
    assert choose("round_robin", members, busy_a2, memory=memory)[0] == ("a3",)


def test_random_is_uniform_over_the_free_tier() -> None:
    members = [member("a1"), member("a2"), member("a3"), member("x", penalty=1)]
    agents = [agent("a1"), agent("a2"), agent("a3"), agent("x")]
    counts = {"a1": 0, "a2": 0, "a3": 0}
    for seed in range(3000):
        counts[choose("random", members, agents, seed=seed)[0][0]] += 1
    assert all(900 < n < 1100 for n in counts.values()), counts


def test_weighted_random_follows_the_weights() -> None:
    members = [member("a1", weight=1), member("a2", weight=3)]
    agents = [agent("a1"), agent("a2")]
    heavy = sum(
        choose("weighted_random", members, agents, seed=s)[0] == ("a2",) for s in range(4000)
    )
    assert 2850 < heavy < 3150


def test_least_recent_rings_the_longest_idle_and_never_called_first() -> None:
    members = [member("a1"), member("a2"), member("a3")]
    agents = [
        agent("a1", last_call_ended_at=NOW - 5 * MINUTE),
        agent("a2", last_call_ended_at=NOW - 9 * MINUTE),
        agent("a3", last_call_ended_at=NOW - MINUTE),
    ]
    assert choose("least_recent", members, agents)[0] == ("a2",)
    assert choose("least_recent", [*members, member("a4")], [*agents, agent("a4")])[0] == ("a4",)


def test_fewest_calls_and_least_talk_time_break_ties_by_id() -> None:
    members = [member("a1"), member("a2"), member("a3")]
    agents = [
        agent("a1", calls_taken=4, talk_seconds=100.0),
        agent("a2", calls_taken=2, talk_seconds=300.0),
        agent("a3", calls_taken=2, talk_seconds=100.0),
    ]
    assert choose("fewest_calls", members, agents)[0] == ("a2",)
    assert choose("least_talk_time", members, agents)[0] == ("a1",)


def test_ring_no_answer_moves_on_to_the_next_agent() -> None:
    queue = Queue(queue_id="q", strategy="linear", max_no_answers=3)
    members = [member("a1", position=1), member("a2", position=2), member("a3", position=3)]
    agents = {a.agent_id: a for a in (agent("a1"), agent("a2"), agent("a3"))}
    tried: list[str] = []
    for _ in range(3):
        candidates = [m.agent_id for m in members if m.agent_id not in tried]
        (chosen,), _ = choose_agents(
            queue, candidates, {m.agent_id: m for m in members}, agents, NO_MEMORY, random.Random()
        )
        tried.append(chosen)
        ringing = step(agents[chosen], OfferRung("q", "w1"), NOW).agent
        agents[chosen] = step(ringing, RingNoAnswer(queue), NOW + 15 * MINUTE).agent
    assert tried == ["a1", "a2", "a3"]
    # Each rests for the queue's retry time before it is offered again.
    assert all(a.status == "wrap_up" and a.no_answers_in_a_row == 1 for a in agents.values())


# --- across queues -------------------------------------------------------------------------


def test_an_agent_in_several_queues_gets_the_most_deserving_caller_across_them() -> None:
    queues = [Queue(queue_id="sales"), Queue(queue_id="support")]
    memberships = [
        Membership(agent_id="a1", queue_id="sales"),
        Membership(agent_id="a1", queue_id="support"),
    ]
    waiters = [waiter("s1", "sales", ago=3), waiter("t1", "support", ago=8)]
    offers, _ = assign(queues, waiters, memberships, [agent("a1")], NOW, NO_MEMORY, random.Random())
    assert offers == [Offer("support", "t1", ("a1",))]
    vip = [*waiters, waiter("s2", "sales", ago=1, priority=2)]
    offers, _ = assign(queues, vip, memberships, [agent("a1")], NOW, NO_MEMORY, random.Random())
    assert offers == [Offer("sales", "s2", ("a1",))]


def test_every_waiter_and_agent_is_offered_at_most_once_per_round() -> None:
    queues = [Queue(queue_id="sales", strategy="linear"), Queue(queue_id="support")]
    memberships = [
        Membership(agent_id="a1", queue_id="sales"),
        Membership(agent_id="a1", queue_id="support"),
        Membership(agent_id="a2", queue_id="sales"),
        Membership(agent_id="a3", queue_id="support"),
    ]
    waiters = [
        waiter("s1", "sales", ago=9),
        waiter("s2", "sales", ago=8),
        waiter("s3", "sales", ago=7),
        waiter("t1", "support", ago=5),
    ]
    agents = [agent("a1"), agent("a2"), agent("a3")]
    offers, _ = assign(queues, waiters, memberships, agents, NOW, NO_MEMORY, random.Random())
    assert offers == [
        Offer("sales", "s1", ("a1",)),
        Offer("sales", "s2", ("a2",)),
        Offer("support", "t1", ("a3",)),
    ]


def test_snapshot_updates_follow_moves_and_priority_changes() -> None:
    queues = [Queue(queue_id="sales"), Queue(queue_id="support")]
    memberships = [Membership(agent_id="a1", queue_id="support")]
    first, second = waiter("s1", "sales", ago=9), waiter("t1", "support", ago=1)
    snapshot = AcdSnapshot.build(queues, [first, second], memberships, [agent("a1", "busy")])
    assert snapshot.next_offer(NO_MEMORY, random.Random())[0] is None
    snapshot = snapshot.with_agents([agent("a1")])
    assert snapshot.next_offer(NO_MEMORY, random.Random())[0] == Offer("support", "t1", ("a1",))
    moved = snapshot.without_waiter("sales", "s1").with_waiter(first.moved_to("support"))
    assert moved.next_offer(NO_MEMORY, random.Random())[0] == Offer("support", "s1", ("a1",))
    boosted = moved.without_waiter("support", "t1").with_waiter(second.with_priority(1))
    assert boosted.next_offer(NO_MEMORY, random.Random())[0] == Offer("support", "t1", ("a1",))
    done = boosted.after(Offer("support", "t1", ("a1",)), NOW)
    assert done.agents["a1"].status == "ringing"
    assert done.next_offer(NO_MEMORY, random.Random())[0] is None


# --- the indexed snapshot decides as the naive reference -----------------------------------

STATUSES: tuple[AgentStatus, ...] = ("free", "free", "free", "busy", "paused", "wrap_up")


@st.composite
def instances(
    draw: st.DrawFn,
) -> tuple[list[Queue], list[Waiter], list[Membership], list[Agent], RoundRobinMemory]:
    queue_ids = [f"q{i}" for i in range(draw(st.integers(1, 4)))]
    queues = [Queue(queue_id=q, strategy=draw(st.sampled_from(STRATEGIES))) for q in queue_ids]
    agent_ids = [f"a{i}" for i in range(draw(st.integers(0, 8)))]
    agents = [
        agent(
            a,
            draw(st.sampled_from(STATUSES)),
            calls_taken=draw(st.integers(0, 3)),
            talk_seconds=float(draw(st.integers(0, 3))),
            last_call_ended_at=draw(st.none() | st.integers(0, 3).map(lambda m: NOW - m * MINUTE)),
        )
        for a in agent_ids
    ]
    memberships = [
        Membership(
            agent_id=a,
            queue_id=q,
            penalty=draw(st.integers(0, 2)),
            weight=draw(st.integers(1, 3)),
            position=draw(st.integers(0, 3)),
        )
        for a in agent_ids
        for q in draw(st.lists(st.sampled_from(queue_ids), unique=True, max_size=3))
    ]
    waiters = [
        waiter(
            f"w{i}",
            draw(st.sampled_from(queue_ids)),
            ago=draw(st.integers(0, 4)),
            priority=draw(st.integers(0, 2)),
        )
        for i in range(draw(st.integers(0, 10)))
    ]
    remembered: list[str] = draw(st.lists(st.sampled_from(queue_ids), unique=True))
    memory = RoundRobinMemory(
        {q: draw(st.sampled_from(agent_ids)) for q in remembered} if agent_ids else {}
    )
    return queues, waiters, memberships, agents, memory


@settings(max_examples=400, deadline=None)
@given(instances(), st.integers(0, 2**16))
def test_fast_assign_decides_as_the_naive_reference(
    instance: tuple[list[Queue], list[Waiter], list[Membership], list[Agent], RoundRobinMemory],
    seed: int,
) -> None:
    queues, waiters, memberships, agents, memory = instance
    fast = assign(queues, waiters, memberships, agents, NOW, memory, random.Random(seed))
    naive = assign_naive(
        {q.queue_id: q for q in queues},
        waiters,
        memberships,
        {a.agent_id: a for a in agents},
        memory,
        random.Random(seed),
    )
    assert fast == naive
    offers, _ = fast
    rung = [agent_id for offer in offers for agent_id in offer.agent_ids]
    assert len(rung) == len(set(rung))
    assert len({o.waiter_id for o in offers}) == len(offers)
