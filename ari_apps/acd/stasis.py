"""The ACD's I/O around the pure ``AcdCenter``: calls, PostgreSQL, Kamailio, timers.

Queue calls talk to the center through their app commands; the center's answers are carried
out here: agents to ring are checked against Kamailio first (a phone already on a call that
did not come from a queue is not rung, and its agent is marked busy elsewhere), callbacks are
spawned as calls of their own, agent statuses and callback requests are written to
PostgreSQL (coalesced, in order, off the call path), events are published, wake-ups armed.

In the background: the configuration is loaded (and reloaded on NOTIFY acd_config_changed,
so SQL edits apply to the next decision), callback requests kept in PostgreSQL are restored,
and the phones of logged-in agents are checked every few seconds, which also heals statuses
after a restart: an agent left ringing or busy by a process that died is free again unless
Kamailio shows its phone on a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
from prometheus_client import Counter, Gauge

from acd.agents import phone_settling
from acd.center import (
    AcdCenter,
    AgentPhone,
    CallbackAccepted,
    CallbackFailed,
    CancelRing,
    CenterCommand,
    CenterEvent,
    CountCallbackAttempt,
    Dismiss,
    FinishCallback,
    Join,
    Leave,
    OfferAnswered,
    OfferFailed,
    Outcome,
    Overflow,
    Publish,
    Reconfigure,
    RequestCallback,
    RestoreCallbacks,
    RingAgents,
    SaveAgents,
    SaveCallback,
    TalkEnded,
    WakeAt,
)
from acd.models import Agent, Waiter
from acd.store import (
    count_callback_attempt,
    finish_callback,
    load_acd,
    load_callbacks,
    save_agents,
    save_callback,
)
from ari_apps.acd.machine import APP, AcdMachine
from ari_apps.acd.models import (
    AgentAnswered,
    AgentLeg,
    AgentLegFailed,
    AskCallback,
    AskPosition,
    CallbackBooked,
    CallbackMissed,
    CallbackRefused,
    DismissCaller,
    JoinQueue,
    LeaveQueue,
    NotQueued,
    OverflowTo,
    PositionIs,
    Queued,
    RingAgentsNow,
    StopRinging,
    TalkOver,
)
from ari_apps.machine import CallControl
from ari_apps.models import AppCommand, AppEvent, CallEvent
from softswitch.db import KeptConnection
from softswitch.kamailio_rpc import KamailioRpc, KamailioRpcError
from softswitch.reconnect import keep_connected
from softswitch.settings import AcdSettings

log = logging.getLogger("softswitch.acd")

ACD_REFUSED = Counter(
    "softswitch_acd_refused_total", "Inputs the ACD refused (stale or invalid)", ["input"]
)
ACD_BUSY_ELSEWHERE = Counter(
    "softswitch_acd_busy_elsewhere_total",
    "Agents found on a call that did not come from a queue when about to be rung",
)
ACD_DATABASE_ERRORS = Counter(
    "softswitch_acd_database_errors_total", "ACD writes that failed (retried)"
)
ACD_CONFIG_LOADS = Counter("softswitch_acd_config_loads_total", "ACD configuration (re)loads")
ACD_READY = Gauge("softswitch_acd_ready", "1 once the ACD configuration is loaded")

CONFIG_CHANNEL = "acd_config_changed"
READY_WAIT_SECONDS = 5.0
WRITE_RETRY_SECONDS = 1.0

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class AcdServices:
    def __init__(
        self,
        *,
        database: KeptConnection,
        kamailio: KamailioRpc,
        settings: AcdSettings,
        machine: AcdMachine,
        database_url: str,
        clock: Clock = utc_now,
    ) -> None:
        self._db = database
        self._kamailio = kamailio
        self._settings = settings
        self._machine = machine
        self._database_url = database_url
        self._clock = clock
        self.center = AcdCenter((), (), ())
        self.ready = asyncio.Event()
        self._calls: CallControl | None = None
        self._callback_calls: dict[str, str] = {}
        self._callback_attempts = 0
        self._dirty_agents: dict[str, Agent] = {}
        self._writes: deque[Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]] = deque()
        self._wrote = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # From queue calls

    async def execute(self, command: AppCommand) -> CallEvent | None:
        match command:
            case JoinQueue():
                return await self._join(command)
            case LeaveQueue(waiter_id=waiter_id):
                self.handle(Leave(waiter_id))
            case AgentAnswered(waiter_id=waiter_id, agent_id=agent_id):
                self.handle(OfferAnswered(waiter_id, agent_id))
            case AgentLegFailed(waiter_id=waiter_id, agent_id=agent_id, busy=busy):
                self._callback_calls.pop(waiter_id, None)
                self.handle(OfferFailed(waiter_id, agent_id, busy_elsewhere=busy))
            case TalkOver(waiter_id=waiter_id, agent_id=agent_id):
                self._callback_calls.pop(waiter_id, None)
                self.handle(TalkEnded(waiter_id, agent_id))
            case AskCallback(waiter_id=waiter_id):
                if self.handle(RequestCallback(waiter_id)).refused is not None:
                    return CallbackRefused()
            case CallbackMissed(waiter_id=waiter_id, agent_id=agent_id):
                self._callback_calls.pop(waiter_id, None)
                self.handle(CallbackFailed(waiter_id, agent_id))
            case AskPosition(waiter_id=waiter_id):
                return PositionIs(position=self.center.position(waiter_id))
        return None

    async def _join(self, command: JoinQueue) -> CallEvent:
        try:
            await asyncio.wait_for(self.ready.wait(), READY_WAIT_SECONDS)
        except TimeoutError:
            return NotQueued(reason="queue configuration not loaded (database down?)")
        waiter = Waiter(
            waiter_id=command.waiter_id,
            queue_id=command.queue_id,
            waiting_since=command.waiting_since,
            priority=command.priority,
            number=command.number,
        )
        refused = self.handle(Join(waiter)).refused
        if refused is not None:
            return NotQueued(reason=refused)
        queue = self.center.queue(command.queue_id)
        return Queued(
            music_class=queue.music_class,
            callback_key=queue.callback_key if queue.callback_enabled else None,
            announce_seconds=queue.announce_seconds,
        )

    # The center

    def handle(self, event: CenterEvent) -> Outcome:
        """Feed the center (calls, timers, supervisors) and carry out what it decided."""
        outcome = self.center.handle(event, self._clock())
        if outcome.refused is not None:
            ACD_REFUSED.labels(type(event).__name__).inc()
            log.info("ACD refused %s: %s", event, outcome.refused)
        for command in outcome.commands:
            self._carry_out(command)
        return outcome

    def _carry_out(self, command: CenterCommand) -> None:
        match command:
            case RingAgents():
                self._spawn_task(self._ring(command))
            case CancelRing(waiter_id=waiter_id, agent_ids=agent_ids):
                self._tell(waiter_id, StopRinging(agent_ids=agent_ids))
            case Overflow(waiter_id=waiter_id, destination=destination):
                self._tell(waiter_id, OverflowTo(destination=destination))
            case Dismiss(waiter_id=waiter_id, goodbye=goodbye):
                self._tell(waiter_id, DismissCaller(goodbye=goodbye))
            case CallbackAccepted(waiter_id=waiter_id):
                self._tell(waiter_id, CallbackBooked())
            case SaveAgents(agents=agents):
                for agent in agents:
                    self._dirty_agents[agent.agent_id] = agent
                self._wrote.set()
            case SaveCallback(request=request):
                self._write(lambda conn: save_callback(conn, request))
            case FinishCallback(callback_id=callback_id, state=state):
                self._write(lambda conn: finish_callback(conn, callback_id, state))
            case CountCallbackAttempt(callback_id=callback_id):
                self._write(lambda conn: count_callback_attempt(conn, callback_id))
            case Publish(event=event):
                if self._calls is not None:
                    self._calls.emit(event)
            case WakeAt(at=at, event=event):
                delay = max(0.0, (at - self._clock()).total_seconds())
                asyncio.get_running_loop().call_later(delay, self.handle, event)

    def _tell(self, waiter_id: str, event: AppEvent) -> bool:
        call_id = self._callback_calls.get(waiter_id, waiter_id)
        return self._calls is not None and self._calls.deliver(call_id, event)

    async def _ring(self, command: RingAgents) -> None:
        """Ring the agents whose phones are free; the others are busy elsewhere."""
        waiter = command.waiter
        now = self._clock()

        async def elsewhere(agent: Agent) -> bool:
            # A phone whose queue call just ended still shows that call: not elsewhere.
            return not phone_settling(agent, now) and await self._phone_busy(agent.account)

        busy = await asyncio.gather(*(elsewhere(a) for a in command.agents))
        free = [a for a, on_call in zip(command.agents, busy, strict=True) if not on_call]
        for agent, on_call in zip(command.agents, busy, strict=True):
            if on_call:
                ACD_BUSY_ELSEWHERE.inc()
                self.handle(OfferFailed(waiter.waiter_id, agent.agent_id, busy_elsewhere=True))
        if not free:
            return
        legs = tuple(AgentLeg(agent_id=a.agent_id, account=a.account) for a in free)
        if waiter.callback:
            self._start_callback(command, legs[0])
        elif not self._tell(
            waiter.waiter_id,
            RingAgentsNow(agents=legs, timeout_seconds=command.timeout_seconds),
        ):
            self.handle(Leave(waiter.waiter_id))  # its call is gone without a word

    def _start_callback(self, command: RingAgents, agent: AgentLeg) -> None:
        waiter = command.waiter
        if self._calls is None:
            self.handle(OfferFailed(waiter.waiter_id, agent.agent_id))
            return
        self._callback_attempts += 1
        call_id = f"{APP}-callback-{self._callback_attempts}-{waiter.waiter_id}"
        self._callback_calls[waiter.waiter_id] = call_id
        self._calls.spawn(
            APP,
            call_id,
            lambda now: self._machine.open_callback(
                now,
                call_id=call_id,
                waiter_id=waiter.waiter_id,
                agent=agent,
                number=waiter.number,
                order=command.callback_order,
                timeout_seconds=command.timeout_seconds,
            ),
        )

    async def _phone_busy(self, account: str) -> bool:
        """Is the phone on a call? Unknown (Kamailio unreachable) counts as free: a ring
        that fails costs the caller seconds, a queue that never rings costs it all."""
        try:
            return await self._kamailio.account_calls(account) > 0
        except (KamailioRpcError, httpx.HTTPError) as exc:
            log.warning("cannot ask Kamailio about %s: %s", account, exc)
            return False

    def _spawn_task(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ACD task failed", exc_info=task.exception())

    def _write(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]) -> None:
        self._writes.append(work)
        self._wrote.set()

    # Background

    async def run(self, calls: CallControl, stop: asyncio.Event) -> None:
        """Load, keep in sync and write until ``stop``; then write what is left."""
        self._calls = calls
        workers = [
            asyncio.create_task(
                keep_connected(
                    self._listen_and_reload,
                    stop,
                    what="ACD configuration",
                    failures=(psycopg.OperationalError, psycopg.InterfaceError),
                )
            ),
            asyncio.create_task(self._check_phones(stop)),
        ]
        try:
            await self._write_until(stop)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, *self._tasks, return_exceptions=True)
            await self._flush()

    async def _listen_and_reload(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True, connect_timeout=3
        ) as conn:
            await conn.execute(f"LISTEN {CONFIG_CHANNEL}")
            await self._reload(conn)  # after LISTEN: no edit slips between the two
            while not stop.is_set():
                changed = False
                async for _ in conn.notifies(timeout=5.0, stop_after=1):
                    changed = True
                if changed:
                    await asyncio.sleep(0.05)  # let a burst of edits settle
                    async for _ in conn.notifies(timeout=0):
                        pass
                    await self._reload(conn)
                else:
                    await conn.execute("SELECT 1")

    async def _reload(self, conn: psycopg.AsyncConnection[Any]) -> None:
        config = await load_acd(conn)
        ACD_CONFIG_LOADS.inc()
        if not self.ready.is_set():
            now = self._clock()
            # Nothing of an earlier process's calls is ours: ringing and queue-busy agents
            # are free again (the phone check marks those still on a call busy elsewhere).
            agents = tuple(_healed(agent, now) for agent in config.agents)
            self.center = AcdCenter(config.queues, agents, config.memberships)
            self.handle(RestoreCallbacks(tuple(await load_callbacks(conn))))
            for agent in agents:
                self._dirty_agents[agent.agent_id] = agent
            self.ready.set()
            ACD_READY.set(1)
            log.info("ACD loaded: %d queues, %d agents", len(config.queues), len(config.agents))
            return
        self.handle(Reconfigure(config.queues, config.agents, config.memberships))

    async def _check_phones(self, stop: asyncio.Event) -> None:
        """Every few seconds: which logged-in agents' phones are on calls not from a queue.

        One RPC a round, whatever the number of agents (the accounts Kamailio counts calls
        of); a round Kamailio does not answer changes nothing.
        """
        while not stop.is_set():
            await self.ready.wait()
            asked_at = self._clock()
            try:
                on_calls = await self._kamailio.accounts_on_calls()
            except (KamailioRpcError, httpx.HTTPError) as exc:
                log.warning("cannot ask Kamailio which phones are on calls: %s", exc)
            else:
                for agent in self.center.snapshot.agents.values():
                    # Not if something happened to the agent since the question (a queue
                    # call starting or ending makes the answer stale), nor while the phone
                    # still shows the queue call that just ended.
                    candidate = agent.status in ("free", "wrap_up") or agent.elsewhere
                    if (
                        candidate
                        and agent.status_since <= asked_at
                        and not phone_settling(agent, asked_at)
                    ):
                        self.handle(AgentPhone(agent.agent_id, agent.account in on_calls))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._settings.phone_check_seconds)

    async def _write_until(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                woken = asyncio.create_task(self._wrote.wait())
                await asyncio.wait({woken, stopping}, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
                self._wrote.clear()
                try:
                    await self._flush()
                except psycopg.Error as exc:
                    ACD_DATABASE_ERRORS.inc()
                    log.warning("ACD write failed (%s); retrying", exc)
                    await asyncio.sleep(WRITE_RETRY_SECONDS)
                    self._wrote.set()
        finally:
            stopping.cancel()

    async def _flush(self) -> None:
        """Agent statuses (latest of each, one statement), then callback changes in order.
        A failed write stays queued for the next round."""
        if self._dirty_agents:
            agents = tuple(self._dirty_agents.values())
            self._dirty_agents = {}
            try:
                await self._db.run(lambda conn: save_agents(conn, agents))
            except psycopg.Error:
                for agent in agents:
                    self._dirty_agents.setdefault(agent.agent_id, agent)
                raise
        while self._writes:
            await self._db.run(self._writes[0])
            self._writes.popleft()


def _healed(agent: Agent, now: datetime) -> Agent:
    if agent.status in ("ringing", "busy", "wrap_up"):
        return replace(
            agent,
            status="free",
            status_since=now,
            queue_id=None,
            waiter_id=None,
            elsewhere=False,
            wrap_up_until=None,
        )
    return agent
