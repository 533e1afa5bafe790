"""An agent's status, as queue calls, supervisors and the agent's own phone change it.

``step(agent, event, now)`` is pure. An event that does not fit the agent's status (a late
ring timeout, a stale wrap-up timer, a pause while on a call) leaves the agent unchanged and
says why: such events are normal races between Asterisk, timers and supervisors, not errors.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from acd.models import Agent, AgentStatus, Queue

NO_ANSWER = "no answer"
PHONE_SETTLE_SECONDS = 2.0
"""How long after a queue call ends Kamailio may still count it on the agent's phone."""


@dataclass(frozen=True, slots=True)
class OfferRung:
    """The agent's phone is ringing for a waiter of a queue."""

    queue_id: str
    waiter_id: str


@dataclass(frozen=True, slots=True)
class Answered:
    pass


@dataclass(frozen=True, slots=True)
class RingNoAnswer:
    """The ring timed out or was declined; ``queue`` gives the rest time and the auto-pause
    threshold."""

    queue: Queue


@dataclass(frozen=True, slots=True)
class OfferWithdrawn:
    """The ring stopped through no fault of the agent: the caller hung up, another agent of
    a ring-all tier answered, a supervisor sent the caller elsewhere."""


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The queue call the agent was talking on ended; ``queue`` gives the wrap-up time."""

    queue: Queue


@dataclass(frozen=True, slots=True)
class WrapUpOver:
    pass


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str


@dataclass(frozen=True, slots=True)
class Unpause:
    pass


@dataclass(frozen=True, slots=True)
class Login:
    pass


@dataclass(frozen=True, slots=True)
class Logout:
    pass


@dataclass(frozen=True, slots=True)
class BusyElsewhere:
    """The agent's phone is on a call that did not come from a queue."""


@dataclass(frozen=True, slots=True)
class ElsewhereEnded:
    pass


AgentEvent = (
    OfferRung
    | Answered
    | RingNoAnswer
    | OfferWithdrawn
    | CallEnded
    | WrapUpOver
    | Pause
    | Unpause
    | Login
    | Logout
    | BusyElsewhere
    | ElsewhereEnded
)


@dataclass(frozen=True, slots=True)
class AgentTransition:
    """The agent after an event; ``rejected`` says why the event did not apply."""

    agent: Agent
    rejected: str | None = None


def _to(agent: Agent, status: AgentStatus, now: datetime, **changes: Any) -> AgentTransition:
    return AgentTransition(replace(agent, status=status, status_since=now, **changes))


def _reject(agent: Agent, event: AgentEvent) -> AgentTransition:
    return AgentTransition(agent, f"{type(event).__name__} while {agent.status}")


def step(agent: Agent, event: AgentEvent, now: datetime) -> AgentTransition:
    status = agent.status
    match event:
        case OfferRung(queue_id=queue_id, waiter_id=waiter_id) if status == "free":
            return _to(agent, "ringing", now, queue_id=queue_id, waiter_id=waiter_id)
        case Answered() if status == "ringing":
            return _to(agent, "busy", now, calls_taken=agent.calls_taken + 1, no_answers_in_a_row=0)
        case RingNoAnswer(queue=queue) if status == "ringing":
            missed = agent.no_answers_in_a_row + 1
            if queue.max_no_answers and missed >= queue.max_no_answers:
                return _to(
                    agent,
                    "paused",
                    now,
                    paused_reason=NO_ANSWER,
                    no_answers_in_a_row=missed,
                    queue_id=None,
                    waiter_id=None,
                )
            if queue.retry_seconds <= 0:
                return _to(
                    agent, "free", now, no_answers_in_a_row=missed, queue_id=None, waiter_id=None
                )
            # A short rest, so the caller moves on to the next agent instead of this phone.
            return _to(
                agent,
                "wrap_up",
                now,
                no_answers_in_a_row=missed,
                queue_id=None,
                waiter_id=None,
                wrap_up_until=now + timedelta(seconds=queue.retry_seconds),
            )
        case OfferWithdrawn() if status == "ringing":
            return _to(agent, "free", now, queue_id=None, waiter_id=None)
        case CallEnded(queue=queue) if status == "busy" and not agent.elsewhere:
            talked = agent.talk_seconds + max(0.0, (now - agent.status_since).total_seconds())
            ended = {
                "talk_seconds": talked,
                "last_call_ended_at": now,
                "queue_id": None,
                "waiter_id": None,
            }
            if queue.wrap_up_seconds <= 0:
                return _to(agent, "free", now, **ended)
            until = now + timedelta(seconds=queue.wrap_up_seconds)
            return _to(agent, "wrap_up", now, wrap_up_until=until, **ended)
        case WrapUpOver() if status == "wrap_up":
            # A timer of an earlier wrap-up must not cut the current one short.
            if agent.wrap_up_until is not None and now < agent.wrap_up_until:
                return AgentTransition(agent, "wrap-up not over yet")
            return _to(agent, "free", now, wrap_up_until=None)
        case Pause(reason=reason) if status in ("free", "wrap_up", "paused"):
            return _to(agent, "paused", now, paused_reason=reason, wrap_up_until=None)
        case Unpause() if status == "paused":
            return _to(agent, "free", now, paused_reason=None, no_answers_in_a_row=0)
        case Login() if status == "offline":
            return _to(agent, "free", now, no_answers_in_a_row=0)
        case Logout() if status != "busy":
            # A ringing agent may log out: the adapter hangs up the ring, the caller waits on.
            return _to(
                agent,
                "offline",
                now,
                paused_reason=None,
                queue_id=None,
                waiter_id=None,
                wrap_up_until=None,
            )
        case BusyElsewhere() if status in ("free", "wrap_up"):
            return _to(agent, "busy", now, elsewhere=True, wrap_up_until=None)
        case ElsewhereEnded() if status == "busy" and agent.elsewhere:
            return _to(agent, "free", now, elsewhere=False)
    return _reject(agent, event)


def phone_settling(agent: Agent, now: datetime) -> bool:
    """Did the agent's queue call end so recently that Kamailio may not have freed its dialog
    yet? Such a phone looks busy but is not on a call from elsewhere: ask it again later."""
    ended = agent.last_call_ended_at
    return ended is not None and (now - ended).total_seconds() < PHONE_SETTLE_SECONDS
