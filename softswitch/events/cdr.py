"""Call detail records: one row per call, folded from its events.

``fold`` is pure: the record so far plus one event gives the next record. It is written to
give the same record whatever order the events of a call arrive in (times take the earliest
or latest as fits), so redeliveries after a broker outage cannot skew a CDR; duplicates are
dropped before the fold, by event id.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from typing import Any

from softswitch.events.models import (
    CallAnswered,
    CallEnded,
    CallRinging,
    CallRouted,
    CallStarted,
    Event,
    MultiringStarted,
    MultiringWon,
    SosNumberLeased,
    WaiterJoined,
    WaiterLeft,
)


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    sip_call_id: str | None = None
    caller: str = ""
    callee: str = ""
    route: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_seconds: float = 0.0
    talk_seconds: float = 0.0
    disposition: str | None = None
    cause: int | None = None
    legs: int = 0
    queue: str | None = None
    agent: str | None = None
    pool_number: str | None = None
    events: int = 0

    def as_row(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CallRecord:
        return cls(**{f.name: row[f.name] for f in fields(cls)})


COLUMNS = tuple(f.name for f in fields(CallRecord))


def _earliest(current: datetime | None, new: datetime) -> datetime:
    return new if current is None or new < current else current


def fold(record: CallRecord | None, event: Event) -> CallRecord | None:
    """The record after ``event``; None for events that belong to no call."""
    if event.call_id is None:
        return None
    record = record or CallRecord(call_id=event.call_id)
    record = replace(
        record,
        events=record.events + 1,
        sip_call_id=record.sip_call_id or event.sip_call_id,
    )
    match event:
        case CallStarted():
            # A routed event may have set rewritten numbers already: keep those.
            return replace(
                record,
                started_at=_earliest(record.started_at, event.occurred_at),
                caller=record.caller or event.caller,
                callee=record.callee or event.callee,
            )
        case CallRouted():
            return replace(record, route=event.route, caller=event.caller, callee=event.callee)
        case CallRinging():
            return replace(record, legs=record.legs + 1)
        case MultiringStarted():
            return replace(record, legs=max(record.legs, len(event.legs)))
        case CallAnswered() | MultiringWon():
            return replace(record, answered_at=_earliest(record.answered_at, event.occurred_at))
        case WaiterJoined():
            return replace(record, queue=event.queue)
        case WaiterLeft():
            return replace(record, queue=event.queue, agent=event.agent or record.agent)
        case SosNumberLeased():
            return replace(record, pool_number=event.number)
        case CallEnded():
            return replace(
                record,
                ended_at=event.occurred_at,
                disposition=event.disposition,
                cause=event.cause,
                wait_seconds=event.wait_seconds,
                talk_seconds=event.talk_seconds,
            )
    return record
