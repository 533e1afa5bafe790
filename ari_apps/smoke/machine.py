"""The smoke call: answer, beep, hang up; a guard timer hangs up if playback never finishes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from ari_apps.machine import StasisAppSpec, Transition
from ari_apps.models import (
    Answer,
    CallEvent,
    Hangup,
    Play,
    PlaybackFinished,
    StartTimer,
    StasisEnd,
    StasisStart,
    TimerFired,
)

BEEP = "sound:beep"
GUARD_TIMER = "guard"
GUARD_SECONDS = 5.0


@dataclass(frozen=True)
class SmokeCall:
    channel_id: str
    phase: Literal["playing", "hanging_up"]

    @property
    def playback_id(self) -> str:
        return f"{self.channel_id}-beep"


class SmokeMachine:
    def start(self, event: StasisStart, now: datetime) -> Transition[SmokeCall]:
        call = SmokeCall(channel_id=event.channel.id, phase="playing")
        return Transition(
            call,
            (
                Answer(channel_id=call.channel_id),
                Play(channel_id=call.channel_id, media=BEEP, playback_id=call.playback_id),
                StartTimer(name=GUARD_TIMER, seconds=GUARD_SECONDS),
            ),
        )

    def step(self, state: SmokeCall, event: CallEvent, now: datetime) -> Transition[SmokeCall]:
        if isinstance(event, StasisEnd):
            return Transition(state, finished=True)
        beep_done = isinstance(event, PlaybackFinished) and event.playback.id == state.playback_id
        guard_ran_out = isinstance(event, TimerFired) and event.name == GUARD_TIMER
        if state.phase == "playing" and (beep_done or guard_ran_out):
            return Transition(
                replace(state, phase="hanging_up"), (Hangup(channel_id=state.channel_id),)
            )
        return Transition(state)


SMOKE_APP: StasisAppSpec[SmokeCall] = StasisAppSpec(name="smoke", machine=SmokeMachine())
