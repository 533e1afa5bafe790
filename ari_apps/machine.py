"""What every Stasis app provides: a pure per-call state machine.

``start`` opens a call from its StasisStart; ``step`` takes ``(state, event, now)`` and returns
the next state and the commands to carry out. No I/O, no clock, no awaits: races (a hangup
during answer, two legs answering in one millisecond) are plain unit tests.

A call may span several channels and bridges: the runtime routes every event about a channel
or bridge the call created (``Originate``/``CreateBridge`` ids) to the same machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from ari_apps.models import AppCommand, CallEvent, Command, StasisStart
from softswitch.events.models import Event

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


class CallControl(Protocol):
    """What an app's background work may do with calls: tell one something, or start one
    that no channel started (a queue callback begins with a call to the agent)."""

    def deliver(self, call_id: str, event: CallEvent) -> bool:
        """Feed ``event`` to the call; False when no such call is running."""
        ...

    def emit(self, event: Event) -> None:
        """Publish an event (through the outbox, never waited for)."""
        ...

    def spawn(self, app: str, call_id: str, opening: Callable[[datetime], Transition[Any]]) -> None:
        """Run a new call of ``app`` whose first transition is ``opening(now)``. ``call_id``
        is the id of the first channel it originates: events about it, and those delivered
        to ``call_id``, reach the call."""
        ...


Background = Callable[[CallControl, asyncio.Event], Coroutine[Any, Any, None]]
"""An app's own long-running work (a queue dispatcher, its HTTP API), run until the event."""


@dataclass(frozen=True)
class StasisAppSpec(Generic[State]):
    """A Stasis app as the runtime registers it: its ARI name, its machine, its services,
    and optionally its background work, started before ARI connects and kept through
    reconnects."""

    name: str
    machine: CallMachine[State]
    services: AppServices | None = None
    background: Background | None = None
