"""Kamailio's side of routing: parse its request, answer with rtjson plus our fields.

The server is a small HTTP/1.1 keep-alive server on asyncio's Protocol, not a web framework:
Kamailio asks once per call over a few persistent connections, and every microsecond spent
here is taken from the same two cores as Kamailio. It understands exactly what it needs
(POST /route with Content-Length, GET /health, GET /metrics); anything else gets a 4xx and
the connection stays usable, so a malformed request never takes the service down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from pydantic import ValidationError

from routing.engine import decide
from routing.models import CallRequest, Decision
from routing.table import RouteTable

log = logging.getLogger("softswitch.routing.http")

DECISION_SECONDS = Histogram(
    "softswitch_routing_decision_seconds",
    "Time to decide one call, request parsed to answer serialised",
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2),
)
DECISIONS = Counter(
    "softswitch_routing_decisions_total", "Decisions by route and action", ["route", "action"]
)
BAD_REQUESTS = Counter("softswitch_routing_bad_requests_total", "Requests answered with 4xx")

MAX_HEADER_BYTES = 8192
MAX_BODY_BYTES = 16384


class BadRequest(ValueError):
    pass


def parse_call_request(body: bytes) -> CallRequest:
    try:
        return CallRequest.model_validate_json(body)
    except ValidationError as exc:
        raise BadRequest(exc.errors(include_url=False)[0]["msg"]) from None


def kamailio_answer(decision: Decision, call: CallRequest) -> dict[str, Any]:
    """The JSON Kamailio applies: rtjson's ``routing``/``routes`` plus flat fields for script."""
    routes: list[dict[str, Any]] = [{"uri": uri} for uri in decision.destinations]
    if decision.caller != call.caller and routes:
        new_from = {"from": {"uri": f"sip:{decision.caller}@{call.caller_host}"}}
        for route in routes:
            route["headers"] = new_from
    return {
        "version": "1.0",
        "routing": "parallel" if decision.parallel else "serial",
        "routes": routes,
        "action": decision.action,
        "route": decision.route,
        "caller": decision.caller,
        "callee": decision.callee,
        "reject_code": decision.reject.code if decision.reject else 0,
        "reject_reason": decision.reject.reason if decision.reject else "",
        "app": decision.app or "",
        "app_args": ",".join(decision.app_args),
        "flags": "," + "".join(f"{flag}," for flag in decision.flags),
    }


def _response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type
        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


def _error(status: str, reason: str) -> bytes:
    BAD_REQUESTS.inc()
    return _response(status, json.dumps({"error": reason}).encode())


class RoutingService:
    """What the protocol asks: the live table and how to decide with it."""

    def __init__(
        self,
        table: Callable[[], RouteTable],
        *,
        max_chain: int,
        local_hosts: frozenset[str],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._table = table
        self._max_chain = max_chain
        self._local_hosts = local_hosts
        self._clock = clock

    def answer_route(self, body: bytes) -> bytes:
        started = time.perf_counter()
        try:
            call = parse_call_request(body)
        except BadRequest as exc:
            return _error("400 Bad Request", str(exc))
        decision = decide(
            call,
            self._table(),
            self._clock(),
            max_chain=self._max_chain,
            local_hosts=self._local_hosts,
        )
        payload = json.dumps(kamailio_answer(decision, call)).encode()
        DECISION_SECONDS.observe(time.perf_counter() - started)
        DECISIONS.labels(decision.route or "", decision.action).inc()
        return _response("200 OK", payload)

    def answer_health(self) -> bytes:
        table = self._table()
        return _response(
            "200 OK",
            json.dumps({"table_version": table.version, "routes": len(table.routes)}).encode(),
        )


class RoutingProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: requests parsed from a buffer, answered in order."""

    def __init__(self, service: RoutingService) -> None:
        self._service = service
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's does not subclass asyncio.Transport).
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and not self._transport.is_closing():
            if not self._answer_one():
                return

    def _answer_one(self) -> bool:
        """Answer the first complete request in the buffer; False when more bytes are needed."""
        assert self._transport is not None
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                self._close_with(_error("431 Request Header Fields Too Large", "header too large"))
            return False
        head = bytes(self._buffer[:head_end]).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._close_with(_error("400 Bad Request", "malformed request line"))
            return False
        method, path, version = parts
        headers = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                self._close_with(_error("400 Bad Request", "malformed header"))
                return False
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._close_with(_error("411 Length Required", "chunked bodies are not accepted"))
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self._close_with(_error("413 Content Too Large", "bad or too large Content-Length"))
            return False
        body_start = head_end + 4
        if len(self._buffer) < body_start + length:
            return False
        body = bytes(self._buffer[body_start : body_start + length])
        del self._buffer[: body_start + length]
        self._transport.write(self._dispatch(method, path, body))
        if headers.get("connection", "").lower() == "close" or version == "HTTP/1.0":
            self._transport.close()
        return True

    def _dispatch(self, method: str, path: str, body: bytes) -> bytes:
        if path == "/route":
            if method != "POST":
                return _error("405 Method Not Allowed", "POST a call as JSON")
            try:
                return self._service.answer_route(body)
            except Exception:  # a bug must cost one call, not the service
                log.exception("routing failed")
                return _error("500 Internal Server Error", "routing failed")
        if method == "GET" and path == "/health":
            return self._service.answer_health()
        if method == "GET" and path == "/metrics":
            return _response("200 OK", generate_latest(REGISTRY), b"text/plain; version=0.0.4")
        return _error("404 Not Found", f"no {method} {path}")

    def _close_with(self, response: bytes) -> None:
        assert self._transport is not None
        self._transport.write(response)
        self._transport.close()


async def serve(service: RoutingService, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: RoutingProtocol(service), host, port, reuse_address=True, backlog=1024
    )
