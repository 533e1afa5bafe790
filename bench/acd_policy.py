"""ACD decision cost: the next offer with 1,000 agents, 5,000 waiting callers, 100 queues.

Agents belong to 1-3 queues with penalties 0-1; queues mix every strategy; half the agents
are free. Measured: building the snapshot, one ``next_offer`` (the decision), ``after`` (the
update the next decision needs: the waiter gone, the agents ringing), a whole round of
``assign`` from scratch (the baseline a naive dispatcher pays per decision), and the whole
ACD center handling callers joining, answers and talk ends at that scale.

    .venv/bin/python bench/acd_policy.py [--decisions 2000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from acd.center import AcdCenter, CenterEvent, Join, OfferAnswered, Outcome, RingAgents, TalkEnded
from acd.models import STRATEGIES, Agent, AgentStatus, Membership, Queue, Waiter
from acd.policy import AcdSnapshot, RoundRobinMemory, assign

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
STATUSES: tuple[AgentStatus, ...] = ("free", "free", "busy", "wrap_up", "paused", "ringing")


def call_centre(
    rng: random.Random, *, agents: int = 1000, waiters: int = 5000, queues: int = 100
) -> tuple[list[Queue], list[Waiter], list[Membership], list[Agent]]:
    queue_list = [
        Queue(queue_id=f"q{i:03}", strategy=STRATEGIES[i % len(STRATEGIES)]) for i in range(queues)
    ]
    agent_list = [
        Agent(
            agent_id=f"a{i:04}",
            account=f"1{i:04}",
            status=rng.choice(STATUSES),
            status_since=NOW,
            calls_taken=rng.randrange(50),
            talk_seconds=rng.uniform(0, 10_000),
            last_call_ended_at=NOW - timedelta(seconds=rng.randrange(3600)),
        )
        for i in range(agents)
    ]
    memberships = [
        Membership(
            agent_id=a.agent_id,
            queue_id=q.queue_id,
            penalty=rng.randrange(2),
            weight=rng.randint(1, 5),
            position=rng.randrange(100),
        )
        for a in agent_list
        for q in rng.sample(queue_list, rng.randint(1, 3))
    ]
    waiter_list = [
        Waiter(
            waiter_id=f"w{i:05}",
            queue_id=rng.choice(queue_list).queue_id,
            waiting_since=NOW - timedelta(seconds=rng.randrange(1800)),
            priority=rng.choice((0, 0, 0, 1, 5)),
        )
        for i in range(waiters)
    ]
    return queue_list, waiter_list, memberships, agent_list


def center_events(
    queues: list[Queue],
    waiters: list[Waiter],
    memberships: list[Membership],
    agents: list[Agent],
    cycles: int,
) -> dict[str, list[float]]:
    """The whole ACD center at the same scale: every agent logged in and free, the waiters
    join (the first ones are offered at once), then cycles of answer -> talk ended (the agent
    picks the next of ~5,000 waiting callers) -> a new caller joins. Each input is timed with
    everything it does: the decision, status changes, events, wake-ups."""
    free = [replace(a, status="free") for a in agents]
    center = AcdCenter(queues, free, memberships, rng=random.Random(3))
    samples: dict[str, list[float]] = {
        "center: caller joins": [],
        "center: agent answers": [],
        "center: talk ends, next caller offered": [],
    }
    now = NOW

    def timed(name: str, event: CenterEvent) -> Outcome:
        start = time.perf_counter()
        outcome = center.handle(event, now)
        samples[name].append(time.perf_counter() - start)
        return outcome

    ringing: list[tuple[str, str]] = []

    def collect(outcome: Outcome) -> None:
        for command in outcome.commands:
            if isinstance(command, RingAgents):
                ringing.append((command.waiter.waiter_id, command.agents[0].agent_id))

    for waiter in waiters:
        collect(timed("center: caller joins", Join(waiter)))
    for extra in range(1, cycles + 1):
        if not ringing:
            break
        waiter_id, agent_id = ringing.pop(random.randrange(len(ringing)))
        now += timedelta(milliseconds=10)
        timed("center: agent answers", OfferAnswered(waiter_id, agent_id))
        collect(timed("center: talk ends, next caller offered", TalkEnded(waiter_id, agent_id)))
        queue_id = queues[extra % len(queues)].queue_id
        collect(
            timed(
                "center: caller joins",
                Join(
                    Waiter(
                        waiter_id=f"x{extra}",
                        queue_id=queue_id,
                        waiting_since=now,
                    )
                ),
            )
        )
    return samples


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50, p99, max in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e6, p99 * 1e6, ordered[-1] * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(7)
    queues, waiters, memberships, agents = call_centre(rng)
    gc.disable()

    builds: list[float] = []
    for _ in range(20):
        start = time.perf_counter()
        snapshot = AcdSnapshot.build(queues, waiters, memberships, agents)
        builds.append(time.perf_counter() - start)

    decide: list[float] = []
    update: list[float] = []
    memory = RoundRobinMemory()
    choice = random.Random(1)
    base = snapshot
    for _ in range(args.decisions):
        start = time.perf_counter()
        offer, memory = snapshot.next_offer(memory, choice)
        decide.append(time.perf_counter() - start)
        if offer is None:
            # Every free agent is rung: start again from the full snapshot.
            snapshot = base
            continue
        start = time.perf_counter()
        snapshot = snapshot.after(offer, NOW)
        update.append(time.perf_counter() - start)

    rounds: list[float] = []
    offers = 0
    for _ in range(10):
        start = time.perf_counter()
        result, _ = assign(queues, waiters, memberships, agents, NOW, RoundRobinMemory(), choice)
        rounds.append(time.perf_counter() - start)
        offers = len(result)
    center_samples = center_events(queues, waiters, memberships, agents, args.decisions)
    gc.enable()

    free = sum(a.status == "free" for a in agents)
    print(
        f"{len(agents)} agents ({free} free), {len(waiters)} waiters, {len(queues)} queues, "
        f"{len(memberships)} memberships; round = {offers} offers"
    )
    print(f"{'operation':<38}{'p50 µs':>10}{'p99 µs':>10}{'max µs':>10}")
    for name, samples in (
        ("snapshot build", builds),
        ("next offer (decision)", decide),
        ("after (waiter gone, agents ringing)", update),
        ("whole round: assign from scratch", rounds),
        *center_samples.items(),
    ):
        p50, p99, worst = percentiles(samples)
        print(f"{name:<38}{p50:>10.1f}{p99:>10.1f}{worst:>10.1f}")


if __name__ == "__main__":
    main()
