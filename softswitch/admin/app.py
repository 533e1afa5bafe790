"""The admin API process (composition root): ``build(settings)`` returns the ASGI app.

No client, connection or settings exist at import time, and the app keeps no connection
between requests (see ``context.py``), so the same app runs under uvicorn (`softswitch admin
serve`), in tests through httpx's ASGI transport, and under schemathesis, without a lifespan.

Endpoints live under /api/v1; /health (unauthenticated: 200 while PostgreSQL answers),
/metrics (Prometheus) and /openapi.json (the OpenAPI document) sit at the root, the last two
behind a read_only token like everything else. Interactive docs (/docs) are not served.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import psycopg
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from softswitch.admin import acd, directory, errors, live, routes, sos, subscribers
from softswitch.admin.auth import READ, Authenticator
from softswitch.admin.context import CONNECT_TIMEOUT_SECONDS, AdminContext
from softswitch.admin.models import Health
from softswitch.admin.records import ERRORS
from softswitch.settings import Settings

PREFIX = "/api/v1"
# One module per resource group, each under PREFIX.
RESOURCES = (routes, subscribers, live, directory, acd, sos)
TITLE = "softswitch admin API"
VERSION = "1"

REQUESTS = Counter(
    "softswitch_admin_requests_total",
    "Admin API requests by method, route (its template) and status",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "softswitch_admin_request_seconds",
    "Admin API request handling time by route (its template)",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


class RequestMetrics:
    """ASGI middleware: count and time every request by its route template (bounded labels:
    never the raw path, which holds record keys)."""

    def __init__(self, app: ASGIApp, templates: Mapping[int, str]) -> None:
        self.app = app
        # id(route) -> its full template: FastAPI hands the included router's own route
        # (its path without the prefix) to the request's scope.
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = self.templates.get(id(route)) or getattr(route, "path", "unmatched")
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            REQUEST_SECONDS.labels(template).observe(time.perf_counter() - started)


def service(settings: Settings) -> APIRouter:
    """/health, /metrics and /openapi.json."""
    router = APIRouter()

    @router.get(
        "/health",
        tags=["service"],
        responses={503: {"model": errors.ErrorBody, "description": "PostgreSQL does not answer"}},
    )
    def health() -> Health:
        """Unauthenticated: 200 while the API can reach PostgreSQL, 503 otherwise."""
        try:
            with psycopg.connect(
                settings.database.url, connect_timeout=CONNECT_TIMEOUT_SECONDS
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            raise errors.ApiError(503, "the database is unavailable") from None
        return Health(status="ok")

    @router.get(
        "/metrics",
        tags=["service"],
        dependencies=[READ],
        responses={**ERRORS, 200: {"content": {CONTENT_TYPE_LATEST: {}}}},
        response_class=Response,
    )
    def metrics() -> Response:
        """Prometheus metrics of this process (a read_only token: bearer_token in Prometheus)."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @router.get("/openapi.json", include_in_schema=False, dependencies=[READ])
    def openapi(request: Request) -> JSONResponse:
        """The OpenAPI document of this API."""
        app: FastAPI = request.app
        return JSONResponse(app.openapi())

    return router


def build(settings: Settings) -> FastAPI:
    """The admin API for ``settings`` (database, Kamailio, ACD API, admin.*)."""
    app = FastAPI(
        title=TITLE,
        version=VERSION,
        description=(
            "Control plane of the softswitch: routes, SIP accounts, the flat directory, ACD"
            " queues and agents, the 112 number pool, and live views of Kamailio and the ACD."
            " Every endpoint except /health needs `Authorization: Bearer <token>`"
            " (`softswitch admin token add`). Errors: {error, fields: [{field, message}]}."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind a token like everything but /health
        separate_input_output_schemas=False,
    )
    app.state.admin = AdminContext(
        settings=settings,
        authenticator=Authenticator(settings.admin.auth_failures_per_minute),
    )
    errors.install(app)
    routers = [(PREFIX, module.router) for module in RESOURCES] + [("", service(settings))]
    for prefix, router in routers:
        app.include_router(router, prefix=prefix)
    templates = {
        id(route): prefix + route.path
        for prefix, router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    }
    app.add_middleware(RequestMetrics, templates=templates)
    return app
