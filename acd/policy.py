"""Who is offered to whom: the queue strategies and the cross-queue rule, without I/O.

Service order: a higher priority first, then the longest waiting, then the waiter id (so two
processes decide alike). In each queue only free agents of the lowest penalty tier that has
one are candidates; the queue's strategy picks among them. Across queues the most deserving
waiter of all goes first: an agent in several queues therefore gets the most deserving caller
of its queues, and no waiter is skipped while a free agent of its queue serves someone less
deserving.

``AcdSnapshot`` holds the indexes (waiters in service order per queue, free agents per tier,
queue heads in service order), so the next offer costs one look at the best queue head and
one pick in a tier of that queue; ``assign_naive`` is the readable reference it must match.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import groupby

from acd.models import Agent, Membership, Queue, Waiter

WaitKey = tuple[int, datetime, str]
Tier = tuple[Membership, ...]


def wait_key(waiter: Waiter) -> WaitKey:
    """Sorts waiters in service order: priority, then longest waiting, then id."""
    return (-waiter.priority, waiter.waiting_since, waiter.waiter_id)


def next_waiter(waiters: Iterable[Waiter]) -> Waiter | None:
    return min(waiters, key=wait_key, default=None)


@dataclass(frozen=True, slots=True)
class RoundRobinMemory:
    """The agent last rung by each round_robin queue, so the next ring continues after it."""

    last_rung: Mapping[str, str] = field(default_factory=dict)

    def rung(self, queue_id: str, agent_id: str) -> RoundRobinMemory:
        return RoundRobinMemory({**self.last_rung, queue_id: agent_id})


@dataclass(frozen=True, slots=True)
class Offer:
    """Ring ``agent_ids`` (one, or a tier for ring_all) for a waiter of ``queue_id``."""

    queue_id: str
    waiter_id: str
    agent_ids: tuple[str, ...]
    callback: bool = False


def _pick(
    queue: Queue,
    tier: Tier,
    agents: Mapping[str, Agent],
    memory: RoundRobinMemory,
    rng: random.Random,
) -> tuple[tuple[str, ...], RoundRobinMemory]:
    """The agents to ring from one non-empty tier of free members, sorted by agent id."""
    match queue.strategy:
        case "ring_all":
            return tuple(m.agent_id for m in tier), memory
        case "linear":
            chosen = min(tier, key=lambda m: (m.position, m.agent_id))
        case "round_robin":
            last = memory.last_rung.get(queue.queue_id)
            after = [m for m in tier if last is not None and m.agent_id > last]
            chosen = after[0] if after else tier[0]
            return (chosen.agent_id,), memory.rung(queue.queue_id, chosen.agent_id)
        case "random":
            chosen = rng.choice(tier)
        case "weighted_random":
            chosen = rng.choices(tier, weights=[m.weight for m in tier])[0]
        case "least_recent":
            chosen = min(tier, key=lambda m: _idle_key(agents[m.agent_id]))
        case "fewest_calls":
            chosen = min(tier, key=lambda m: (agents[m.agent_id].calls_taken, m.agent_id))
        case "least_talk_time":
            chosen = min(tier, key=lambda m: (agents[m.agent_id].talk_seconds, m.agent_id))
    return (chosen.agent_id,), memory


def _idle_key(agent: Agent) -> tuple[int, str] | tuple[int, datetime, str]:
    # Never had a call: idle the longest of all.
    if agent.last_call_ended_at is None:
        return (0, agent.agent_id)
    return (1, agent.last_call_ended_at, agent.agent_id)


def choose_agents(
    queue: Queue,
    candidates: Iterable[str],
    memberships: Mapping[str, Membership],
    agents: Mapping[str, Agent],
    memory: RoundRobinMemory,
    rng: random.Random,
) -> tuple[tuple[str, ...], RoundRobinMemory]:
    """The agents to ring for the next caller of ``queue`` and the updated memory.

    ``candidates`` are agent ids (the caller leaves out, say, the agent who just did not
    answer); ``memberships`` are the queue's, by agent id. Nobody free: ``()``.
    """
    free = [
        memberships[agent_id]
        for agent_id in candidates
        if agent_id in memberships
        and (agent := agents.get(agent_id)) is not None
        and agent.status == "free"
    ]
    if not free:
        return (), memory
    best = min(m.penalty for m in free)
    tier = tuple(sorted((m for m in free if m.penalty == best), key=lambda m: m.agent_id))
    return _pick(queue, tier, agents, memory, rng)


def assign_naive(
    queues: Mapping[str, Queue],
    waiters: Iterable[Waiter],
    memberships: Iterable[Membership],
    agents: Mapping[str, Agent],
    memory: RoundRobinMemory,
    rng: random.Random,
) -> tuple[list[Offer], RoundRobinMemory]:
    """The reference round: each waiter in service order takes what its queue offers from
    the agents nobody took yet in this round."""
    by_queue: dict[str, dict[str, Membership]] = {}
    for m in memberships:
        by_queue.setdefault(m.queue_id, {})[m.agent_id] = m
    taken: set[str] = set()
    offers: list[Offer] = []
    for waiter in sorted(waiters, key=wait_key):
        queue = queues.get(waiter.queue_id)
        members = by_queue.get(waiter.queue_id, {})
        if queue is None:
            continue
        candidates = [agent_id for agent_id in members if agent_id not in taken]
        rung, memory = choose_agents(queue, candidates, members, agents, memory, rng)
        if rung:
            taken.update(rung)
            offers.append(Offer(queue.queue_id, waiter.waiter_id, rung, waiter.callback))
    return offers, memory


def _free_tiers(members: Tier, agents: Mapping[str, Agent]) -> tuple[Tier, ...]:
    """``members`` sorted by (penalty, agent id) -> the free ones, one tuple per penalty."""
    free = [m for m in members if agents[m.agent_id].status == "free"]
    return tuple(tuple(tier) for _, tier in groupby(free, key=lambda m: m.penalty))


@dataclass(frozen=True, slots=True)
class AcdSnapshot:
    """The indexed state one decision reads. Every update returns a new snapshot that
    shares all it did not change, so an update costs the queues it touches, not the whole."""

    queues: Mapping[str, Queue]
    agents: Mapping[str, Agent]
    members: Mapping[str, Tier]
    """Per queue: its memberships sorted by (penalty, agent id)."""
    queues_of: Mapping[str, tuple[str, ...]]
    """Per agent: the queues it belongs to."""
    waiting: Mapping[str, tuple[Waiter, ...]]
    """Per queue: its waiters in service order."""
    tiers: Mapping[str, tuple[Tier, ...]]
    """Per queue: its free members, lowest penalty tier first (only non-empty tiers)."""
    heads: tuple[tuple[WaitKey, str], ...]
    """The first waiter's key of every queue that has waiters and a free agent, sorted."""

    @classmethod
    def build(
        cls,
        queues: Iterable[Queue],
        waiters: Iterable[Waiter],
        memberships: Iterable[Membership],
        agents: Iterable[Agent],
    ) -> AcdSnapshot:
        queue_map = {q.queue_id: q for q in queues}
        agent_map = {a.agent_id: a for a in agents}
        grouped: dict[str, list[Membership]] = {}
        queues_of: dict[str, list[str]] = {}
        for m in memberships:
            if m.queue_id in queue_map and m.agent_id in agent_map:
                grouped.setdefault(m.queue_id, []).append(m)
                queues_of.setdefault(m.agent_id, []).append(m.queue_id)
        members = {
            queue_id: tuple(sorted(ms, key=lambda m: (m.penalty, m.agent_id)))
            for queue_id, ms in grouped.items()
        }
        waiting_lists: dict[str, list[Waiter]] = {}
        for w in waiters:
            if w.queue_id in queue_map:
                waiting_lists.setdefault(w.queue_id, []).append(w)
        waiting = {q: tuple(sorted(ws, key=wait_key)) for q, ws in waiting_lists.items()}
        tiers = {q: _free_tiers(ms, agent_map) for q, ms in members.items()}
        heads = tuple(sorted((wait_key(ws[0]), q) for q, ws in waiting.items() if tiers.get(q)))
        return cls(
            queue_map,
            agent_map,
            members,
            {a: tuple(qs) for a, qs in queues_of.items()},
            waiting,
            tiers,
            heads,
        )

    def next_offer(
        self, memory: RoundRobinMemory, rng: random.Random
    ) -> tuple[Offer | None, RoundRobinMemory]:
        """The most deserving waiter that some free agent can take, and whom to ring."""
        if not self.heads:
            return None, memory
        queue_id = self.heads[0][1]
        waiter = self.waiting[queue_id][0]
        rung, memory = _pick(
            self.queues[queue_id], self.tiers[queue_id][0], self.agents, memory, rng
        )
        return Offer(queue_id, waiter.waiter_id, rung, waiter.callback), memory

    def after(self, offer: Offer, now: datetime) -> AcdSnapshot:
        """The snapshot once ``offer`` is out: its waiter gone, its agents ringing."""
        ringing = [
            replace(
                self.agents[agent_id],
                status="ringing",
                status_since=now,
                queue_id=offer.queue_id,
                waiter_id=offer.waiter_id,
            )
            for agent_id in offer.agent_ids
        ]
        return self._updated(ringing, removed=((offer.queue_id, offer.waiter_id),))

    def with_agents(self, agents: Sequence[Agent]) -> AcdSnapshot:
        """Agents whose status or counters changed."""
        return self._updated(agents)

    def with_waiter(self, waiter: Waiter) -> AcdSnapshot:
        """A caller joined (a move or a priority change: ``without_waiter`` the old one first)."""
        return self._updated((), added=(waiter,))

    def without_waiter(self, queue_id: str, waiter_id: str) -> AcdSnapshot:
        """A caller left, was taken, moved away or is re-queued with another priority."""
        return self._updated((), removed=((queue_id, waiter_id),))

    def _updated(
        self,
        agents: Iterable[Agent],
        *,
        added: Iterable[Waiter] = (),
        removed: Iterable[tuple[str, str]] = (),
    ) -> AcdSnapshot:
        agent_map = dict(self.agents)
        touched: set[str] = set()
        for agent in agents:
            agent_map[agent.agent_id] = agent
            touched.update(self.queues_of.get(agent.agent_id, ()))
        tiers = dict(self.tiers)
        for queue_id in touched:
            tiers[queue_id] = _free_tiers(self.members[queue_id], agent_map)
        waiting = dict(self.waiting)
        for queue_id, waiter_id in removed:
            kept = tuple(w for w in waiting.get(queue_id, ()) if w.waiter_id != waiter_id)
            waiting[queue_id] = kept
            touched.add(queue_id)
        for waiter in added:
            if waiter.queue_id in self.queues:
                ws = waiting.get(waiter.queue_id, ())
                waiting[waiter.queue_id] = tuple(sorted((*ws, waiter), key=wait_key))
                touched.add(waiter.queue_id)
        heads = [head for head in self.heads if head[1] not in touched]
        heads += ((wait_key(waiting[q][0]), q) for q in touched if waiting.get(q) and tiers.get(q))
        heads.sort()
        return AcdSnapshot(
            self.queues, agent_map, self.members, self.queues_of, waiting, tiers, tuple(heads)
        )


def assign(
    queues: Iterable[Queue],
    waiters: Iterable[Waiter],
    memberships: Iterable[Membership],
    agents: Iterable[Agent],
    now: datetime,
    memory: RoundRobinMemory,
    rng: random.Random,
) -> tuple[list[Offer], RoundRobinMemory]:
    """One round: every free agent and every waiter in at most one offer, most deserving
    first. Decides exactly as ``assign_naive``."""
    snapshot = AcdSnapshot.build(queues, waiters, memberships, agents)
    offers: list[Offer] = []
    while True:
        offer, memory = snapshot.next_offer(memory, rng)
        if offer is None:
            return offers, memory
        offers.append(offer)
        snapshot = snapshot.after(offer, now)
