from datetime import UTC, datetime

import pytest

from ari_apps.models import (
    Answer,
    Channel,
    Hangup,
    Play,
    Playback,
    PlaybackFinished,
    StartTimer,
    StasisEnd,
    StasisStart,
    TimerFired,
)
from ari_apps.smoke.machine import GUARD_TIMER, SmokeCall, SmokeMachine

pytestmark = pytest.mark.unit
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CHANNEL = Channel(id="1700000000.1")
machine = SmokeMachine()


def started() -> SmokeCall:
    transition = machine.start(
        StasisStart(type="StasisStart", application="smoke", channel=CHANNEL), NOW
    )
    assert transition.commands == (
        Answer(channel_id=CHANNEL.id),
        Play(channel_id=CHANNEL.id, media="sound:beep", playback_id=f"{CHANNEL.id}-beep"),
        StartTimer(name=GUARD_TIMER, seconds=5.0),
    )
    return transition.state


def finished_playback(playback_id: str) -> PlaybackFinished:
    return PlaybackFinished(
        type="PlaybackFinished",
        application="smoke",
        playback=Playback(id=playback_id, target_uri=f"channel:{CHANNEL.id}"),
    )


def test_hangs_up_when_the_beep_finishes() -> None:
    transition = machine.step(started(), finished_playback(f"{CHANNEL.id}-beep"), NOW)
    assert transition.commands == (Hangup(channel_id=CHANNEL.id),)
    assert transition.state.phase == "hanging_up"


def test_another_playback_finishing_changes_nothing() -> None:
    state = started()
    transition = machine.step(state, finished_playback("someone-else"), NOW)
    assert transition.commands == ()
    assert transition.state == state


def test_guard_timer_hangs_up_when_playback_never_finishes() -> None:
    transition = machine.step(started(), TimerFired(name=GUARD_TIMER), NOW)
    assert transition.commands == (Hangup(channel_id=CHANNEL.id),)


def test_hangs_up_once_even_if_beep_and_guard_both_arrive() -> None:
    first = machine.step(started(), finished_playback(f"{CHANNEL.id}-beep"), NOW)
    second = machine.step(first.state, TimerFired(name=GUARD_TIMER), NOW)
    assert second.commands == ()


def test_caller_hanging_up_first_ends_the_call_without_commands() -> None:
    transition = machine.step(
        started(), StasisEnd(type="StasisEnd", application="smoke", channel=CHANNEL), NOW
    )
    assert transition.finished
    assert transition.commands == ()
