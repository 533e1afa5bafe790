"""The ARI runtime: one websocket for every Stasis app of the process, a worker per call.

aioari awaits each listener before it reads the next event, so a slow call would stall every
other one; the listener here only parses and hands the event to the call's mailbox. Each call
has one task that feeds its events, in order, to the app's pure machine and carries out the
commands. When Asterisk goes away the runtime reconnects with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aioari
import aiohttp
from aiohttp import web_exceptions
from aioswagger11.http_client import ApiKeyAuthenticator, AsynchronousHttpClient
from prometheus_client import Counter, Gauge

from ari_apps.machine import StasisAppSpec, Transition
from ari_apps.models import (
    Answer,
    AriEvent,
    CallEvent,
    Command,
    Hangup,
    MalformedEvent,
    Play,
    StartTimer,
    StasisEnd,
    StasisStart,
    TimerFired,
    event_channel_id,
    parse_event,
)
from softswitch.logs import call_context, event
from softswitch.reconnect import keep_connected
from softswitch.settings import AriSettings

log = logging.getLogger("softswitch.ari")

ARI_CONNECTED = Gauge("softswitch_ari_connected", "1 while the ARI websocket is up")
ARI_RECONNECTS = Counter("softswitch_ari_connect_attempts_total", "ARI connection attempts")
ARI_EVENTS = Counter("softswitch_ari_events_total", "ARI events received", ["app", "type"])
ARI_MALFORMED = Counter("softswitch_ari_malformed_events_total", "ARI events that failed to parse")
ARI_ACTIVE_CALLS = Gauge("softswitch_ari_active_calls", "Calls inside an app", ["app"])
ARI_COMMAND_ERRORS = Counter(
    "softswitch_ari_command_errors_total", "ARI commands Asterisk refused", ["app", "command"]
)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class CommandExecutor(Protocol):
    async def execute(self, command: Command) -> None: ...


class AriCommandExecutor:
    """Carries out channel commands over ARI REST, on whichever connection is current."""

    def __init__(self, current_client: Callable[[], Any]) -> None:
        self._current_client = current_client

    async def execute(self, command: Command) -> None:
        client = self._current_client()
        if client is None:
            raise aiohttp.ClientConnectionError("ARI is not connected")
        channels = client.channels
        match command:
            case Answer(channel_id=channel_id):
                await channels.answer(channelId=channel_id)
            case Play(channel_id=channel_id, media=media, playback_id=playback_id):
                await channels.playWithId(channelId=channel_id, playbackId=playback_id, media=media)
            case Hangup(channel_id=channel_id, reason=reason):
                await channels.hangup(channelId=channel_id, reason=reason)
            case StartTimer():
                raise TypeError("timers are the call worker's, not ARI's")


@dataclass
class CallWorker:
    """Runs one call: its events in order through the machine, commands in order to ARI."""

    app: StasisAppSpec[Any]
    executor: CommandExecutor
    clock: Clock
    mailbox: asyncio.Queue[CallEvent] = field(default_factory=asyncio.Queue)
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    async def run(self, start: StasisStart) -> None:
        transition = self.app.machine.start(start, self.clock())
        try:
            while True:
                await self._carry_out(transition)
                if transition.finished:
                    return
                incoming = await self.mailbox.get()
                transition = self.app.machine.step(transition.state, incoming, self.clock())
        finally:
            for handle in self._timers.values():
                handle.cancel()

    async def _carry_out(self, transition: Transition[Any]) -> None:
        for command in transition.commands:
            if isinstance(command, StartTimer):
                self._start_timer(command)
            else:
                try:
                    await self.executor.execute(command)
                except (web_exceptions.HTTPError, aiohttp.ClientError, OSError) as exc:
                    # The channel may be gone already (hangup races); the machine learns of
                    # it from StasisEnd, so a refused command is logged, not fatal.
                    ARI_COMMAND_ERRORS.labels(self.app.name, type(command).__name__).inc()
                    log.warning("ARI refused %s: %s", command, exc)

    def _start_timer(self, command: StartTimer) -> None:
        old = self._timers.pop(command.name, None)
        if old:
            old.cancel()
        fired = TimerFired(name=command.name)
        self._timers[command.name] = asyncio.get_running_loop().call_later(
            command.seconds, self.mailbox.put_nowait, fired
        )


async def connect_ari(settings: AriSettings) -> Any:
    """An initialised aioari client; the HTTP session is closed if initialisation fails."""
    password = settings.password.get_secret_value() if settings.password else ""
    host = urllib.parse.urlparse(settings.url).netloc.split(":")[0]
    http_client = AsynchronousHttpClient(
        auth=ApiKeyAuthenticator(host, f"{settings.user}:{password}")
    )
    client = aioari.Client(settings.url, http_client)
    try:
        await client.init()
    except BaseException:
        await http_client.close()
        raise
    return client


class AriRuntime:
    def __init__(
        self,
        settings: AriSettings,
        apps: Sequence[StasisAppSpec[Any]],
        *,
        clock: Clock = utc_now,
        connect: Callable[[AriSettings], Awaitable[Any]] = connect_ari,
    ) -> None:
        self._settings = settings
        self._apps = {app.name: app for app in apps}
        self._clock = clock
        self._connect = connect
        self._client: Any = None
        self._executor = AriCommandExecutor(lambda: self._client)
        self._calls: dict[tuple[str, str], CallWorker] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, reconnecting whenever Asterisk goes away."""
        await keep_connected(
            self._session,
            stop,
            what="ARI",
            failures=(OSError, aiohttp.ClientError, web_exceptions.HTTPError, ValueError),
            minimum=self._settings.reconnect_min_seconds,
            maximum=self._settings.reconnect_max_seconds,
        )
        await self._finish_calls()

    async def _session(self, stop: asyncio.Event) -> None:
        ARI_RECONNECTS.inc()
        await self._serve(await self._connect(self._settings), stop)

    async def _serve(self, client: Any, stop: asyncio.Event) -> None:
        self._client = client
        client.on_event("*", self._on_raw_event)
        ARI_CONNECTED.set(1)
        event(log, "ARI connected", apps=sorted(self._apps))
        reader = asyncio.create_task(client.run(apps=sorted(self._apps)))
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ARI_CONNECTED.set(0)
            self._client = None
            stopper.cancel()
            await client.close()
            with contextlib.suppress(Exception):
                await reader
        if not stop.is_set():
            log.warning("ARI websocket closed; reconnecting")

    def _on_raw_event(self, raw: dict[str, Any]) -> None:
        try:
            parsed = parse_event(raw)
        except MalformedEvent as exc:
            ARI_MALFORMED.inc()
            log.warning("malformed ARI event: %s", exc)
            return
        if parsed is None or parsed.application not in self._apps:
            return
        ARI_EVENTS.labels(parsed.application, parsed.type).inc()
        self._dispatch(parsed)

    def _dispatch(self, ari_event: AriEvent) -> None:
        channel_id = event_channel_id(ari_event)
        if channel_id is None:
            return
        key = (ari_event.application, channel_id)
        if isinstance(ari_event, StasisStart | StasisEnd):
            with call_context(
                app=ari_event.application,
                channel_id=channel_id,
                sip_call_id=ari_event.channel.sip_call_id,
            ):
                event(log, ari_event.type, args=getattr(ari_event, "args", None))
        if isinstance(ari_event, StasisStart) and key not in self._calls:
            self._start_call(key, ari_event)
        elif worker := self._calls.get(key):
            worker.mailbox.put_nowait(ari_event)

    def _start_call(self, key: tuple[str, str], start: StasisStart) -> None:
        app = self._apps[start.application]
        worker = CallWorker(app=app, executor=self._executor, clock=self._clock)
        self._calls[key] = worker
        ARI_ACTIVE_CALLS.labels(app.name).inc()

        async def run_call() -> None:
            with call_context(
                app=app.name, channel_id=start.channel.id, sip_call_id=start.channel.sip_call_id
            ):
                try:
                    await worker.run(start)
                except Exception:
                    log.exception("call worker failed")
                finally:
                    self._calls.pop(key, None)
                    ARI_ACTIVE_CALLS.labels(app.name).dec()

        task = asyncio.create_task(run_call())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_calls(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
