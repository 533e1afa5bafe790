"""What every Stasis app provides: a pure per-call state machine.

``start`` opens a call from its StasisStart; ``step`` takes ``(state, event, now)`` and returns
the next state and the commands to carry out. No I/O, no clock, no awaits: races (a hangup
during answer, two legs answering in one millisecond) are plain unit tests.

A call may span several channels and bridges: the runtime routes every event about a channel
or bridge the call created (``Originate``/``CreateBridge`` ids) to the same machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from ari_apps.models import AppCommand, CallEvent, Command, StasisStart

State = TypeVar("State")


@dataclass(frozen=True)
class Transition(Generic[State]):
    state: State
    commands: Sequence[Command] = ()
    finished: bool = False


class StepMachine(Protocol[State]):
    def step(self, state: State, event: CallEvent, now: datetime) -> Transition[State]: ...


class CallMachine(StepMachine[State], Protocol[State]):
    def start(self, event: StasisStart, now: datetime) -> Transition[State]: ...


class AppServices(Protocol):
    """Carries out an app's own commands (directory lookups, pushes); may answer with an event
    that the runtime feeds back into the call."""

    async def execute(self, command: AppCommand) -> CallEvent | None: ...


@dataclass(frozen=True)
class StasisAppSpec(Generic[State]):
    """A Stasis app as the runtime registers it: its ARI name, its machine, its services."""

    name: str
    machine: CallMachine[State]
    services: AppServices | None = None
