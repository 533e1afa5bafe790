"""The routing service process: route loader plus HTTP server (composition root)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from routing.http import RoutingService, serve
from routing.store import RouteLoader
from softswitch.logs import event
from softswitch.settings import Settings

log = logging.getLogger("softswitch.routing")


@dataclass
class RoutingApp:
    settings: Settings
    loader: RouteLoader
    service: RoutingService

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop``; answers (404 for every call) even before the first load."""
        routing = self.settings.routing
        server = await serve(self.service, routing.host, routing.port)
        event(log, "routing service listening", url=routing.url)
        loader = asyncio.create_task(self.loader.run(stop))
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()
            await loader


def build(settings: Settings) -> RoutingApp:
    loader = RouteLoader(
        settings.database.url, debounce_seconds=settings.routing.reload_debounce_seconds
    )
    service = RoutingService(
        lambda: loader.table,
        max_chain=settings.routing.max_chain,
        local_hosts=settings.kamailio.local_hosts,
    )
    return RoutingApp(settings, loader, service)
