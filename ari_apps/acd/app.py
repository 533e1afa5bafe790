"""Builds the ACD app from settings: the machine, the dispatcher services and, as its
background, their PostgreSQL sync, phone checks and the supervisor API."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from aiohttp import web
from prometheus_client import REGISTRY

from ari_apps.acd.api import AcdCollector, SupervisorApi, json_errors
from ari_apps.acd.machine import APP, AcdCall, AcdMachine
from ari_apps.acd.models import AcdPolicy
from ari_apps.acd.stasis import AcdServices, utc_now
from ari_apps.machine import CallControl, StasisAppSpec
from softswitch.db import KeptConnection
from softswitch.kamailio_rpc import KamailioRpc
from softswitch.settings import Settings


async def build(settings: Settings, resources: AsyncExitStack) -> StasisAppSpec[AcdCall]:
    database = await resources.enter_async_context(
        KeptConnection(settings.database.url, what="ACD database")
    )
    kamailio = await resources.enter_async_context(KamailioRpc(settings.kamailio))
    acd = settings.acd
    machine = AcdMachine(
        AcdPolicy(
            sip_domain=settings.kamailio.sip_domain,
            callback_caller_id=acd.callback_caller_id,
            callback_ring_seconds=acd.callback_ring_seconds,
        )
    )
    services = AcdServices(
        database=database,
        kamailio=kamailio,
        settings=acd,
        machine=machine,
        database_url=settings.database.url,
    )

    async def background(calls: CallControl, stop: asyncio.Event) -> None:
        collector = AcdCollector(lambda: services.center, utc_now)
        REGISTRY.register(collector)
        runner: web.AppRunner | None = None
        try:
            if acd.api_port:
                api = SupervisorApi(
                    lambda: services.center,
                    lambda action: services.handle(action).refused,
                    utc_now,
                    database,
                )
                app = api.application()
                app.middlewares.append(json_errors)
                runner = web.AppRunner(app, access_log=None)
                await runner.setup()
                await web.TCPSite(runner, acd.api_host, acd.api_port).start()
            await services.run(calls, stop)
        finally:
            if runner is not None:
                await runner.cleanup()
            REGISTRY.unregister(collector)

    return StasisAppSpec(APP, machine, services, background)
