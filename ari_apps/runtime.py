"""The ARI runtime: one websocket for every Stasis app of the process, a worker per call.

aioari awaits each listener before it reads the next event, so a slow call would stall every
other one; the listener here only parses and hands the event to the owning call's mailbox.
Each call has one task that feeds its events, in order, to the app's pure machine and carries
out the commands; a call owns every channel and bridge it created, so all their events reach
the same machine in the order Asterisk sent them (two legs answering at once: one wins).

When Asterisk goes away the runtime reconnects with exponential backoff and reconciles: calls
learn which of their channels died meanwhile, and channels and bridges of ours nobody owns are
adopted or cleaned up (see ``reconcile``). On shutdown every call is told, and given a moment
to end what cannot outlive the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aioari
import aiohttp
from aiohttp import web_exceptions
from aioswagger11.http_client import ApiKeyAuthenticator, AsynchronousHttpClient
from prometheus_client import Counter, Gauge, Histogram

from ari_apps import reconcile
from ari_apps.adopted import ADOPTED_BRIDGE, adopt
from ari_apps.machine import AppServices, StasisAppSpec, StepMachine, Transition
from ari_apps.models import (
    KNOWN_EVENT_TYPES,
    AddToBridge,
    Answer,
    AppCommand,
    AriCommand,
    AriEvent,
    Bridge,
    CallEvent,
    Channel,
    ChannelDestroyed,
    ChannelEnteredBridge,
    ChannelLeftBridge,
    ChannelStateChange,
    Command,
    CommandFailed,
    Concurrently,
    CreateBridge,
    DestroyBridge,
    Emit,
    Hangup,
    InOrder,
    MalformedEvent,
    Originate,
    Play,
    Ring,
    RuntimeStopping,
    StartMoh,
    StartTimer,
    StasisEnd,
    StasisStart,
    StopMoh,
    TimerFired,
    event_channel_id,
    parse_event,
)
from softswitch.events.models import Event
from softswitch.logs import call_context, event
from softswitch.reconnect import keep_connected
from softswitch.settings import AriSettings

log = logging.getLogger("softswitch.ari")

ARI_CONNECTED = Gauge("softswitch_ari_connected", "1 while the ARI websocket is up")
ARI_RECONNECTS = Counter("softswitch_ari_connect_attempts_total", "ARI connection attempts")
ARI_EVENTS = Counter("softswitch_ari_events_total", "ARI events received", ["app", "type"])
ARI_MALFORMED = Counter("softswitch_ari_malformed_events_total", "ARI events that failed to parse")
ARI_ACTIVE_CALLS = Gauge("softswitch_ari_active_calls", "Calls inside an app", ["app"])
ARI_CALLS = Counter("softswitch_ari_calls_total", "Calls an app started or adopted", ["app"])
ARI_CALL_FAILURES = Counter(
    "softswitch_ari_call_failures_total", "Calls whose machine or services raised", ["app"]
)
ARI_COMMAND_ERRORS = Counter(
    "softswitch_ari_command_errors_total", "ARI commands Asterisk refused", ["app", "command"]
)
ARI_COMMAND_RETRIES = Counter(
    "softswitch_ari_command_retries_total",
    "ARI commands sent again after a transport error",
    ["app", "command"],
)
ARI_COMMAND_SECONDS = Histogram(
    "softswitch_ari_command_seconds",
    "Time to carry out a command (ARI round trip or app service)",
    ["app", "command"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ARI_RECONCILED = Counter(
    "softswitch_ari_reconciled_total",
    "Channels and bridges found after a (re)connect, by what was done with them",
    ["action"],
)

Clock = Callable[[], datetime]
# Machines ask for a hangup by name; a refused command is worth a metric, not a crash.
ARI_FAILURES = (web_exceptions.HTTPError, aiohttp.ClientError, OSError)
DRAIN_SECONDS = 2.0
ARI_MAX_CONNECTIONS = 32
# A request that died on the wire (not one Asterisk refused) is sent again this often.
TRANSPORT_RETRIES = 2
REGISTRATION_WAIT_SECONDS = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class AriCommandExecutor:
    """Carries out ARI commands over REST, on whichever connection is current."""

    def __init__(self, current_client: Callable[[], Any], app_names: Sequence[str]) -> None:
        self._current_client = current_client
        self._app_names = ",".join(app_names)

    async def execute(self, command: AriCommand, app: str) -> None:
        client = self._current_client()
        if client is None:
            raise aiohttp.ClientConnectionError("ARI is not connected")
        channels, bridges = client.channels, client.bridges
        match command:
            case Answer(channel_id=channel_id):
                await channels.answer(channelId=channel_id)
            case Ring(channel_id=channel_id):
                await channels.ring(channelId=channel_id)
            case Play(channel_id=channel_id, media=media, playback_id=playback_id):
                await channels.playWithId(channelId=channel_id, playbackId=playback_id, media=media)
            case Hangup(channel_id=channel_id, reason=reason):
                await channels.hangup(channelId=channel_id, reason=reason)
            case Originate():
                # aioswagger refuses a parameter passed as None: leave empty ones out.
                optional = {"callerId": command.caller_id, "variables": command.variables}
                await channels.originateWithId(
                    channelId=command.channel_id,
                    endpoint=command.endpoint,
                    app=app,
                    appArgs=",".join(command.app_args),
                    timeout=command.timeout_seconds,
                    **{name: value for name, value in optional.items() if value},
                )
            case CreateBridge(bridge_id=bridge_id, name=name):
                await bridges.createWithId(
                    bridgeId=bridge_id, type="mixing", **({"name": name} if name else {})
                )
            case AddToBridge(bridge_id=bridge_id, channel_ids=channel_ids):
                await bridges.addChannel(bridgeId=bridge_id, channel=list(channel_ids))
            case DestroyBridge(bridge_id=bridge_id):
                await bridges.destroy(bridgeId=bridge_id)
            case StartMoh(bridge_id=bridge_id, music_class=music_class):
                await bridges.startMoh(bridgeId=bridge_id, mohClass=music_class)
            case StopMoh(bridge_id=bridge_id):
                await bridges.stopMoh(bridgeId=bridge_id)


@dataclass(eq=False)
class CallWorker:
    """Runs one call: its events in order through the machine, its commands in order."""

    app: str
    machine: StepMachine[Any]
    services: AppServices | None
    runtime: AriRuntime
    clock: Clock
    mailbox: asyncio.Queue[CallEvent] = field(default_factory=asyncio.Queue)
    owned: set[str] = field(default_factory=set)
    bridges: set[str] = field(default_factory=set)
    _timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)

    async def run(self, opening: Callable[[], Transition[Any]]) -> None:
        transition = opening()
        try:
            while True:
                await self._carry_out(transition.commands)
                if transition.finished:
                    return
                incoming = await self.mailbox.get()
                transition = self.machine.step(transition.state, incoming, self.clock())
        finally:
            for handle in self._timers.values():
                handle.cancel()

    async def _carry_out(self, commands: Sequence[Command]) -> None:
        for command in commands:
            await self._execute(command)

    async def _execute(self, command: Command) -> None:
        match command:
            case StartTimer():
                self._start_timer(command)
            case Emit(event=call_event):
                self.runtime.events.emit(call_event)
            case Concurrently(commands=parallel):
                await asyncio.gather(*(self._execute(each) for each in parallel))
            case InOrder(commands=sequence):
                await self._carry_out(sequence)
            case AppCommand():
                await self._execute_app_command(command)
            case _:
                await self._execute_ari(command)

    async def _execute_app_command(self, command: AppCommand) -> None:
        if self.services is None:
            raise TypeError(f"{self.app} has no services for {type(command).__name__}")
        started = time.perf_counter()
        answer = await self.services.execute(command)
        ARI_COMMAND_SECONDS.labels(self.app, type(command).__name__).observe(
            time.perf_counter() - started
        )
        if answer is not None:
            self.mailbox.put_nowait(answer)

    async def _execute_ari(self, command: AriCommand) -> None:
        if isinstance(command, Originate):
            self.runtime.claim(command.channel_id, self)
        elif isinstance(command, CreateBridge):
            self.runtime.claim(command.bridge_id, self)
            self.bridges.add(command.bridge_id)
        name = type(command).__name__
        started = time.perf_counter()
        try:
            await self._send_with_retries(command)
        except ARI_FAILURES as exc:
            # The channel may be gone already (hangup races); the machine hears of it.
            ARI_COMMAND_ERRORS.labels(self.app, name).inc()
            log.warning("ARI refused %s: %s", command, exc)
            status = getattr(exc, "status", None)
            self.mailbox.put_nowait(CommandFailed(command=command, status=status))
        finally:
            ARI_COMMAND_SECONDS.labels(self.app, name).observe(time.perf_counter() - started)

    async def _send_with_retries(self, command: AriCommand) -> None:
        """A hangup lost on the wire would leave a device ringing: try again. An HTTP error
        is Asterisk's answer (the channel is gone, ...), never retried."""
        for attempt in range(TRANSPORT_RETRIES + 1):
            try:
                await self.runtime.executor.execute(command, self.app)
                return
            except web_exceptions.HTTPError:
                raise
            except (aiohttp.ClientError, OSError):
                if attempt == TRANSPORT_RETRIES or isinstance(command, Originate):
                    raise  # an originate sent twice could ring a device twice
                ARI_COMMAND_RETRIES.labels(self.app, type(command).__name__).inc()
                await asyncio.sleep(0.05 * (attempt + 1))

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
    # Asterisk serves a bounded number of HTTP sessions (its websocket included): keep the
    # REST pool well below it, requests queue here instead of being refused there.
    await http_client.session.close()
    http_client.session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=ARI_MAX_CONNECTIONS)
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
        events: EventSink,
        clock: Clock = utc_now,
        connect: Callable[[AriSettings], Awaitable[Any]] = connect_ari,
    ) -> None:
        self._settings = settings
        self._apps = {app.name: app for app in apps}
        self._clock = clock
        self._connect = connect
        self._client: Any = None
        self.events = events
        self.executor = AriCommandExecutor(lambda: self._client, sorted(self._apps))
        self._owners: dict[str, CallWorker] = {}
        self._workers: dict[CallWorker, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, reconnecting whenever Asterisk goes away."""
        background = [
            asyncio.ensure_future(app.background(self, stop))
            for app in self._apps.values()
            if app.background is not None
        ]
        try:
            await keep_connected(
                self._session,
                stop,
                what="ARI",
                failures=(*ARI_FAILURES, ValueError),
                minimum=self._settings.reconnect_min_seconds,
                maximum=self._settings.reconnect_max_seconds,
            )
            await self._cancel_workers()
        finally:
            stop.set()
            await asyncio.gather(*background)

    def deliver(self, call_id: str, event: CallEvent) -> bool:
        owner = self._owners.get(call_id)
        if owner is None:
            return False
        owner.mailbox.put_nowait(event)
        return True

    def emit(self, event: Event) -> None:
        self.events.emit(event)

    def spawn(self, app: str, call_id: str, opening: Callable[[datetime], Transition[Any]]) -> None:
        spec = self._apps[app]
        worker = self._start_worker(
            app, spec.machine, spec.services, lambda: opening(self._clock()), None
        )
        self.claim(call_id, worker)

    def claim(self, object_id: str, worker: CallWorker) -> None:
        """Route every later event about this channel or bridge to ``worker``."""
        self._owners[object_id] = worker
        worker.owned.add(object_id)

    async def _session(self, stop: asyncio.Event) -> None:
        ARI_RECONNECTS.inc()
        await self._serve(await self._connect(self._settings), stop)

    async def _serve(self, client: Any, stop: asyncio.Event) -> None:
        self._client = client
        client.on_event("*", self._on_raw_event)
        stopper = asyncio.create_task(stop.wait())
        reader: asyncio.Task[None] | None = None
        auditor: asyncio.Task[None] | None = None
        try:
            # The snapshot is taken before the websocket: whatever it holds predates this
            # session, so nothing in it can be a call this session is about to start.
            before = await self._snapshot(client)
            # Only calls from before this session can have missed events; a call that starts
            # now may own a leg Asterisk does not list yet.
            owned_before = dict(self._owners)
            reader = asyncio.create_task(client.run(apps=sorted(self._apps)))
            await self._wait_registered(client, reader)
            await self._filter_events(client)
            ARI_CONNECTED.set(1)
            event(log, "ARI connected", apps=sorted(self._apps))
            await self._reconcile(before, await self._snapshot(client), owned_before)
            auditor = asyncio.create_task(self._audit(client))
            await asyncio.wait({reader, stopper, auditor}, return_when=asyncio.FIRST_COMPLETED)
            if auditor.done():
                await auditor  # its failure (Asterisk gone) ends the session like the reader's
            if stop.is_set():
                await self._drain()
        finally:
            ARI_CONNECTED.set(0)
            self._client = None
            stopper.cancel()
            if auditor is not None:
                auditor.cancel()
            await client.close()
            if reader is not None:
                with contextlib.suppress(Exception):
                    await reader
        if not stop.is_set():
            log.warning("ARI websocket closed; reconnecting")

    async def _snapshot(self, client: Any) -> tuple[list[Channel], list[Bridge]]:
        channels = [Channel.model_validate(c.json) for c in await client.channels.list()]
        bridges = [Bridge.model_validate(b.json) for b in await client.bridges.list()]
        return channels, bridges

    async def _wait_registered(self, client: Any, reader: asyncio.Task[None]) -> None:
        """Until Asterisk knows our apps: only then is the websocket delivering events."""
        first_app = min(self._apps)
        deadline = time.monotonic() + REGISTRATION_WAIT_SECONDS
        while not reader.done() and time.monotonic() < deadline:
            try:
                await client.applications.get(applicationName=first_app)
                return
            except web_exceptions.HTTPNotFound:
                await asyncio.sleep(0.02)
        if reader.done():
            await reader
        raise aiohttp.ClientConnectionError(f"ARI app {first_app} did not register")

    async def _filter_events(self, client: Any) -> None:
        """Ask Asterisk for the event types our apps read, nothing else.

        A ringing leg produces dozens of events no app reads (ChannelVarset for every
        variable, Dial, ChannelDialplan, ...); each costs Asterisk its JSON and us a
        websocket frame and a parse.
        """
        allowed = json.dumps({"allowed": [{"type": kind} for kind in sorted(KNOWN_EVENT_TYPES)]})
        base = self._settings.url.rstrip("/")
        for app in self._apps:
            await client.swagger.http_client.request(
                "PUT",
                f"{base}/ari/applications/{app}/eventFilter",
                data=allowed,
                headers={"Content-Type": "application/json"},
            )

    async def _reconcile(
        self,
        before: tuple[list[Channel], list[Bridge]],
        now: tuple[list[Channel], list[Bridge]],
        owned_before: dict[str, CallWorker],
    ) -> None:
        channels, bridges = before
        decided = reconcile.plan(channels, bridges, apps=self._apps, owned=owned_before.keys())
        for bridge in decided.adopt:
            ARI_RECONCILED.labels("adopted").inc()
            event(log, "adopted bridge", bridge_id=bridge.bridge_id, channels=bridge.channel_ids)
            worker = self._start_worker(
                bridge.app, ADOPTED_BRIDGE, None, functools.partial(adopt, bridge), None
            )
            for object_id in (bridge.bridge_id, *bridge.channel_ids):
                self.claim(object_id, worker)
        cleanup: list[AriCommand] = [
            *(DestroyBridge(bridge_id=b) for b in decided.destroy_bridges),
            *(Hangup(channel_id=c) for c in decided.hang_up),
        ]
        for command in cleanup:
            ARI_RECONCILED.labels(type(command).__name__).inc()
            event(log, "cleaning up after reconnect", command=repr(command))
            with contextlib.suppress(*ARI_FAILURES):
                await self.executor.execute(command, "")
        # Calls of this process: tell each what became of its channels while we were away.
        live = {channel.id: channel for channel in now[0]}
        for object_id, worker in owned_before.items():
            if self._owners.get(object_id) is worker and object_id in live:
                worker.mailbox.put_nowait(
                    ChannelStateChange(
                        type="ChannelStateChange",
                        application=worker.app,
                        channel=live[object_id],
                        resynced=True,
                    )
                )
        self._report_gone(owned_before, now, "gone while ARI was disconnected")

    def _report_gone(
        self,
        owned: dict[str, CallWorker],
        snapshot: tuple[list[Channel], list[Bridge]],
        why: str,
    ) -> None:
        """Tell each call which of its channels (still owned since ``owned`` was taken) Asterisk
        no longer has: the ChannelDestroyed it missed."""
        present = {c.id for c in snapshot[0]} | {b.id for b in snapshot[1]}
        for object_id, worker in owned.items():
            if self._owners.get(object_id) is worker and object_id not in present:
                ARI_RECONCILED.labels("missed_destroy").inc()
                worker.mailbox.put_nowait(
                    ChannelDestroyed(
                        type="ChannelDestroyed",
                        application=worker.app,
                        channel=Channel(id=object_id),
                        cause_txt=why,
                    )
                )

    async def _audit(self, client: Any) -> None:
        """Every ``audit_seconds``: a call still holding a channel Asterisk no longer has (an
        event lost under overload, a bug) hears that it is gone, so no call and none of its
        state stays in memory forever. Only claims older than one round count: a leg being
        originated right now is not listed yet."""
        owned_then = dict(self._owners)
        while True:
            await asyncio.sleep(self._settings.audit_seconds)
            self._report_gone(owned_then, await self._snapshot(client), "gone without an event")
            owned_then = dict(self._owners)

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
        owner = self._owners.get(channel_id)
        if owner is None and isinstance(ari_event, ChannelEnteredBridge | ChannelLeftBridge):
            owner = self._owners.get(ari_event.bridge.id)
        if isinstance(ari_event, StasisStart | StasisEnd):
            with call_context(
                app=ari_event.application,
                channel_id=channel_id,
                sip_call_id=ari_event.channel.sip_call_id,
            ):
                event(log, ari_event.type, args=getattr(ari_event, "args", None))
        if owner is not None:
            owner.mailbox.put_nowait(ari_event)
        elif isinstance(ari_event, StasisStart):
            self._start_call(ari_event)

    def _start_call(self, start: StasisStart) -> None:
        app = self._apps[start.application]
        if reconcile.app_of(start.channel.id, self._apps):
            # A leg we originated whose call is gone (this process restarted): nobody wants it.
            ARI_RECONCILED.labels("orphan_leg").inc()
            asyncio.get_running_loop().create_task(self._hang_up_quietly(start.channel.id))
            return
        worker = self._start_worker(
            app.name,
            app.machine,
            app.services,
            lambda: app.machine.start(start, self._clock()),
            start.channel,
        )
        self.claim(start.channel.id, worker)

    async def _hang_up_quietly(self, channel_id: str) -> None:
        with contextlib.suppress(*ARI_FAILURES):
            await self.executor.execute(Hangup(channel_id=channel_id), "")

    def _start_worker(
        self,
        app: str,
        machine: StepMachine[Any],
        services: AppServices | None,
        opening: Callable[[], Transition[Any]],
        channel: Channel | None,
    ) -> CallWorker:
        worker = CallWorker(app, machine, services, self, self._clock)
        ARI_ACTIVE_CALLS.labels(app).inc()
        ARI_CALLS.labels(app).inc()

        async def run_call() -> None:
            with call_context(
                app=app,
                channel_id=channel.id if channel else None,
                sip_call_id=channel.sip_call_id if channel else None,
            ):
                try:
                    await worker.run(opening)
                except Exception:
                    ARI_CALL_FAILURES.labels(app).inc()
                    log.exception("call worker failed; hanging up its channels")
                    await self._abandon(worker)
                finally:
                    for object_id in worker.owned:
                        if self._owners.get(object_id) is worker:
                            del self._owners[object_id]
                    self._workers.pop(worker, None)
                    ARI_ACTIVE_CALLS.labels(app).dec()

        self._workers[worker] = asyncio.create_task(run_call())
        return worker

    async def _abandon(self, worker: CallWorker) -> None:
        """A call whose machine or services failed: nothing of it may stay ringing or bridged."""
        cleanup: list[AriCommand] = [
            DestroyBridge(bridge_id=object_id) if object_id in worker.bridges
            else Hangup(channel_id=object_id, reason="congestion")
            for object_id in worker.owned
        ]  # fmt: skip
        for command in cleanup:
            with contextlib.suppress(*ARI_FAILURES):
                await self.executor.execute(command, worker.app)

    async def _drain(self) -> None:
        """Tell every call we are stopping and give them a moment to carry that out."""
        if not self._workers:
            return
        for worker in self._workers:
            worker.mailbox.put_nowait(RuntimeStopping())
        await asyncio.wait(list(self._workers.values()), timeout=DRAIN_SECONDS)

    async def _cancel_workers(self) -> None:
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
