"""The runtime's dispatch and reconnect logic, driven by an in-memory ARI client."""

import asyncio
from typing import Any

import pytest

from ari_apps.runtime import AriRuntime
from ari_apps.smoke.machine import SMOKE_APP
from softswitch.settings import AriSettings

pytestmark = pytest.mark.unit


def stasis(kind: str, channel_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "application": "smoke", "channel": {"id": channel_id}, **extra}


class FakeChannels:
    """Records the ARI channel operations and plays Asterisk's part for hangup."""

    def __init__(self, client: "FakeAriClient") -> None:
        self._client = client

    async def answer(self, *, channelId: str) -> None:
        self._client.operations.append(("answer", channelId))

    async def playWithId(self, *, channelId: str, playbackId: str, media: str) -> None:
        self._client.operations.append(("play", channelId, media))
        self._client.push(
            {
                "type": "PlaybackFinished",
                "application": "smoke",
                "playback": {"id": playbackId, "target_uri": f"channel:{channelId}"},
            }
        )

    async def hangup(self, *, channelId: str, reason: str) -> None:
        self._client.operations.append(("hangup", channelId, reason))
        self._client.push(stasis("StasisEnd", channelId))


class FakeAriClient:
    def __init__(self) -> None:
        self.operations: list[tuple[str, ...]] = []
        self.subscribed_apps: str | list[str] | None = None
        self.channels = FakeChannels(self)
        self._listeners: list[Any] = []
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def push(self, raw: dict[str, Any] | None) -> None:
        self._inbox.put_nowait(raw)

    def on_event(self, event_type: str, callback: Any) -> None:
        assert event_type == "*"
        self._listeners.append(callback)

    async def run(self, apps: list[str]) -> None:
        self.subscribed_apps = apps
        while (raw := await self._inbox.get()) is not None:
            for listener in self._listeners:
                listener(raw)

    async def close(self) -> None:
        self.push(None)


SETTINGS = AriSettings(reconnect_min_seconds=0.01, reconnect_max_seconds=0.02)


async def wait_until(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_call_is_answered_beeped_and_hung_up_in_order() -> None:
    client = FakeAriClient()

    async def connect(_: AriSettings) -> FakeAriClient:
        return client

    runtime = AriRuntime(SETTINGS, [SMOKE_APP], connect=connect)
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(stop))
    client.push(stasis("StasisStart", "c1"))
    await wait_until(lambda: ("hangup", "c1", "normal") in client.operations)
    assert client.operations == [
        ("answer", "c1"),
        ("play", "c1", "sound:beep"),
        ("hangup", "c1", "normal"),
    ]
    assert client.subscribed_apps == ["smoke"]
    stop.set()
    await asyncio.wait_for(serving, 2)


async def test_events_of_other_apps_and_unknown_channels_are_ignored() -> None:
    client = FakeAriClient()

    async def connect(_: AriSettings) -> FakeAriClient:
        return client

    runtime = AriRuntime(SETTINGS, [SMOKE_APP], connect=connect)
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(stop))
    client.push({**stasis("StasisStart", "x1"), "application": "other"})
    client.push(stasis("StasisEnd", "never-started"))
    client.push({"type": "StasisStart", "application": "smoke"})  # malformed: no channel
    client.push(stasis("StasisStart", "c2"))
    await wait_until(lambda: ("hangup", "c2", "normal") in client.operations)
    assert [op for op in client.operations if op[1] != "c2"] == []
    stop.set()
    await asyncio.wait_for(serving, 2)


async def test_reconnects_with_backoff_when_asterisk_is_down_or_restarts() -> None:
    first, second = FakeAriClient(), FakeAriClient()
    attempts: list[str] = []

    async def connect(_: AriSettings) -> FakeAriClient:
        attempts.append("try")
        if len(attempts) == 1:
            raise OSError("connection refused")
        return first if len(attempts) == 2 else second

    runtime = AriRuntime(SETTINGS, [SMOKE_APP], connect=connect)
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(stop))
    await wait_until(lambda: first.subscribed_apps is not None)
    first.push(None)  # Asterisk restarted: the websocket closes
    await wait_until(lambda: second.subscribed_apps is not None)
    second.push(stasis("StasisStart", "after-restart"))
    await wait_until(lambda: ("hangup", "after-restart", "normal") in second.operations)
    assert len(attempts) == 3
    stop.set()
    await asyncio.wait_for(serving, 2)


async def test_stop_ends_the_runtime_even_while_asterisk_is_unreachable() -> None:
    async def connect(_: AriSettings) -> FakeAriClient:
        raise OSError("connection refused")

    runtime = AriRuntime(AriSettings(reconnect_min_seconds=30), [SMOKE_APP], connect=connect)
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(serving, 1)
