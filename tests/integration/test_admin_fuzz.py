"""Schemathesis against the admin API's own OpenAPI document: whatever an admin token sends,
valid or not, no answer is a 5xx.

The app runs in process (schemathesis' ASGI transport) on a migrated scratch database, with
Kamailio's JSON-RPC and the ACD supervisor API stood in for on loopback (without them the
live endpoints would rightly answer 503). Generation is derandomized (the same cases on every
run) and bounded per operation, so the whole run takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from softswitch.admin.app import build
from softswitch.settings import AcdSettings, DatabaseSettings, KamailioSettings
from tests.conftest import free_tcp_port
from tests.integration.test_admin_api import Api, admin_settings

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 8
TIME_LIMIT_SECONDS = 90.0
# A PUT's body must carry the key of its path; random keys almost never agree, so valid cases
# get the body's key put in the path and reach the stores' checks and writes.
KEYS = {
    "PUT /api/v1/routes/{name}": ("name",),
    "PUT /api/v1/panels/{panel_id}": ("panel_id",),
    "PUT /api/v1/flats/{building}/{number}": ("building", "number"),
    "PUT /api/v1/queues/{queue_id}": ("queue_id",),
    "PUT /api/v1/agents/{agent_id}": ("agent_id",),
    "PUT /api/v1/cities/{city_id}": ("city_id",),
    "PUT /api/v1/numbers/{number}": ("number",),
}


def with_body_keys_in_path(case: Any) -> Any:
    if isinstance(case.body, dict):
        for key in KEYS.get(case.operation.label, ()):
            value = case.body.get(key)
            if isinstance(value, str) and value.strip("/"):
                case.path_parameters[key] = value
    return case


async def _kamailio(request: web.Request) -> web.Response:
    answers: dict[str, Any] = {
        "dlg.list": [],
        "ul.lookup": {"AoR": "x", "Contacts": []},
        "core.version": "kamailio 6.1.5",
        "core.uptime": {"uptime": 1, "up_since": "now"},
        "htable.get": [{"name": "x", "value": 1}],
        "htable.delete": {},
        "htable.flush": "Ok. Htable flushed.",
    }
    body = await request.json()
    return web.json_response({"jsonrpc": "2.0", "result": answers[body["method"]], "id": 1})


async def _acd(request: web.Request) -> web.Response:
    await request.read()
    if request.method == "GET":
        return web.json_response({"queues": [], "agents": []})
    return web.json_response({"error": "no waiting caller"}, status=404)


class LoopbackServers:
    """aiohttp stand-ins on their own event loop thread: schemathesis calls the app
    synchronously from this test's thread, and the app calls them from its own loop."""

    def __init__(self) -> None:
        self.kamailio_port = free_tcp_port()
        self.acd_port = free_tcp_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runners: list[web.AppRunner] = []

    def __enter__(self) -> LoopbackServers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        for port, path, handler in (
            (self.kamailio_port, "/RPC", _kamailio),
            (self.acd_port, "/{tail:.*}", _acd),
        ):
            app = web.Application()
            app.router.add_route("*", path, handler)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self._runners.append(runner)

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


@pytest.fixture
def servers() -> Iterator[LoopbackServers]:
    with LoopbackServers() as running:
        yield running


def test_no_generated_request_gets_a_server_error(
    migrated_database: DatabaseSettings, servers: LoopbackServers
) -> None:
    settings = admin_settings(
        migrated_database,
        kamailio=KamailioSettings(
            jsonrpc_url=f"http://127.0.0.1:{servers.kamailio_port}/RPC",
            jsonrpc_token=SecretStr("kamailio-token"),
        ),
        acd=AcdSettings(api_port=servers.acd_port),
    )
    api = Api(build(settings), settings)
    headers = {"Authorization": f"Bearer {api.token('admin')}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app, headers=headers)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) > 50
    started = time.monotonic()
    server_errors: list[str] = []
    calls = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, headers=headers)
            if mode == GenerationMode.POSITIVE:
                strategy = strategy.map(with_body_keys_in_path)

            @hypothesis.settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=strategy)
            def run(case: Any) -> None:
                nonlocal calls
                response = case.call(headers=headers)
                calls += 1
                if response.status_code >= 500:
                    server_errors.append(
                        f"{case.operation.label} -> {response.status_code} {response.text[:300]}"
                        f"\n    {case.as_curl_command(headers=headers)}"
                    )

            try:
                run()
            except hypothesis.errors.Unsatisfiable:
                # Nothing to get wrong: an operation without parameters or body has no
                # negative cases.
                assert mode == GenerationMode.NEGATIVE, operation.label
        assert time.monotonic() - started < TIME_LIMIT_SECONDS, f"too slow at {operation.label}"
    assert server_errors == []
    assert calls > len(operations) * 4
