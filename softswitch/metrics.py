"""The /metrics endpoint every service exposes (Prometheus text format)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from softswitch.settings import MetricsSettings


async def _metrics(request: web.Request) -> web.Response:
    registry: CollectorRegistry = request.app["registry"]
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def add_metrics_route(app: web.Application, registry: CollectorRegistry = REGISTRY) -> None:
    """Mount /metrics on a service's own aiohttp app."""
    app["registry"] = registry
    app.router.add_get("/metrics", _metrics)


async def start_metrics_server(
    settings: MetricsSettings, registry: CollectorRegistry = REGISTRY
) -> web.AppRunner | None:
    """A stand-alone /metrics listener for processes without an HTTP API of their own."""
    if settings.port == 0:
        return None
    app = web.Application()
    add_metrics_route(app, registry)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    return runner
