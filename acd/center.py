"""The ACD's decisions across all its calls: who waits, whom to ring, what supervisors change.

One ``AcdCenter`` per process holds the indexed snapshot of ``acd.policy`` and the callers in
flight. Each input is handled with the time passed in and answers with commands for the
adapter (ring these agents, tell that caller, save, publish, wake me at). No I/O, no clock:
a race such as "the caller hangs up as the agent answers" is a plain unit test.

It is a mutable object rather than ``(state, event) -> state``: the snapshot already shares
structure between versions, but copying the bookkeeping of 5,000 waiting callers on every
event would cost more than the decision it serves.

A waiter is a caller on a live channel or a callback request. Its phases: ``waiting`` (in the
snapshot, can be offered), ``ringing`` (agents are being rung for it), ``talking``, and for a
callback whose caller did not answer, ``resting`` until its next attempt.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from acd.agents import (
    AgentEvent,
    Answered,
    BusyElsewhere,
    CallEnded,
    ElsewhereEnded,
    Login,
    Logout,
    OfferWithdrawn,
    Pause,
    RingNoAnswer,
    Unpause,
    WrapUpOver,
    step,
)
from acd.kpi import AgentKpi, QueueKpi
from acd.models import Agent, CallbackRequest, Membership, Queue, Waiter
from acd.policy import AcdSnapshot, RoundRobinMemory
from softswitch.events.models import (
    AgentStatusChanged,
    CallbackRequested,
    Event,
    WaiterJoined,
    WaiterLeft,
    WaiterMoved,
    WaiterPriorityChanged,
)

CALLBACK_ATTEMPTS = 3
"""A callback that did not reach the caller this often is given up."""
CALLBACK_RETRY_SECONDS = 60.0
OVERFLOW_QUEUE = "queue:"

# Inputs


@dataclass(frozen=True, slots=True)
class Join:
    waiter: Waiter


@dataclass(frozen=True, slots=True)
class Leave:
    """The caller hung up (or its call failed) before talking to an agent."""

    waiter_id: str


@dataclass(frozen=True, slots=True)
class OfferAnswered:
    """The agent and the caller are connected."""

    waiter_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class OfferFailed:
    """The agent's leg ended unanswered; ``busy_elsewhere``: its phone was on another call."""

    waiter_id: str
    agent_id: str
    busy_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class TalkEnded:
    waiter_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class RequestCallback:
    waiter_id: str


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """A callback did not reach the caller; the agent it reserved is free again."""

    waiter_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class CallbackDue:
    waiter_id: str


@dataclass(frozen=True, slots=True)
class RestoreCallbacks:
    """Callback requests kept in the database from before this process."""

    requests: tuple[CallbackRequest, ...]


AgentAction = Literal["pause", "unpause", "login", "logout"]


@dataclass(frozen=True, slots=True)
class ForceAgent:
    """An agent's own or a supervisor's status change."""

    agent_id: str
    action: AgentAction
    reason: str = ""
    by: str = ""


@dataclass(frozen=True, slots=True)
class ChangePriority:
    waiter_id: str
    priority: int
    by: str = ""


@dataclass(frozen=True, slots=True)
class Move:
    waiter_id: str
    queue_id: str
    by: str = ""


@dataclass(frozen=True, slots=True)
class Remove:
    waiter_id: str
    by: str = ""


@dataclass(frozen=True, slots=True)
class SendToAgent:
    """Ring this agent for this caller now, whatever the agent's status (not on a queue call)."""

    waiter_id: str
    agent_id: str
    by: str = ""


@dataclass(frozen=True, slots=True)
class AgentPhone:
    """What Kamailio says about the agent's phone: on a call (``busy``) or not."""

    agent_id: str
    busy: bool


@dataclass(frozen=True, slots=True)
class WrapUpDue:
    agent_id: str


@dataclass(frozen=True, slots=True)
class MaxWaitDue:
    waiter_id: str
    deadline: datetime


@dataclass(frozen=True, slots=True)
class Reconfigure:
    """Queues, agents or memberships were edited: new decisions use them at once."""

    queues: tuple[Queue, ...]
    agents: tuple[Agent, ...]
    memberships: tuple[Membership, ...]


CenterEvent = (
    Join
    | Leave
    | OfferAnswered
    | OfferFailed
    | TalkEnded
    | RequestCallback
    | CallbackFailed
    | CallbackDue
    | RestoreCallbacks
    | ForceAgent
    | ChangePriority
    | Move
    | Remove
    | SendToAgent
    | AgentPhone
    | WrapUpDue
    | MaxWaitDue
    | Reconfigure
)

# Outputs


@dataclass(frozen=True, slots=True)
class RingAgents:
    """Ring these agents for the waiter (a callback waiter: start its callback call)."""

    waiter: Waiter
    agents: tuple[Agent, ...]
    timeout_seconds: float
    callback_order: str = "agent_first"


@dataclass(frozen=True, slots=True)
class CancelRing:
    """Stop ringing these agents for the waiter (a supervisor's action, or a logout)."""

    waiter_id: str
    agent_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Overflow:
    """Send the caller to ``destination`` (a number or SIP URI): it left the queue."""

    waiter_id: str
    destination: str


@dataclass(frozen=True, slots=True)
class Dismiss:
    """Play ``goodbye`` to the caller and hang up (removed, or waited too long)."""

    waiter_id: str
    goodbye: str


@dataclass(frozen=True, slots=True)
class CallbackAccepted:
    """Tell the caller the callback is booked; its call may end, its place is kept."""

    waiter_id: str


@dataclass(frozen=True, slots=True)
class SaveAgents:
    agents: tuple[Agent, ...]


@dataclass(frozen=True, slots=True)
class SaveCallback:
    request: CallbackRequest


@dataclass(frozen=True, slots=True)
class FinishCallback:
    callback_id: str
    state: Literal["done", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class CountCallbackAttempt:
    callback_id: str


@dataclass(frozen=True, slots=True)
class Publish:
    event: Event


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Hand ``event`` back to the center at ``at`` (stale wake-ups are ignored there)."""

    at: datetime
    event: CenterEvent


CenterCommand = (
    RingAgents
    | CancelRing
    | Overflow
    | Dismiss
    | CallbackAccepted
    | SaveAgents
    | SaveCallback
    | FinishCallback
    | CountCallbackAttempt
    | Publish
    | WakeAt
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do; ``refused`` says why an input (a supervisor's action) did not apply."""

    commands: tuple[CenterCommand, ...] = ()
    refused: str | None = None


Phase = Literal["waiting", "ringing", "talking", "resting"]


@dataclass(slots=True)
class Tracked:
    waiter: Waiter
    phase: Phase
    deadline: datetime | None = None
    """When the caller leaves by max wait (callbacks have none)."""
    ringing: set[str] = field(default_factory=set)
    agent_id: str | None = None
    answered_at: datetime | None = None
    attempts: int = 0


# Views for the supervisor API


@dataclass(frozen=True, slots=True)
class WaiterView:
    waiter_id: str
    queue_id: str
    number: str
    position: int | None
    priority: int
    wait_seconds: float
    state: Phase
    callback: bool
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class QueueView:
    queue: Queue
    waiters: tuple[WaiterView, ...]
    agent_ids: tuple[str, ...]
    kpi: QueueKpi


@dataclass(frozen=True, slots=True)
class AgentView:
    agent: Agent
    queue_ids: tuple[str, ...]
    kpi: AgentKpi


class AcdCenter:
    def __init__(
        self,
        queues: Iterable[Queue],
        agents: Iterable[Agent],
        memberships: Iterable[Membership],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.snapshot = AcdSnapshot.build(queues, (), memberships, agents)
        self.memory = RoundRobinMemory()
        self.rng = rng or random.Random()
        self.waiters: dict[str, Tracked] = {}
        self.queue_kpi: dict[str, QueueKpi] = {}
        self.agent_kpi: dict[str, AgentKpi] = {}
        # Agents rung by a supervisor whatever their status: the status to return to.
        self._forced_from: dict[str, Agent] = {}

    # Reading

    def queue(self, queue_id: str) -> Queue:
        """The queue's settings; a queue deleted while its calls last keeps the defaults."""
        return self.snapshot.queues.get(queue_id) or Queue(queue_id=queue_id)

    def position(self, waiter_id: str) -> int | None:
        """1-based place among the queue's waiting callers, None when not waiting."""
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase != "waiting":
            return None
        waiting = self.snapshot.waiting.get(tracked.waiter.queue_id, ())
        for index, waiter in enumerate(waiting):
            if waiter.waiter_id == waiter_id:
                return index + 1
        return None

    def queues_view(self, now: datetime) -> list[QueueView]:
        by_queue: dict[str, list[WaiterView]] = {}
        for tracked in self.waiters.values():
            w = tracked.waiter
            by_queue.setdefault(w.queue_id, []).append(
                WaiterView(
                    waiter_id=w.waiter_id,
                    queue_id=w.queue_id,
                    number=w.number,
                    position=self.position(w.waiter_id),
                    priority=w.priority,
                    wait_seconds=max(0.0, (now - w.waiting_since).total_seconds()),
                    state=tracked.phase,
                    callback=w.callback,
                    agent_id=tracked.agent_id or (min(tracked.ringing, default=None)),
                )
            )
        views = []
        for queue_id, queue in sorted(self.snapshot.queues.items()):
            waiters = sorted(
                by_queue.get(queue_id, []),
                key=lambda v: (v.position is None, v.position or 0, -v.wait_seconds),
            )
            members = tuple(m.agent_id for m in self.snapshot.members.get(queue_id, ()))
            kpi = self.queue_kpi.get(queue_id, QueueKpi())
            views.append(QueueView(queue, tuple(waiters), members, kpi))
        return views

    def agents_view(self) -> list[AgentView]:
        return [
            AgentView(
                agent,
                self.snapshot.queues_of.get(agent_id, ()),
                self.agent_kpi.get(agent_id, AgentKpi()),
            )
            for agent_id, agent in sorted(self.snapshot.agents.items())
        ]

    # Handling

    def handle(self, event: CenterEvent, now: datetime) -> Outcome:
        out: list[CenterCommand] = []
        refused = self._handle(event, now, out)
        if refused is None:
            self._dispatch(now, out)
        return Outcome(tuple(out), refused)

    def _handle(self, event: CenterEvent, now: datetime, out: list[CenterCommand]) -> str | None:
        match event:
            case Join(waiter=waiter):
                return self._join(waiter, now, out)
            case Leave(waiter_id=waiter_id):
                return self._leave(waiter_id, now, out)
            case OfferAnswered(waiter_id=waiter_id, agent_id=agent_id):
                return self._answered(waiter_id, agent_id, now, out)
            case OfferFailed(waiter_id=waiter_id, agent_id=agent_id, busy_elsewhere=busy):
                return self._offer_failed(waiter_id, agent_id, busy, now, out)
            case TalkEnded(waiter_id=waiter_id, agent_id=agent_id):
                return self._talk_ended(waiter_id, agent_id, now, out)
            case RequestCallback(waiter_id=waiter_id):
                return self._request_callback(waiter_id, now, out)
            case CallbackFailed(waiter_id=waiter_id, agent_id=agent_id):
                return self._callback_failed(waiter_id, agent_id, now, out)
            case CallbackDue(waiter_id=waiter_id):
                tracked = self.waiters.get(waiter_id)
                if tracked is not None and tracked.phase == "resting":
                    self._requeue(tracked, now, out)
                return None
            case RestoreCallbacks(requests=requests):
                for request in requests:
                    if request.callback_id not in self.waiters:
                        waiter = request.as_waiter()
                        self.waiters[waiter.waiter_id] = Tracked(
                            waiter, "waiting", attempts=request.attempts
                        )
                        self.snapshot = self.snapshot.with_waiter(waiter)
                return None
            case ForceAgent():
                return self._force_agent(event, now, out)
            case ChangePriority(waiter_id=waiter_id, priority=priority, by=by):
                return self._change_priority(waiter_id, priority, by, now, out)
            case Move(waiter_id=waiter_id, queue_id=queue_id, by=by):
                return self._move(waiter_id, queue_id, by, now, out)
            case Remove(waiter_id=waiter_id, by=by):
                return self._remove(waiter_id, now, out)
            case SendToAgent(waiter_id=waiter_id, agent_id=agent_id):
                return self._send_to_agent(waiter_id, agent_id, now, out)
            case AgentPhone(agent_id=agent_id, busy=busy):
                agent = self.snapshot.agents.get(agent_id)
                if agent is None:
                    return f"no agent {agent_id}"
                if busy and not agent.elsewhere and agent.status in ("free", "wrap_up"):
                    self._agent_step(agent_id, BusyElsewhere(), now, out, "busy elsewhere")
                elif not busy and agent.elsewhere:
                    self._agent_step(agent_id, ElsewhereEnded(), now, out)
                return None
            case WrapUpDue(agent_id=agent_id):
                self._agent_step(agent_id, WrapUpOver(), now, out)
                return None
            case MaxWaitDue(waiter_id=waiter_id, deadline=deadline):
                tracked = self.waiters.get(waiter_id)
                if tracked and tracked.phase == "waiting" and tracked.deadline == deadline:
                    self._time_out(tracked, now, out)
                return None
            case Reconfigure():
                self._reconfigure(event, now, out)
                return None

    # Callers

    def _join(self, waiter: Waiter, now: datetime, out: list[CenterCommand]) -> str | None:
        if waiter.queue_id not in self.snapshot.queues:
            return f"no queue {waiter.queue_id}"
        if waiter.waiter_id in self.waiters:
            return f"{waiter.waiter_id} is already queued"
        tracked = Tracked(waiter, "waiting")
        self.waiters[waiter.waiter_id] = tracked
        self.snapshot = self.snapshot.with_waiter(waiter)
        self._kpi(waiter.queue_id).joined += 1
        self._set_deadline(tracked, now, out)
        out.append(
            Publish(
                WaiterJoined(
                    occurred_at=now,
                    call_id=waiter.waiter_id,
                    queue=waiter.queue_id,
                    priority=waiter.priority,
                    position=self.position(waiter.waiter_id) or 1,
                )
            )
        )
        return None

    def _set_deadline(self, tracked: Tracked, now: datetime, out: list[CenterCommand]) -> None:
        """Max wait counts from joining this queue (an overflow starts the next queue's)."""
        max_wait = self.queue(tracked.waiter.queue_id).max_wait_seconds
        if max_wait is None or tracked.waiter.callback:
            tracked.deadline = None
            return
        tracked.deadline = now + timedelta(seconds=max_wait)
        out.append(WakeAt(tracked.deadline, MaxWaitDue(tracked.waiter.waiter_id, tracked.deadline)))

    def _leave(self, waiter_id: str, now: datetime, out: list[CenterCommand]) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase == "talking":
            return None  # already gone, or its talk's end is what counts
        # Its call hangs up its own legs.
        self._withdraw(tracked, tracked.ringing, now, out, tell_caller=False)
        self._unqueue(tracked)
        waited = self._waited(tracked.waiter, now)
        self._kpi(tracked.waiter.queue_id).on_abandoned(self.queue(tracked.waiter.queue_id), waited)
        self._left(tracked, "abandoned", now, out)
        return None

    def _answered(
        self, waiter_id: str, agent_id: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or agent_id not in tracked.ringing:
            return f"{agent_id} was not ringing for {waiter_id}"
        tracked.ringing.discard(agent_id)
        self._withdraw(tracked, tracked.ringing, now, out)
        self._agent_step(agent_id, Answered(), now, out)
        tracked.phase, tracked.agent_id, tracked.answered_at = "talking", agent_id, now
        waiter = tracked.waiter
        queue = self.queue(waiter.queue_id)
        waited = self._waited(waiter, now)
        self._kpi(waiter.queue_id).on_answered(queue, waited)
        self._agent_kpi(agent_id).answered += 1
        if waiter.callback:
            self._kpi(waiter.queue_id).callbacks_completed += 1
            out.append(FinishCallback(waiter_id, "done"))
        out.append(
            Publish(
                WaiterLeft(
                    occurred_at=now,
                    call_id=waiter_id,
                    queue=waiter.queue_id,
                    reason="answered",
                    waited_seconds=waited,
                    agent=agent_id,
                )
            )
        )
        return None

    def _offer_failed(
        self, waiter_id: str, agent_id: str, busy: bool, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or agent_id not in tracked.ringing:
            return f"{agent_id} was not ringing for {waiter_id}"
        tracked.ringing.discard(agent_id)
        if agent_id in self._forced_from:
            self._unforce(agent_id, now, out)
        elif busy:
            self._agent_step(agent_id, OfferWithdrawn(), now, out)
            self._agent_step(agent_id, BusyElsewhere(), now, out, "busy elsewhere")
        else:
            self._agent_kpi(agent_id).missed += 1
            queue = self.queue(tracked.waiter.queue_id)
            self._agent_step(agent_id, RingNoAnswer(queue), now, out, "no answer")
        if not tracked.ringing and tracked.phase == "ringing":
            self._requeue(tracked, now, out)
        return None

    def _talk_ended(
        self, waiter_id: str, agent_id: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase != "talking" or tracked.agent_id != agent_id:
            return f"{waiter_id} was not talking to {agent_id}"
        talked = (now - (tracked.answered_at or now)).total_seconds()
        self._kpi(tracked.waiter.queue_id).on_talk_ended(talked)
        self._agent_kpi(agent_id).on_talk_ended(talked)
        self._agent_step(agent_id, CallEnded(self.queue(tracked.waiter.queue_id)), now, out)
        prior = self._forced_from.pop(agent_id, None)
        agent = self.snapshot.agents.get(agent_id)
        if prior is not None and agent is not None and prior.status in ("paused", "offline"):
            # Rung by a supervisor while paused or logged out: back to that after the call.
            restored = replace(
                agent, status=prior.status, paused_reason=prior.paused_reason, wrap_up_until=None
            )
            self._set_agent(agent, restored, now, out, "after a supervisor's call")
        del self.waiters[waiter_id]
        return None

    def _request_callback(
        self, waiter_id: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase not in ("waiting", "ringing"):
            return f"{waiter_id} is not waiting"
        waiter = tracked.waiter
        if not self.queue(waiter.queue_id).callback_enabled:
            return f"queue {waiter.queue_id} takes no callback requests"
        if waiter.callback or not waiter.number:
            return f"{waiter_id} has no number to call back"
        self._withdraw(tracked, tracked.ringing, now, out, tell_caller=False)
        self._unqueue(tracked)
        tracked.waiter = replace(waiter, callback=True)
        tracked.phase, tracked.deadline = "waiting", None
        self.snapshot = self.snapshot.with_waiter(tracked.waiter)
        self._kpi(waiter.queue_id).callbacks_requested += 1
        out += (
            SaveCallback(
                CallbackRequest(
                    callback_id=waiter_id,
                    queue_id=waiter.queue_id,
                    number=waiter.number,
                    waiting_since=waiter.waiting_since,
                    requested_at=now,
                    priority=waiter.priority,
                )
            ),
            CallbackAccepted(waiter_id),
            Publish(
                CallbackRequested(
                    occurred_at=now,
                    call_id=waiter_id,
                    queue=waiter.queue_id,
                    number=waiter.number,
                    position=self.position(waiter_id) or 1,
                )
            ),
        )
        return None

    def _callback_failed(
        self, waiter_id: str, agent_id: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or not tracked.waiter.callback or agent_id not in tracked.ringing:
            return f"{waiter_id} was not calling back with {agent_id}"
        tracked.ringing.discard(agent_id)
        self._withdraw(tracked, {agent_id, *tracked.ringing}, now, out, tell_caller=False)
        tracked.attempts += 1
        out.append(CountCallbackAttempt(waiter_id))
        if tracked.attempts >= CALLBACK_ATTEMPTS:
            out.append(FinishCallback(waiter_id, "failed"))
            self._kpi(tracked.waiter.queue_id).abandoned += 1
            self._left(tracked, "abandoned", now, out)
            return None
        tracked.phase = "resting"
        out.append(WakeAt(now + timedelta(seconds=CALLBACK_RETRY_SECONDS), CallbackDue(waiter_id)))
        return None

    def _requeue(self, tracked: Tracked, now: datetime, out: list[CenterCommand]) -> None:
        """Back in line at its old place (its wait time is kept); overdue: leaves by max wait."""
        tracked.phase = "waiting"
        self.snapshot = self.snapshot.with_waiter(tracked.waiter)
        if tracked.deadline is not None and now >= tracked.deadline:
            self._time_out(tracked, now, out)

    def _time_out(self, tracked: Tracked, now: datetime, out: list[CenterCommand]) -> None:
        waiter = tracked.waiter
        queue = self.queue(waiter.queue_id)
        overflow = queue.overflow
        if overflow and overflow.startswith(OVERFLOW_QUEUE):
            target = overflow.removeprefix(OVERFLOW_QUEUE)
            if target in self.snapshot.queues and target != waiter.queue_id:
                self._moved(tracked, target, "overflow", now, out)
                return
        self._unqueue(tracked)
        self._kpi(waiter.queue_id).timed_out += 1
        if overflow and not overflow.startswith(OVERFLOW_QUEUE):
            out.append(Overflow(waiter.waiter_id, overflow))
        else:
            out.append(Dismiss(waiter.waiter_id, queue.goodbye))
        self._left(tracked, "timeout", now, out)

    # Supervisors

    def _change_priority(
        self, waiter_id: str, priority: int, by: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase == "talking":
            return f"{waiter_id} is not waiting"
        old = tracked.waiter.priority
        self._unqueue(tracked)
        tracked.waiter = tracked.waiter.with_priority(priority)
        if tracked.phase == "waiting":
            self.snapshot = self.snapshot.with_waiter(tracked.waiter)
        self._save_if_callback(tracked, out)
        out.append(
            Publish(
                WaiterPriorityChanged(
                    occurred_at=now,
                    call_id=waiter_id,
                    queue=tracked.waiter.queue_id,
                    old_priority=old,
                    new_priority=priority,
                    by=by,
                )
            )
        )
        return None

    def _move(
        self, waiter_id: str, queue_id: str, by: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase == "talking":
            return f"{waiter_id} is not waiting"
        if queue_id not in self.snapshot.queues:
            return f"no queue {queue_id}"
        if queue_id == tracked.waiter.queue_id:
            return f"{waiter_id} is in {queue_id} already"
        self._withdraw(tracked, tracked.ringing, now, out)
        if tracked.phase == "ringing":
            tracked.phase = "waiting"
            self.snapshot = self.snapshot.with_waiter(tracked.waiter)
        self._moved(tracked, queue_id, by, now, out)
        return None

    def _moved(
        self, tracked: Tracked, queue_id: str, by: str, now: datetime, out: list[CenterCommand]
    ) -> None:
        old_queue = tracked.waiter.queue_id
        self._unqueue(tracked)
        tracked.waiter = tracked.waiter.moved_to(queue_id)
        if tracked.phase == "waiting":
            self.snapshot = self.snapshot.with_waiter(tracked.waiter)
        self._set_deadline(tracked, now, out)
        self._save_if_callback(tracked, out)
        out.append(
            Publish(
                WaiterMoved(
                    occurred_at=now,
                    call_id=tracked.waiter.waiter_id,
                    from_queue=old_queue,
                    to_queue=queue_id,
                    by=by,
                )
            )
        )

    def _remove(self, waiter_id: str, now: datetime, out: list[CenterCommand]) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase == "talking":
            return f"{waiter_id} is not waiting"
        self._withdraw(tracked, tracked.ringing, now, out)
        self._unqueue(tracked)
        self._kpi(tracked.waiter.queue_id).removed += 1
        if tracked.waiter.callback:
            out.append(FinishCallback(waiter_id, "cancelled"))
        else:
            out.append(Dismiss(waiter_id, self.queue(tracked.waiter.queue_id).goodbye))
        self._left(tracked, "removed", now, out)
        return None

    def _send_to_agent(
        self, waiter_id: str, agent_id: str, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        tracked = self.waiters.get(waiter_id)
        if tracked is None or tracked.phase not in ("waiting", "ringing", "resting"):
            return f"{waiter_id} is not waiting"
        agent = self.snapshot.agents.get(agent_id)
        if agent is None:
            return f"no agent {agent_id}"
        if agent.status == "ringing" or (agent.status == "busy" and not agent.elsewhere):
            return f"agent {agent_id} is {agent.status} on a queue call"
        self._withdraw(tracked, tracked.ringing, now, out)
        self._unqueue(tracked)
        self._forced_from[agent_id] = agent
        rung = replace(
            agent,
            status="ringing",
            status_since=now,
            queue_id=tracked.waiter.queue_id,
            waiter_id=waiter_id,
            elsewhere=False,
            wrap_up_until=None,
        )
        self._set_agent(agent, rung, now, out, "sent by a supervisor")
        self._ring(tracked, (rung,), out)
        return None

    def _force_agent(
        self, event: ForceAgent, now: datetime, out: list[CenterCommand]
    ) -> str | None:
        agent = self.snapshot.agents.get(event.agent_id)
        if agent is None:
            return f"no agent {event.agent_id}"
        if agent.status == "ringing" and event.action in ("pause", "logout"):
            self._stop_ringing(agent, now, out)
        actions: dict[AgentAction, AgentEvent] = {
            "pause": Pause(event.reason or "supervisor"),
            "unpause": Unpause(),
            "login": Login(),
            "logout": Logout(),
        }
        action = actions[event.action]
        return self._agent_step(event.agent_id, action, now, out, event.reason or event.by)

    def _stop_ringing(self, agent: Agent, now: datetime, out: list[CenterCommand]) -> None:
        """Stop the ring of an agent who is being paused or logged out; its caller waits on."""
        tracked = self.waiters.get(agent.waiter_id or "")
        if tracked is None:
            return
        tracked.ringing.discard(agent.agent_id)
        out.append(CancelRing(tracked.waiter.waiter_id, (agent.agent_id,)))
        self._release(agent.agent_id, now, out)
        if not tracked.ringing and tracked.phase == "ringing":
            self._requeue(tracked, now, out)

    # Agents

    def _reconfigure(self, event: Reconfigure, now: datetime, out: list[CenterCommand]) -> None:
        known = self.snapshot.agents
        agents = [
            replace(known[a.agent_id], account=a.account, name=a.name) if a.agent_id in known else a
            for a in event.agents
        ]
        queue_ids = {q.queue_id for q in event.queues}
        for tracked in list(self.waiters.values()):
            if tracked.phase == "waiting" and tracked.waiter.queue_id not in queue_ids:
                self._kpi(tracked.waiter.queue_id).removed += 1
                if tracked.waiter.callback:
                    out.append(FinishCallback(tracked.waiter.waiter_id, "cancelled"))
                else:
                    out.append(
                        Dismiss(
                            tracked.waiter.waiter_id, self.queue(tracked.waiter.queue_id).goodbye
                        )
                    )
                self._left(tracked, "removed", now, out)
        waiting = [t.waiter for t in self.waiters.values() if t.phase == "waiting"]
        self.snapshot = AcdSnapshot.build(event.queues, waiting, event.memberships, agents)

    def _agent_step(
        self,
        agent_id: str,
        event: AgentEvent,
        now: datetime,
        out: list[CenterCommand],
        reason: str = "",
    ) -> str | None:
        agent = self.snapshot.agents.get(agent_id)
        if agent is None:
            return f"no agent {agent_id}"
        transition = step(agent, event, now)
        if transition.rejected is not None:
            return f"agent {agent_id}: {transition.rejected}"
        self._set_agent(agent, transition.agent, now, out, reason)
        return None

    def _set_agent(
        self, old: Agent, new: Agent, now: datetime, out: list[CenterCommand], reason: str
    ) -> None:
        self.snapshot = self.snapshot.with_agents((new,))
        out.append(SaveAgents((new,)))
        if old.status != new.status:
            out.append(
                Publish(
                    AgentStatusChanged(
                        occurred_at=now,
                        call_id=new.waiter_id or old.waiter_id,
                        agent=new.agent_id,
                        old_status=old.status,
                        new_status=new.status,
                        reason=reason,
                    )
                )
            )
        if new.status == "wrap_up" and new.wrap_up_until is not None:
            out.append(WakeAt(new.wrap_up_until, WrapUpDue(new.agent_id)))

    def _release(self, agent_id: str, now: datetime, out: list[CenterCommand]) -> None:
        """A ringing agent stops ringing through no fault of its own."""
        if agent_id in self._forced_from:
            self._unforce(agent_id, now, out)
        else:
            self._agent_step(agent_id, OfferWithdrawn(), now, out)

    def _unforce(self, agent_id: str, now: datetime, out: list[CenterCommand]) -> None:
        prior = self._forced_from.pop(agent_id)
        agent = self.snapshot.agents[agent_id]
        self._set_agent(agent, replace(prior, status_since=now), now, out, "supervisor's ring over")

    def _withdraw(
        self,
        tracked: Tracked,
        agent_ids: Iterable[str],
        now: datetime,
        out: list[CenterCommand],
        *,
        tell_caller: bool = True,
    ) -> None:
        """Stop ringing ``agent_ids`` for the waiter (``tell_caller``: its call hangs up)."""
        stopped = tuple(sorted(agent_ids))
        for agent_id in stopped:
            self._release(agent_id, now, out)
        tracked.ringing.difference_update(stopped)
        if stopped and tell_caller:
            out.append(CancelRing(tracked.waiter.waiter_id, stopped))

    # Offers

    def _dispatch(self, now: datetime, out: list[CenterCommand]) -> None:
        while True:
            offer, self.memory = self.snapshot.next_offer(self.memory, self.rng)
            if offer is None:
                return
            before = [self.snapshot.agents[a] for a in offer.agent_ids]
            self.snapshot = self.snapshot.after(offer, now)
            rung = tuple(self.snapshot.agents[a] for a in offer.agent_ids)
            if offer.callback and len(rung) > 1:
                # A callback calls one agent (ring_all would reserve the whole tier).
                self.snapshot = self.snapshot.with_agents(before[1:])
                before, rung = before[:1], rung[:1]
            for old, new in zip(before, rung, strict=True):
                out.append(SaveAgents((new,)))
                out.append(
                    Publish(
                        AgentStatusChanged(
                            occurred_at=now,
                            call_id=offer.waiter_id,
                            agent=new.agent_id,
                            old_status=old.status,
                            new_status=new.status,
                            reason=f"offered {offer.queue_id}",
                        )
                    )
                )
            self._ring(self.waiters[offer.waiter_id], rung, out)

    def _ring(self, tracked: Tracked, agents: Sequence[Agent], out: list[CenterCommand]) -> None:
        tracked.phase = "ringing"
        tracked.ringing = {a.agent_id for a in agents}
        for agent in agents:
            self._agent_kpi(agent.agent_id).offered += 1
        queue = self.queue(tracked.waiter.queue_id)
        out.append(
            RingAgents(
                tracked.waiter, tuple(agents), queue.ring_timeout_seconds, queue.callback_order
            )
        )

    # Bookkeeping

    def _unqueue(self, tracked: Tracked) -> None:
        if tracked.phase == "waiting":
            self.snapshot = self.snapshot.without_waiter(
                tracked.waiter.queue_id, tracked.waiter.waiter_id
            )

    def _left(
        self,
        tracked: Tracked,
        reason: Literal["abandoned", "timeout", "removed"],
        now: datetime,
        out: list[CenterCommand],
    ) -> None:
        waiter = tracked.waiter
        self.waiters.pop(waiter.waiter_id, None)
        out.append(
            Publish(
                WaiterLeft(
                    occurred_at=now,
                    call_id=waiter.waiter_id,
                    queue=waiter.queue_id,
                    reason=reason,
                    waited_seconds=self._waited(waiter, now),
                )
            )
        )

    def _save_if_callback(self, tracked: Tracked, out: list[CenterCommand]) -> None:
        w = tracked.waiter
        if w.callback:
            out.append(
                SaveCallback(
                    CallbackRequest(
                        callback_id=w.waiter_id,
                        queue_id=w.queue_id,
                        number=w.number,
                        waiting_since=w.waiting_since,
                        requested_at=w.waiting_since,
                        priority=w.priority,
                        attempts=tracked.attempts,
                    )
                )
            )

    @staticmethod
    def _waited(waiter: Waiter, now: datetime) -> float:
        return max(0.0, (now - waiter.waiting_since).total_seconds())

    def _kpi(self, queue_id: str) -> QueueKpi:
        return self.queue_kpi.setdefault(queue_id, QueueKpi())

    def _agent_kpi(self, agent_id: str) -> AgentKpi:
        return self.agent_kpi.setdefault(agent_id, AgentKpi())
