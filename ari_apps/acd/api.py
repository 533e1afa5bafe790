"""The supervisor API of the ACD (HTTP, JSON) and its KPIs as Prometheus metrics.

Served by the process that runs the queues, because the waiting list lives there. Every
action goes through the same pure center as the calls, so a supervisor's change is the next
decision's input. Errors: 400 with field-level messages for a malformed request, 404 for an
unknown caller, agent or queue, 409 when the action does not fit the current state (the
caller is talking already, the agent is ringing for another call). Authentication and roles
come with the admin API, which fronts this one.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from acd.center import (
    AcdCenter,
    AgentAction,
    AgentView,
    CenterEvent,
    ChangePriority,
    ForceAgent,
    Move,
    QueueView,
    Remove,
    SendToAgent,
    WaiterView,
)
from acd.kpi import AgentKpi, QueueKpi
from acd.models import AGENT_STATUSES
from acd.store import caller_history
from softswitch.db import KeptConnection
from softswitch.metrics import add_metrics_route

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Body = TypeVar("Body", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: str = Field(default="", max_length=100, description="who acts (shown in events)")


class PriorityBody(_Body):
    priority: int = Field(ge=-100, le=100)


class MoveBody(_Body):
    queue_id: str = Field(min_length=1, max_length=100)


class SendBody(_Body):
    agent_id: str = Field(min_length=1, max_length=100)


class StatusBody(_Body):
    action: Literal["pause", "unpause", "login", "logout"]
    reason: str = Field(default="", max_length=200)


class RemoveBody(_Body):
    pass


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status)


def _time(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def queue_kpi_json(kpi: QueueKpi) -> dict[str, Any]:
    return {
        "joined": kpi.joined,
        "answered": kpi.answered,
        "answered_in_service_level": kpi.answered_in_service_level,
        "abandoned": kpi.abandoned,
        "abandoned_short": kpi.abandoned_short,
        "timed_out": kpi.timed_out,
        "removed": kpi.removed,
        "callbacks_requested": kpi.callbacks_requested,
        "callbacks_completed": kpi.callbacks_completed,
        "service_level": kpi.service_level,
        "average_wait_seconds": kpi.average_wait_seconds,
        "max_wait_seconds": kpi.wait_seconds_max,
        "average_talk_seconds": kpi.average_talk_seconds,
        "max_talk_seconds": kpi.talk_seconds_max,
    }


def agent_kpi_json(kpi: AgentKpi) -> dict[str, Any]:
    return {
        "offered": kpi.offered,
        "answered": kpi.answered,
        "missed": kpi.missed,
        "talk_seconds": kpi.talk_seconds,
        "max_talk_seconds": kpi.talk_seconds_max,
    }


def waiter_json(view: WaiterView) -> dict[str, Any]:
    return {
        "waiter_id": view.waiter_id,
        "queue_id": view.queue_id,
        "number": view.number,
        "position": view.position,
        "priority": view.priority,
        "wait_seconds": round(view.wait_seconds, 3),
        "state": view.state,
        "callback": view.callback,
        "agent_id": view.agent_id,
    }


def queue_json(view: QueueView) -> dict[str, Any]:
    q = view.queue
    return {
        "queue_id": q.queue_id,
        "name": q.name,
        "strategy": q.strategy,
        "callback_enabled": q.callback_enabled,
        "waiters": [waiter_json(w) for w in view.waiters],
        "agent_ids": list(view.agent_ids),
        "kpi": queue_kpi_json(view.kpi),
    }


def agent_json(view: AgentView) -> dict[str, Any]:
    a = view.agent
    return {
        "agent_id": a.agent_id,
        "account": a.account,
        "name": a.name,
        "status": a.status,
        "status_since": _time(a.status_since),
        "paused_reason": a.paused_reason,
        "busy_elsewhere": a.elsewhere,
        "queue_id": a.queue_id,
        "waiter_id": a.waiter_id,
        "queues": list(view.queue_ids),
        "calls_taken": a.calls_taken,
        "kpi": agent_kpi_json(view.kpi),
    }


class SupervisorApi:
    """``center`` and ``act`` come from the ACD services: read the state, feed an action."""

    def __init__(
        self,
        center: Callable[[], AcdCenter],
        act: Callable[[CenterEvent], str | None],
        clock: Callable[[], datetime],
        database: KeptConnection,
    ) -> None:
        self._center = center
        self._act = act
        self._clock = clock
        self._db = database

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/acd/queues", self._queues)
        app.router.add_get("/acd/agents", self._agents)
        app.router.add_get("/acd/kpi", self._kpi)
        app.router.add_get("/acd/callers/{number}", self._caller)
        app.router.add_post("/acd/waiters/{waiter_id}/priority", self._priority)
        app.router.add_post("/acd/waiters/{waiter_id}/move", self._move)
        app.router.add_post("/acd/waiters/{waiter_id}/send", self._send)
        app.router.add_post("/acd/waiters/{waiter_id}/remove", self._remove)
        app.router.add_delete("/acd/waiters/{waiter_id}", self._remove)
        app.router.add_post("/acd/agents/{agent_id}/status", self._status)
        add_metrics_route(app)
        return app

    async def _health(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def _queues(self, _: web.Request) -> web.Response:
        views = self._center().queues_view(self._clock())
        return _json({"queues": [queue_json(v) for v in views]})

    async def _agents(self, _: web.Request) -> web.Response:
        return _json({"agents": [agent_json(v) for v in self._center().agents_view()]})

    async def _kpi(self, _: web.Request) -> web.Response:
        center = self._center()
        return _json(
            {
                "queues": {
                    v.queue.queue_id: queue_kpi_json(v.kpi)
                    for v in center.queues_view(self._clock())
                },
                "agents": {v.agent.agent_id: agent_kpi_json(v.kpi) for v in center.agents_view()},
            }
        )

    async def _caller(self, request: web.Request) -> web.Response:
        """Who is this caller: waiting now, and the calls it made before (CDR)."""
        number = request.match_info["number"]
        waiting = [
            waiter_json(w)
            for view in self._center().queues_view(self._clock())
            for w in view.waiters
            if w.number == number
        ]
        history = await self._db.run(lambda conn: caller_history(conn, number))
        return _json({"number": number, "waiting": waiting, "history": history})

    async def _priority(self, request: web.Request) -> web.Response:
        body = await self._body(request, PriorityBody)
        waiter_id = self._waiter(request)
        return self._done(ChangePriority(waiter_id, body.priority, body.by))

    async def _move(self, request: web.Request) -> web.Response:
        body = await self._body(request, MoveBody)
        waiter_id = self._waiter(request)
        if body.queue_id not in self._center().snapshot.queues:
            raise web.HTTPNotFound(text=_message(f"no queue {body.queue_id}"))
        return self._done(Move(waiter_id, body.queue_id, body.by))

    async def _send(self, request: web.Request) -> web.Response:
        body = await self._body(request, SendBody)
        waiter_id = self._waiter(request)
        self._agent(body.agent_id)
        return self._done(SendToAgent(waiter_id, body.agent_id, body.by))

    async def _remove(self, request: web.Request) -> web.Response:
        body = await self._body(request, RemoveBody) if request.can_read_body else RemoveBody()
        return self._done(Remove(self._waiter(request), body.by))

    async def _status(self, request: web.Request) -> web.Response:
        body = await self._body(request, StatusBody)
        agent_id = self._agent(request.match_info["agent_id"])
        action: AgentAction = body.action
        return self._done(ForceAgent(agent_id, action, body.reason, body.by))

    def _done(self, action: CenterEvent) -> web.Response:
        refused = self._act(action)
        if refused is not None:
            return _error(409, refused)
        return _json({"status": "done"})

    def _waiter(self, request: web.Request) -> str:
        waiter_id = request.match_info["waiter_id"]
        if waiter_id not in self._center().waiters:
            raise web.HTTPNotFound(text=_message(f"no waiting caller {waiter_id}"))
        return waiter_id

    def _agent(self, agent_id: str) -> str:
        if agent_id not in self._center().snapshot.agents:
            raise web.HTTPNotFound(text=_message(f"no agent {agent_id}"))
        return agent_id

    @staticmethod
    async def _body(request: web.Request, model: type[Body]) -> Body:
        raw = await request.read()
        try:
            return model.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            fields = [
                {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "invalid request", "fields": fields}),
                content_type="application/json",
            ) from None


def _message(text: str) -> str:
    return json.dumps({"error": text})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every HTTP error as JSON; nothing a client sends becomes a 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.content_type == "application/json":
            raise
        text = exc.text or exc.reason
        if not text.startswith("{"):
            text = _message(text)
        raise type(exc)(text=text, content_type="application/json") from None


class AcdCollector(Collector):
    """The center's KPIs, read at scrape time: one source for the API and Prometheus."""

    def __init__(self, center: Callable[[], AcdCenter], clock: Callable[[], datetime]) -> None:
        self._center = center
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        center = self._center()
        now = self._clock()
        views = center.queues_view(now)
        calls = CounterMetricFamily(
            "softswitch_acd_calls", "Queue callers by outcome", labels=["queue", "outcome"]
        )
        in_level = CounterMetricFamily(
            "softswitch_acd_answered_in_service_level",
            "Callers answered within the queue's service-level threshold",
            labels=["queue"],
        )
        callbacks = CounterMetricFamily(
            "softswitch_acd_callbacks", "Callback requests by stage", labels=["queue", "stage"]
        )
        wait = CounterMetricFamily(
            "softswitch_acd_answered_wait_seconds",
            "Seconds answered callers waited",
            labels=["queue"],
        )
        talk = CounterMetricFamily(
            "softswitch_acd_talk_seconds", "Seconds queue callers talked", labels=["queue"]
        )
        waiting = GaugeMetricFamily(
            "softswitch_acd_waiting", "Callers waiting now (callbacks included)", labels=["queue"]
        )
        longest = GaugeMetricFamily(
            "softswitch_acd_longest_wait_seconds", "Longest current wait", labels=["queue"]
        )
        for view in views:
            q, kpi = view.queue.queue_id, view.kpi
            for outcome, count in (
                ("joined", kpi.joined),
                ("answered", kpi.answered),
                ("abandoned", kpi.abandoned),
                ("abandoned_short", kpi.abandoned_short),
                ("timed_out", kpi.timed_out),
                ("removed", kpi.removed),
            ):
                calls.add_metric([q, outcome], count)
            in_level.add_metric([q], kpi.answered_in_service_level)
            callbacks.add_metric([q, "requested"], kpi.callbacks_requested)
            callbacks.add_metric([q, "completed"], kpi.callbacks_completed)
            wait.add_metric([q], kpi.wait_seconds_answered)
            talk.add_metric([q], kpi.talk_seconds)
            queued = [w for w in view.waiters if w.state in ("waiting", "ringing")]
            waiting.add_metric([q], len(queued))
            longest.add_metric([q], max((w.wait_seconds for w in queued), default=0.0))
        agents = GaugeMetricFamily("softswitch_acd_agents", "Agents by status", labels=["status"])
        by_status: dict[str, int] = dict.fromkeys(AGENT_STATUSES, 0)
        agent_calls = CounterMetricFamily(
            "softswitch_acd_agent_calls", "Queue calls per agent", labels=["agent", "outcome"]
        )
        for agent_view in center.agents_view():
            status = agent_view.agent.status
            by_status[status] = by_status.get(status, 0) + 1
            a, akpi = agent_view.agent.agent_id, agent_view.kpi
            for outcome, count in (
                ("offered", akpi.offered),
                ("answered", akpi.answered),
                ("missed", akpi.missed),
            ):
                agent_calls.add_metric([a, outcome], count)
        for name, count in sorted(by_status.items()):
            agents.add_metric([name], count)
        yield from (calls, in_level, callbacks, wait, talk, waiting, longest, agents, agent_calls)
