"""Live views and control: Kamailio's calls and registrations, and the ACD supervisor API.

Kamailio is asked over its JSON-RPC (``softswitch.kamailio_rpc``): not answering, or
answering past SOFTSWITCH_KAMAILIO_JSONRPC_TIMEOUT_SECONDS, is 503; answering with an error
is 502. The ACD's live state lives in the process running the queues (`softswitch ari`),
whose supervisor API (ari_apps/acd/api.py, on SOFTSWITCH_ACD_API_HOST/_PORT) has no
authentication of its own: this API fronts it, adds tokens and roles, and passes requests
and answers through unchanged (its status codes and error bodies included). The ACD app not
answering is 503.
"""

from __future__ import annotations

import logging
from ipaddress import IPv4Address, IPv6Address
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict

from ari_apps.acd.api import MoveBody, PriorityBody, RemoveBody, SendBody, StatusBody
from softswitch.admin.auth import ADMINISTER, READ, SUPERVISE
from softswitch.admin.context import Context
from softswitch.admin.errors import ApiError, ErrorBody
from softswitch.admin.models import SIP_USER, Call, Contacts, FloodBan, KamailioStatus
from softswitch.admin.records import ERRORS, NOT_FOUND, not_found
from softswitch.kamailio_rpc import KamailioRpc, KamailioRpcError
from softswitch.settings import AcdSettings

log = logging.getLogger("softswitch.admin.live")

router = APIRouter(tags=["live"])
ACD_TIMEOUT_SECONDS = 5.0
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    502: {"model": ErrorBody, "description": "Kamailio answered with an error"},
    503: {"model": ErrorBody, "description": "Kamailio does not answer"},
}
# The ACD API's own answers pass through: 400 (its field errors), 404, 409.
PROXIED: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    400: {"description": "the ACD API refused the body (its field-level errors)"},
    404: {"description": "no such waiting caller, agent or queue in the ACD"},
    409: {"description": "the action does not fit the caller's or agent's state now"},
    503: {"model": ErrorBody, "description": "the ACD app does not answer"},
}
Username = Annotated[str, Path(pattern=SIP_USER)]
IpAddress = Annotated[IPv4Address | IPv6Address, Path(description="a source IP address")]
BANS = "ipban"
"""Kamailio's htable of sources banned for flooding (kamailio.cfg, route[ANTIFLOOD])."""
_NO_SUCH_KEY = "Key name doesn't exist"


class _Uptime(BaseModel):
    """core.uptime's answer; only what we show."""

    model_config = ConfigDict(extra="ignore")

    uptime: int | None = None
    up_since: str | None = None


def _kamailio(context: Context) -> KamailioRpc:
    settings = context.settings.kamailio
    if settings.jsonrpc_token is None:
        raise ApiError(
            503, "Kamailio's JSON-RPC token is not set (SOFTSWITCH_KAMAILIO_JSONRPC_TOKEN)"
        )
    return KamailioRpc(settings)


def _kamailio_failed(exc: KamailioRpcError) -> ApiError:
    down = exc.code is None and exc.reason.startswith(("unreachable", "no answer"))
    if down:
        return ApiError(503, f"Kamailio does not answer: {exc}", headers={"Retry-After": "5"})
    return ApiError(502, f"Kamailio answered with an error: {exc}")


@router.get("/calls", dependencies=[READ], responses={**ERRORS, **UNAVAILABLE})
async def calls(context: Context) -> list[Call]:
    """Every dialog Kamailio tracks now (ringing, up, or ended and not yet freed)."""
    try:
        async with _kamailio(context) as kamailio:
            dialogs = await kamailio.dialogs()
    except KamailioRpcError as exc:
        raise _kamailio_failed(exc) from None
    return [
        Call(call_id=d.call_id, from_uri=d.from_uri, to_uri=d.to_uri, state=d.state.name)
        for d in dialogs
    ]


@router.get(
    "/subscribers/{username}/contacts", dependencies=[READ], responses={**ERRORS, **UNAVAILABLE}
)
async def contacts(username: Username, context: Context) -> Contacts:
    """The contacts an account is registered with now, as Kamailio has them ([]: none)."""
    try:
        async with _kamailio(context) as kamailio:
            found = await kamailio.contacts(username)
    except KamailioRpcError as exc:
        raise _kamailio_failed(exc) from None
    return Contacts(username=username, contacts=found)


@router.get("/kamailio/status", dependencies=[READ], responses={**ERRORS, **UNAVAILABLE})
async def kamailio_status(context: Context) -> KamailioStatus:
    """Kamailio's version and uptime (core.version, core.uptime)."""
    try:
        async with _kamailio(context) as kamailio:
            version = await kamailio.call("core.version")
            uptime = _Uptime.model_validate(await kamailio.call("core.uptime"))
    except KamailioRpcError as exc:
        raise _kamailio_failed(exc) from None
    except ValueError as exc:  # pydantic's ValidationError: an answer of another shape
        raise ApiError(502, f"Kamailio's core.uptime answer is not understood: {exc}") from None
    return KamailioStatus(
        version=str(version), uptime_seconds=uptime.uptime, up_since=uptime.up_since
    )


@router.post(
    "/kamailio/reload",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **UNAVAILABLE},
)
async def kamailio_reload(context: Context) -> Response:
    """Forget which From users Kamailio has cached as accounts (for a minute otherwise), so
    accounts created or deleted in SQL are challenged, or not, from the next call on."""
    try:
        async with _kamailio(context) as kamailio:
            await kamailio.call("htable.flush", "caller_account")
    except KamailioRpcError as exc:
        raise _kamailio_failed(exc) from None
    return Response(status_code=204)


@router.get("/kamailio/bans/{address}", dependencies=[READ], responses={**ERRORS, **UNAVAILABLE})
async def kamailio_ban(address: IpAddress, context: Context) -> FloodBan:
    """Is this source address ignored now for flooding (anti-flood, route[ANTIFLOOD])?"""
    try:
        async with _kamailio(context) as kamailio:
            await kamailio.call("htable.get", BANS, str(address))
    except KamailioRpcError as exc:
        if exc.code is not None and exc.reason.startswith(_NO_SUCH_KEY):
            return FloodBan(address=str(address), banned=False)
        raise _kamailio_failed(exc) from None
    return FloodBan(address=str(address), banned=True)


@router.delete(
    "/kamailio/bans/{address}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND, **UNAVAILABLE},
)
async def kamailio_lift_ban(address: IpAddress, context: Context) -> Response:
    """Serve a banned source again now rather than when its ban expires."""
    try:
        async with _kamailio(context) as kamailio:
            await kamailio.call("htable.delete", BANS, str(address))
    except KamailioRpcError as exc:
        if exc.code == 404:
            raise not_found(f"flood ban of {address}") from None
        raise _kamailio_failed(exc) from None
    return Response(status_code=204)


def _acd_base(acd: AcdSettings) -> str:
    if acd.api_port == 0:
        raise ApiError(503, "the ACD supervisor API is switched off (SOFTSWITCH_ACD_API_PORT=0)")
    host = f"[{acd.api_host}]" if ":" in acd.api_host else acd.api_host
    return f"http://{host}:{acd.api_port}"


async def _forward(
    context: Context, method: str, path: str, body: bytes = b"", content_type: str | None = None
) -> Response:
    """One request to the ACD supervisor API; its answer as it came."""
    base = _acd_base(context.settings.acd)
    headers = {"Content-Type": content_type} if content_type and body else {}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=ACD_TIMEOUT_SECONDS) as client:
            answer = await client.request(method, path, content=body, headers=headers)
    except httpx.HTTPError as exc:
        log.warning("ACD supervisor API at %s unreachable: %r", base, exc)
        raise ApiError(
            503,
            f"the ACD app does not answer at {base} (is `softswitch ari` running the acd app?):"
            f" {type(exc).__name__}",
            headers={"Retry-After": "5"},
        ) from None
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


def _segment(value: str) -> str:
    return quote(value, safe="")


def _body_of(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """OpenAPI for a proxied body: the ACD API's own model, validated there, not here."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


@router.get("/acd/queues", dependencies=[READ], responses=PROXIED)
async def acd_queues(context: Context) -> Response:
    """Queues now: waiting callers in order, their agents, KPIs."""
    return await _forward(context, "GET", "/acd/queues")


@router.get("/acd/agents", dependencies=[READ], responses=PROXIED)
async def acd_agents(context: Context) -> Response:
    """Agents now: status, since when, the call they are on, KPIs."""
    return await _forward(context, "GET", "/acd/agents")


@router.get("/acd/kpi", dependencies=[READ], responses=PROXIED)
async def acd_kpi(context: Context) -> Response:
    """KPIs per queue and per agent."""
    return await _forward(context, "GET", "/acd/kpi")


@router.get("/acd/callers/{number}", dependencies=[READ], responses=PROXIED)
async def acd_caller(number: str, context: Context) -> Response:
    """A caller: waiting now (where, since when) and its earlier calls (CDRs)."""
    return await _forward(context, "GET", f"/acd/callers/{_segment(number)}")


async def _action(context: Context, request: Request, path: str) -> Response:
    body = await request.body()
    return await _forward(context, "POST", path, body, request.headers.get("content-type"))


@router.post(
    "/acd/waiters/{waiter_id}/priority",
    dependencies=[SUPERVISE],
    responses=PROXIED,
    openapi_extra=_body_of(PriorityBody),
)
async def acd_priority(waiter_id: str, request: Request, context: Context) -> Response:
    """Change a waiting caller's priority (-100..100; higher is served first)."""
    return await _action(context, request, f"/acd/waiters/{_segment(waiter_id)}/priority")


@router.post(
    "/acd/waiters/{waiter_id}/move",
    dependencies=[SUPERVISE],
    responses=PROXIED,
    openapi_extra=_body_of(MoveBody),
)
async def acd_move(waiter_id: str, request: Request, context: Context) -> Response:
    """Move a waiting caller to another queue, keeping the time waited."""
    return await _action(context, request, f"/acd/waiters/{_segment(waiter_id)}/move")


@router.post(
    "/acd/waiters/{waiter_id}/send",
    dependencies=[SUPERVISE],
    responses=PROXIED,
    openapi_extra=_body_of(SendBody),
)
async def acd_send(waiter_id: str, request: Request, context: Context) -> Response:
    """Offer a waiting caller to one agent now."""
    return await _action(context, request, f"/acd/waiters/{_segment(waiter_id)}/send")


@router.post(
    "/acd/waiters/{waiter_id}/remove",
    dependencies=[SUPERVISE],
    responses=PROXIED,
    openapi_extra=_body_of(RemoveBody, required=False),
)
async def acd_remove(waiter_id: str, request: Request, context: Context) -> Response:
    """Take a caller out of the queue (hung up with the queue's goodbye)."""
    return await _action(context, request, f"/acd/waiters/{_segment(waiter_id)}/remove")


@router.delete("/acd/waiters/{waiter_id}", dependencies=[SUPERVISE], responses=PROXIED)
async def acd_delete_waiter(waiter_id: str, context: Context) -> Response:
    """The same as POST .../remove, without a body."""
    return await _forward(context, "DELETE", f"/acd/waiters/{_segment(waiter_id)}")


@router.post(
    "/acd/agents/{agent_id}/status",
    dependencies=[SUPERVISE],
    responses=PROXIED,
    openapi_extra=_body_of(StatusBody),
)
async def acd_agent_status(agent_id: str, request: Request, context: Context) -> Response:
    """Log an agent in or out, pause or unpause it (with a reason)."""
    return await _action(context, request, f"/acd/agents/{_segment(agent_id)}/status")
