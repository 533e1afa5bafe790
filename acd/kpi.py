"""Call-centre KPIs per queue and per agent, counted as calls happen (not a nightly batch).

Counters since the process started; the CDR holds every call for history. The service level
is the share of calls answered within the queue's threshold among calls that were answered
or abandoned after the short-abandon threshold (a caller who hangs up in the first seconds
is not held against the queue), the usual call-centre definition.
"""

from __future__ import annotations

from dataclasses import dataclass

from acd.models import Queue


@dataclass(slots=True)
class QueueKpi:
    joined: int = 0
    answered: int = 0
    answered_in_service_level: int = 0
    abandoned: int = 0
    abandoned_short: int = 0
    timed_out: int = 0
    removed: int = 0
    callbacks_requested: int = 0
    callbacks_completed: int = 0
    wait_seconds_answered: float = 0.0
    wait_seconds_max: float = 0.0
    talk_seconds: float = 0.0
    talk_seconds_max: float = 0.0

    def on_answered(self, queue: Queue, waited: float) -> None:
        self.answered += 1
        self.answered_in_service_level += waited <= queue.service_level_seconds
        self.wait_seconds_answered += waited
        self.wait_seconds_max = max(self.wait_seconds_max, waited)

    def on_abandoned(self, queue: Queue, waited: float) -> None:
        self.abandoned += 1
        self.abandoned_short += waited < queue.abandon_short_seconds
        self.wait_seconds_max = max(self.wait_seconds_max, waited)

    def on_talk_ended(self, talked: float) -> None:
        self.talk_seconds += talked
        self.talk_seconds_max = max(self.talk_seconds_max, talked)

    @property
    def service_level(self) -> float | None:
        counted = self.answered + self.abandoned - self.abandoned_short
        return self.answered_in_service_level / counted if counted else None

    @property
    def average_wait_seconds(self) -> float | None:
        return self.wait_seconds_answered / self.answered if self.answered else None

    @property
    def average_talk_seconds(self) -> float | None:
        return self.talk_seconds / self.answered if self.answered else None


@dataclass(slots=True)
class AgentKpi:
    offered: int = 0
    answered: int = 0
    missed: int = 0
    talk_seconds: float = 0.0
    talk_seconds_max: float = 0.0

    def on_talk_ended(self, talked: float) -> None:
        self.talk_seconds += talked
        self.talk_seconds_max = max(self.talk_seconds_max, talked)
