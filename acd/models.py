"""What the ACD decides about: queues, agents, their memberships and the callers waiting.

Frozen dataclasses with slots rather than pydantic models: the policy reads their fields
thousands of times per round, and these types are built by our own store, not parsed from
outside payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, get_args

Strategy = Literal[
    "ring_all",
    "linear",
    "round_robin",
    "random",
    "weighted_random",
    "least_recent",
    "fewest_calls",
    "least_talk_time",
]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)

AgentStatus = Literal["offline", "free", "ringing", "busy", "wrap_up", "paused"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Queue:
    """A queue's settings; ``max_no_answers`` 0 never pauses an agent for not answering."""

    queue_id: str
    strategy: Strategy = "ring_all"
    ring_timeout_seconds: float = 15.0
    max_wait_seconds: float | None = None
    overflow: str | None = None
    wrap_up_seconds: float = 0.0
    max_no_answers: int = 0
    music_class: str = "default"
    callback_enabled: bool = False
    service_level_seconds: float = 20.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """An agent in a queue: the lowest ``penalty`` tier with a free agent is rung first;
    ``weight`` counts for weighted_random, ``position`` for linear."""

    agent_id: str
    queue_id: str
    penalty: int = 0
    weight: int = 1
    position: int = 0

    def __post_init__(self) -> None:
        if self.weight < 1:
            raise ValueError(f"weight of {self.agent_id} in {self.queue_id} must be >= 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """An agent and the counters the strategies read.

    ``queue_id``/``waiter_id`` name the offer being rung or talked to; ``elsewhere`` marks a
    busy agent on a call that did not come from a queue (no queue statistics when it ends);
    ``wrap_up_until`` is when the current wrap-up may end.
    """

    agent_id: str
    account: str
    status: AgentStatus
    status_since: datetime
    paused_reason: str | None = None
    last_call_ended_at: datetime | None = None
    calls_taken: int = 0
    talk_seconds: float = 0.0
    no_answers_in_a_row: int = 0
    queue_id: str | None = None
    waiter_id: str | None = None
    elsewhere: bool = False
    wrap_up_until: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Waiter:
    """A caller waiting in a queue (or a callback request keeping its caller's place).

    ``waiting_since`` is when the caller first joined: a move to another queue keeps it, so
    the wait time and the place by wait survive supervisor moves.
    """

    waiter_id: str
    queue_id: str
    waiting_since: datetime
    priority: int = 0
    callback: bool = False

    def moved_to(self, queue_id: str) -> Waiter:
        return replace(self, queue_id=queue_id)

    def with_priority(self, priority: int) -> Waiter:
        return replace(self, priority=priority)
