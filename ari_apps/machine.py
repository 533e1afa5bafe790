"""What every Stasis app provides: a pure per-call state machine.

``start`` opens a call from its StasisStart; ``step`` takes ``(state, event, now)`` and returns
the next state and the commands to carry out. No I/O, no clock, no awaits: races (a hangup
during answer, two events in one millisecond) are plain unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from ari_apps.models import CallEvent, Command, StasisStart

State = TypeVar("State")


@dataclass(frozen=True)
class Transition(Generic[State]):
    state: State
    commands: Sequence[Command] = ()
    finished: bool = False


class CallMachine(Protocol[State]):
    def start(self, event: StasisStart, now: datetime) -> Transition[State]: ...

    def step(self, state: State, event: CallEvent, now: datetime) -> Transition[State]: ...


@dataclass(frozen=True)
class StasisAppSpec(Generic[State]):
    """A Stasis app as the runtime registers it: its ARI name and its machine."""

    name: str
    machine: CallMachine[State]
