"""The runtime's dispatch and reconnect logic, driven by an in-memory ARI client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web_exceptions

from ari_apps.acd.machine import AcdMachine
from ari_apps.acd.models import AcdPolicy, AgentLeg, CallbackMissed
from ari_apps.machine import CallControl, StasisAppSpec
from ari_apps.models import AppCommand, CallEvent, Channel, ChannelDestroyed
from ari_apps.multiring.machine import MultiringMachine
from ari_apps.multiring.models import CancelPushes, FlatResolved, LookupFlat
from ari_apps.runtime import AriRuntime
from ari_apps.smoke.machine import SMOKE_APP
from softswitch.events.models import Event
from softswitch.settings import AriSettings
from tests.unit.test_multiring_machine import LOOKUP, POLICY

pytestmark = pytest.mark.unit


def stasis(kind: str, channel_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "application": "smoke", "channel": {"id": channel_id}, **extra}


class FakeChannels:
    """Records the ARI channel operations and plays Asterisk's part for hangup."""

    def __init__(self, client: FakeAriClient) -> None:
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

    async def hangup(self, *, channelId: str, reason: str = "normal") -> None:
        if self._client.lost_on_the_wire > 0:
            self._client.lost_on_the_wire -= 1
            raise aiohttp.ServerDisconnectedError()
        self._client.operations.append(("hangup", channelId, reason))
        self._client.push(stasis("StasisEnd", channelId))

    async def list(self) -> list[Json]:
        return [Json(c) for c in self._client.live_channels]

    async def ring(self, *, channelId: str) -> None:
        self._client.operations.append(("ring", channelId))

    async def originateWithId(self, *, channelId: str, endpoint: str, **params: Any) -> None:
        # Like aioswagger: a parameter passed as None is refused.
        if None in params.values():
            raise TypeError(f"originateWithId does not take None parameters: {params}")
        self._client.operations.append(("originate", channelId, endpoint))
        if endpoint in self._client.refused_endpoints:
            raise web_exceptions.HTTPBadRequest()


class FakeBridges:
    def __init__(self, client: FakeAriClient) -> None:
        self._client = client

    async def destroy(self, *, bridgeId: str) -> None:
        self._client.operations.append(("destroy", bridgeId))

    async def createWithId(self, *, bridgeId: str, **_: Any) -> None:
        self._client.operations.append(("bridge", bridgeId))

    async def addChannel(self, *, bridgeId: str, channel: list[str]) -> None:
        self._client.operations.append(("add", bridgeId, *channel))

    async def startMoh(self, *, bridgeId: str, mohClass: str) -> None:
        self._client.operations.append(("moh", bridgeId, mohClass))

    async def stopMoh(self, *, bridgeId: str) -> None:
        self._client.operations.append(("moh_off", bridgeId))

    async def list(self) -> list[Json]:
        return [Json(b) for b in self._client.live_bridges]


class FakeApplications:
    """Asterisk knows an app once its websocket is up."""

    def __init__(self, client: FakeAriClient) -> None:
        self._client = client

    async def get(self, *, applicationName: str) -> None:
        if self._client.subscribed_apps is None:
            raise web_exceptions.HTTPNotFound()


class FakeHttp:
    def __init__(self, client: FakeAriClient) -> None:
        self._client = client

    async def request(self, method: str, url: str, **_: Any) -> None:
        self._client.filtered.append(url.rsplit("/", 2)[-2])


class FakeSwagger:
    """aioari's swagger client: the runtime sends the event filter through its HTTP client."""

    def __init__(self, client: FakeAriClient) -> None:
        self.http_client = FakeHttp(client)


@dataclass
class Json:
    """aioari wraps every resource; the runtime reads its ``json``."""

    json: dict[str, Any]


class FakeAriClient:
    def __init__(self) -> None:
        self.operations: list[tuple[str, ...]] = []
        self.subscribed_apps: str | list[str] | None = None
        self.channels = FakeChannels(self)
        self.bridges = FakeBridges(self)
        self.applications = FakeApplications(self)
        self.live_channels: list[dict[str, Any]] = []
        self.live_bridges: list[dict[str, Any]] = []
        self.refused_endpoints: set[str] = set()
        self.lost_on_the_wire = 0
        self.swagger = FakeSwagger(self)
        self.filtered: list[str] = []
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


class EventList:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


EVENTS = EventList()


async def wait_until(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def serve(
    client: FakeAriClient, *apps: StasisAppSpec[Any], settings: AriSettings = SETTINGS
) -> tuple[asyncio.Event, Any]:
    """A runtime serving ``apps`` on ``client``; set the returned event to stop it."""

    async def connect(_: AriSettings) -> FakeAriClient:
        return client

    runtime = AriRuntime(settings, list(apps), events=EVENTS, connect=connect)
    stop = asyncio.Event()
    return stop, asyncio.create_task(runtime.run(stop))


async def test_a_call_is_answered_beeped_and_hung_up_in_order() -> None:
    client = FakeAriClient()
    stop, serving = await serve(client, SMOKE_APP)
    client.push(stasis("StasisStart", "c1"))
    await wait_until(lambda: ("hangup", "c1", "normal") in client.operations)
    assert client.operations == [
        ("answer", "c1"),
        ("play", "c1", "sound:beep"),
        ("hangup", "c1", "normal"),
    ]
    assert client.subscribed_apps == ["smoke"]
    await wait_until(lambda: client.filtered == ["smoke"])  # only event types apps read
    stop.set()
    await asyncio.wait_for(serving, 2)


async def test_events_of_other_apps_and_unknown_channels_are_ignored() -> None:
    client = FakeAriClient()
    stop, serving = await serve(client, SMOKE_APP)
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

    runtime = AriRuntime(SETTINGS, [SMOKE_APP], events=EVENTS, connect=connect)
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

    runtime = AriRuntime(
        AriSettings(reconnect_min_seconds=30), [SMOKE_APP], events=EVENTS, connect=connect
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(stop))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(serving, 1)


class FlatDirectoryServices:
    """The multiring app's services with a fixed flat: no database, no push gateway."""

    def __init__(self) -> None:
        self.commands: list[AppCommand] = []

    async def execute(self, command: AppCommand) -> CallEvent | None:
        self.commands.append(command)
        if isinstance(command, LookupFlat):
            return FlatResolved(lookup=LOOKUP)
        return None


def multiring_spec(services: FlatDirectoryServices) -> StasisAppSpec[Any]:
    return StasisAppSpec("multiring", MultiringMachine(POLICY), services)


def mr(kind: str, channel_id: str, **extra: Any) -> dict[str, Any]:
    return {**stasis(kind, channel_id, **extra), "application": "multiring"}


async def test_events_of_originated_legs_reach_the_call_that_made_them() -> None:
    client, services = FakeAriClient(), FlatDirectoryServices()
    stop, serving = await serve(client, multiring_spec(services))
    client.push(
        mr("StasisStart", "p1", args=["15"], channel={"id": "p1", "caller": {"number": "panel1"}})
    )
    await wait_until(lambda: sum(op[0] == "originate" for op in client.operations) == 3)
    client.push(
        mr(
            "ChannelStateChange",
            "multiring-p1-2",
            channel={"id": "multiring-p1-2", "state": "Ringing"},
        )
    )
    client.push(mr("StasisStart", "multiring-p1-1", args=["leg", "p1"]))
    await wait_until(lambda: ("add", "multiring-p1", "p1", "multiring-p1-1") in client.operations)
    hangups = {op[1:] for op in client.operations if op[0] == "hangup"}
    assert hangups == {
        ("multiring-p1-0", "answered_elsewhere"),
        ("multiring-p1-2", "answered_elsewhere"),
    }
    assert client.operations[:2] == [("ring", "p1"), ("bridge", "multiring-p1")]
    stop.set()
    await asyncio.wait_for(serving, 3)


async def test_a_refused_originate_reaches_the_machine_as_a_failed_leg() -> None:
    client, services = FakeAriClient(), FlatDirectoryServices()
    client.refused_endpoints = {POLICY.endpoint(d) for d in LOOKUP.flat.devices}  # type: ignore[union-attr]
    stop, serving = await serve(client, multiring_spec(services))
    client.push(
        mr("StasisStart", "p1", args=["15"], channel={"id": "p1", "caller": {"number": "panel1"}})
    )
    # Every leg refused: the call ends at once, the panel hears "busy/no answer", not silence.
    await wait_until(lambda: ("hangup", "p1", "no_answer") in client.operations)
    assert ("destroy", "multiring-p1") in client.operations
    stop.set()
    await asyncio.wait_for(serving, 3)


async def test_after_reconnect_orphans_of_ours_are_cleaned_up_and_conversations_adopted() -> None:
    client = FakeAriClient()
    client.live_channels = [
        # Waiting in our app when the previous process died.
        {"id": "lonely", "dialplan": {"app_name": "Stasis", "app_data": "multiring,15"}},
        # A leg we originated, still ringing.
        {"id": "multiring-old-3", "state": "Ringing"},
        # Another ARI client's channel: not ours to touch.
        {"id": "theirs", "dialplan": {"app_name": "Stasis", "app_data": "queue,1"}},
        # A conversation: panel and resident in our bridge.
        {
            "id": "panel",
            "state": "Up",
            "dialplan": {"app_name": "Stasis", "app_data": "multiring,7"},
        },
        {"id": "multiring-old-0", "state": "Up"},
    ]
    client.live_bridges = [
        {"id": "multiring-old", "channels": ["panel", "multiring-old-0"]},
        {"id": "multiring-empty", "channels": []},
        {"id": "theirs-bridge", "channels": ["theirs"]},
    ]
    stop, serving = await serve(client, multiring_spec(FlatDirectoryServices()))
    await wait_until(lambda: ("hangup", "multiring-old-3", "normal") in client.operations)
    assert ("hangup", "lonely", "normal") in client.operations
    assert ("destroy", "multiring-empty") in client.operations
    touched = {op[1] for op in client.operations}
    assert touched.isdisjoint(
        {"theirs", "theirs-bridge", "panel", "multiring-old-0", "multiring-old"}
    )
    # The resident hangs up: the adopted bridge takes the panel down with it.
    client.push(mr("ChannelDestroyed", "multiring-old-0"))
    await wait_until(lambda: ("destroy", "multiring-old") in client.operations)
    assert ("hangup", "panel", "normal") in client.operations
    stop.set()
    await asyncio.wait_for(serving, 3)


async def test_calls_hear_after_reconnect_which_of_their_channels_died_meanwhile() -> None:
    first, second = FakeAriClient(), FakeAriClient()
    clients = iter([first, second])

    async def connect(_: AriSettings) -> FakeAriClient:
        return next(clients)

    runtime = AriRuntime(
        SETTINGS, [multiring_spec(FlatDirectoryServices())], events=EVENTS, connect=connect
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(runtime.run(stop))
    first.push(
        mr("StasisStart", "p1", args=["15"], channel={"id": "p1", "caller": {"number": "panel1"}})
    )
    await wait_until(lambda: sum(op[0] == "originate" for op in first.operations) == 3)
    # Asterisk restarts: the new one has none of the call's channels.
    first.push(None)
    await wait_until(lambda: ("destroy", "multiring-p1") in second.operations)
    assert [op for op in second.operations if op[0] == "hangup"] != []
    stop.set()
    await asyncio.wait_for(serving, 3)


async def test_a_stasis_start_for_a_leg_whose_call_is_gone_is_hung_up() -> None:
    client = FakeAriClient()
    stop, serving = await serve(client, multiring_spec(FlatDirectoryServices()))
    client.push(mr("StasisStart", "multiring-gone-0", args=["leg", "gone"]))
    await wait_until(lambda: ("hangup", "multiring-gone-0", "normal") in client.operations)
    stop.set()
    await asyncio.wait_for(serving, 3)


async def test_shutdown_tells_calls_so_ringing_legs_are_not_left_behind() -> None:
    client = FakeAriClient()
    stop, serving = await serve(client, multiring_spec(FlatDirectoryServices()))
    client.push(
        mr("StasisStart", "p1", args=["15"], channel={"id": "p1", "caller": {"number": "panel1"}})
    )
    await wait_until(lambda: sum(op[0] == "originate" for op in client.operations) == 3)
    stop.set()
    await asyncio.wait_for(serving, 3)
    hung_up = {op[1] for op in client.operations if op[0] == "hangup"}
    assert hung_up == {"p1", "multiring-p1-0", "multiring-p1-1", "multiring-p1-2"}


async def test_a_hangup_lost_on_the_wire_is_sent_again() -> None:
    client = FakeAriClient()
    client.lost_on_the_wire = 2
    stop, serving = await serve(client, SMOKE_APP)
    client.push(stasis("StasisStart", "c1"))
    await wait_until(lambda: ("hangup", "c1", "normal") in client.operations)
    stop.set()
    await asyncio.wait_for(serving, 3)


async def test_a_call_whose_channels_vanished_without_an_event_is_ended_by_the_audit() -> None:
    client = FakeAriClient()
    settings = SETTINGS.model_copy(update={"audit_seconds": 0.05})
    stop, serving = await serve(client, multiring_spec(FlatDirectoryServices()), settings=settings)
    client.push(
        mr("StasisStart", "p1", args=["15"], channel={"id": "p1", "caller": {"number": "panel1"}})
    )
    await wait_until(lambda: sum(op[0] == "originate" for op in client.operations) == 3)
    # Asterisk lists none of the call's channels, and no ChannelDestroyed ever comes.
    await wait_until(lambda: ("destroy", "multiring-p1") in client.operations)
    assert {op[1] for op in client.operations if op[0] == "hangup"} == {
        "multiring-p1-0",
        "multiring-p1-1",
        "multiring-p1-2",
    }
    stop.set()
    await asyncio.wait_for(serving, 3)


class BrokenDirectory(FlatDirectoryServices):
    """Services that fail after the legs are out: the call's machine can go no further."""

    async def execute(self, command: AppCommand) -> CallEvent | None:
        if isinstance(command, CancelPushes):
            raise RuntimeError("push gateway client bug")
        return await super().execute(command)


async def test_a_call_that_fails_in_its_services_leaves_nothing_ringing() -> None:
    client = FakeAriClient()
    stop, serving = await serve(client, multiring_spec(BrokenDirectory()))
    client.push(
        mr("StasisStart", "p1", args=["15"], channel={"id": "p1", "caller": {"number": "panel1"}})
    )
    await wait_until(lambda: sum(op[0] == "originate" for op in client.operations) == 3)
    client.push(mr("StasisStart", "multiring-p1-1", args=["leg", "p1"]))  # win -> CancelPushes
    await wait_until(lambda: ("destroy", "multiring-p1") in client.operations)
    hung_up = {op[1] for op in client.operations if op[0] == "hangup"}
    assert hung_up == {"p1", "multiring-p1-0", "multiring-p1-1", "multiring-p1-2"}
    stop.set()
    await asyncio.wait_for(serving, 3)


class RecordingServices:
    def __init__(self) -> None:
        self.commands: list[AppCommand] = []

    async def execute(self, command: AppCommand) -> CallEvent | None:
        self.commands.append(command)
        return None


async def test_an_apps_background_spawns_calls_and_delivers_events_to_them() -> None:
    """A queue callback: no channel starts it; the app's background opens it, and later
    tells it things (here: the agent leg answered, then the supervisor stops it)."""
    client, services = FakeAriClient(), RecordingServices()
    machine = AcdMachine(AcdPolicy(sip_domain="pbx.test"))
    calls: list[CallControl] = []
    stopped = asyncio.Event()

    async def background(control: CallControl, stop: asyncio.Event) -> None:
        calls.append(control)
        await stop.wait()
        stopped.set()

    spec = StasisAppSpec("acd", machine, services, background)
    stop, serving = await serve(client, spec)
    await wait_until(lambda: client.subscribed_apps == ["acd"] and calls)
    agent = AgentLeg(agent_id="a1", account="1101")
    calls[0].spawn(
        "acd",
        "acd-cb-1",
        lambda now: machine.open_callback(
            now,
            call_id="acd-cb-1",
            waiter_id="w1",
            agent=agent,
            number="79130000001",
            order="agent_first",
            timeout_seconds=10,
        ),
    )
    await wait_until(
        lambda: ("originate", "acd-cb-1", "PJSIP/kamailio/sip:1101@pbx.test") in client.operations
    )
    client.push(
        {**stasis("StasisStart", "acd-cb-1", args=["leg", "acd-cb-1"]), "application": "acd"}
    )
    await wait_until(lambda: ("moh", "acd-acd-cb-1", "default") in client.operations)
    second = "acd-acd-cb-1-second"
    assert ("originate", second, "PJSIP/kamailio/sip:79130000001@pbx.test") in client.operations
    # An event delivered by the background reaches the spawned call like an ARI event.
    destroyed = ChannelDestroyed(
        type="ChannelDestroyed", application="acd", channel=Channel(id=second), cause=19
    )
    assert calls[0].deliver("acd-cb-1", destroyed)
    await wait_until(lambda: services.commands != [])
    assert services.commands == [CallbackMissed(waiter_id="w1", agent_id="a1")]
    assert not calls[0].deliver("no-such-call", destroyed)
    stop.set()
    await asyncio.wait_for(serving, 3)
    assert stopped.is_set()
