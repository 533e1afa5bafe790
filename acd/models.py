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
AGENT_STATUSES: tuple[AgentStatus, ...] = get_args(AgentStatus)
CallbackOrder = Literal["agent_first", "caller_first"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Queue:
    """A queue's settings.

    ``retry_seconds``: an agent who let a call ring out rests this long before the next
    offer (so "no answer" moves the call on to the next agent instead of ringing the same
    phone again); ``max_no_answers`` such misses in a row pause the agent (0: never).
    ``overflow`` is where a caller goes after ``max_wait_seconds``: ``queue:<id>`` (keeping
    the wait time), or a number / SIP URI; None hangs up with ``goodbye``.
    ``announce_seconds`` > 0 tells waiting callers their position that often.
    ``service_level_seconds`` and ``abandon_short_seconds`` are the KPI thresholds: answered
    within, and abandoned so soon it does not count against the queue.
    """

    queue_id: str
    name: str = ""
    strategy: Strategy = "ring_all"
    ring_timeout_seconds: float = 15.0
    retry_seconds: float = 5.0
    max_wait_seconds: float | None = None
    overflow: str | None = None
    wrap_up_seconds: float = 0.0
    max_no_answers: int = 0
    music_class: str = "default"
    announce_seconds: float = 0.0
    callback_enabled: bool = False
    callback_key: str = "1"
    callback_order: CallbackOrder = "agent_first"
    service_level_seconds: float = 20.0
    abandon_short_seconds: float = 5.0
    goodbye: str = "sound:vm-goodbye"


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
    name: str = ""
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
    number: str = ""

    def moved_to(self, queue_id: str) -> Waiter:
        return replace(self, queue_id=queue_id)

    def with_priority(self, priority: int) -> Waiter:
        return replace(self, priority=priority)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackRequest:
    """A caller who pressed the callback key: kept (in PostgreSQL, so it survives restarts)
    with the place it had; ``attempts`` counts callbacks that did not reach the caller."""

    callback_id: str
    queue_id: str
    number: str
    waiting_since: datetime
    requested_at: datetime
    priority: int = 0
    attempts: int = 0

    def as_waiter(self) -> Waiter:
        return Waiter(
            waiter_id=self.callback_id,
            queue_id=self.queue_id,
            waiting_since=self.waiting_since,
            priority=self.priority,
            callback=True,
            number=self.number,
        )
