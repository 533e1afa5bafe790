"""KamailioRpc's contract with Kamailio's JSON-RPC answers, against local stand-ins.

The answers below are the shapes Kamailio 6.1 sends (captured from the dev stack): results
and errors come as JSON-RPC bodies, errors with HTTP 500; a wrong token gets a plain-text
401. The real Kamailio is exercised in tests/e2e/test_kamailio_busy.py. The timeout and
refused-connection cases use real loopback sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from softswitch.kamailio_rpc import (
    Dialog,
    DialogState,
    KamailioRpc,
    KamailioRpcError,
    call_sync,
)
from softswitch.settings import KamailioSettings

pytestmark = pytest.mark.integration

SETTINGS = KamailioSettings(
    jsonrpc_url="http://kamailio.test/RPC",
    jsonrpc_token=SecretStr("s3cret-token"),
    sip_domain="voip.example",
    jsonrpc_timeout_seconds=0.5,
)

Handler = Callable[[dict[str, Any]], httpx.Response]


def rpc_result(result: object) -> httpx.Response:
    return httpx.Response(200, json={"jsonrpc": "2.0", "result": result, "id": 1})


def rpc_error(code: int, message: str) -> httpx.Response:
    body = {"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": 1}
    return httpx.Response(500, json=body)


class FakeKamailio:
    """Answers each request with ``handler(request body)``; remembers what it was sent."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(json.loads(request.content))

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]


async def client(fake: FakeKamailio) -> KamailioRpc:
    rpc = KamailioRpc(SETTINGS, transport=httpx.MockTransport(fake))
    await rpc.connect()
    return rpc


async def test_account_calls_asks_the_profile_size_with_the_bearer_token() -> None:
    fake = FakeKamailio(lambda body: rpc_result(2))
    async with KamailioRpc(SETTINGS, transport=httpx.MockTransport(fake)) as rpc:
        assert await rpc.account_calls("door-17") == 2
    (request,) = fake.requests
    assert request.headers["Authorization"] == "Bearer s3cret-token"
    assert fake.bodies()[0]["method"] == "dlg.profile_get_size"
    assert fake.bodies()[0]["params"] == ["account_calls", "door-17"]


async def test_contacts_lists_addresses_and_an_unknown_aor_is_no_contact() -> None:
    bindings = {
        "AoR": "1001",
        "Contacts": [
            {"Contact": {"Address": "sip:1001@10.0.0.5:5060", "Expires": 3600, "Q": -1}},
            {"Contact": {"Address": "sip:1001@10.0.0.6:5062;ob", "Expires": 60, "Q": -1}},
        ],
    }

    def answer(body: dict[str, Any]) -> httpx.Response:
        if body["params"][1].startswith("1001@"):
            return rpc_result(bindings)
        return rpc_error(500, "AOR not found in location table")

    fake = FakeKamailio(answer)
    rpc = await client(fake)
    assert await rpc.contacts("1001") == ["sip:1001@10.0.0.5:5060", "sip:1001@10.0.0.6:5062;ob"]
    assert await rpc.contacts("1002") == []
    await rpc.aclose()
    # The AoR carries our domain: usrloc accepts it with and without use_domain.
    assert [body["params"] for body in fake.bodies()] == [
        ["location", "1001@voip.example"],
        ["location", "1002@voip.example"],
    ]


async def test_dialogs_are_typed() -> None:
    listed = [
        {"h_entry": 1234, "h_id": 4167, "call-id": "abc@host", "from_uri": "sip:1001@voip",
         "to_uri": "sip:1002@voip", "state": 4, "caller": {"tag": "x"}, "profiles": []},
        {"h_entry": 7, "h_id": 8, "call-id": "def@host", "from_uri": "sip:a@voip",
         "to_uri": "sip:b@voip", "state": 5},
    ]  # fmt: skip
    rpc = await client(FakeKamailio(lambda body: rpc_result(listed)))
    assert await rpc.dialogs() == [
        Dialog(call_id="abc@host", from_uri="sip:1001@voip", to_uri="sip:1002@voip",
               state=DialogState.CONFIRMED),
        Dialog(call_id="def@host", from_uri="sip:a@voip", to_uri="sip:b@voip",
               state=DialogState.DELETED),
    ]  # fmt: skip
    await rpc.aclose()


async def test_accounts_on_calls_are_the_profile_values_of_its_dialogs() -> None:
    listed = [
        {"call-id": "a", "state": 4, "profiles": [{"account_calls": "1001"},
                                                  {"account_calls": "1002"}]},
        {"call-id": "b", "state": 2, "profiles": [{"account_calls": "1001"}]},
        {"call-id": "c", "state": 1},
    ]  # fmt: skip
    fake = FakeKamailio(lambda body: rpc_result(listed))
    rpc = await client(fake)
    assert await rpc.accounts_on_calls() == {"1001", "1002"}
    await rpc.aclose()
    [body] = fake.bodies()
    assert (body["method"], body["params"]) == ("dlg.profile_list", ["account_calls"])


@pytest.mark.parametrize(
    ("response", "message", "code"),
    [
        (rpc_error(404, "Profile not found: account_calls"), "Profile not found", 404),
        (httpx.Response(401, text="unauthorized\n"), "HTTP 401", None),
        (httpx.Response(200, text="<html>"), "HTTP 200, not a JSON-RPC answer", None),
        (rpc_result("three"), "unexpected answer", None),
        (httpx.Response(503, json={"jsonrpc": "2.0", "id": 1}), "HTTP 503", None),
    ],
)
async def test_failures_are_kamailio_rpc_errors(
    response: httpx.Response, message: str, code: int | None
) -> None:
    rpc = await client(FakeKamailio(lambda body: response))
    with pytest.raises(KamailioRpcError, match=message) as error:
        await rpc.account_calls("door-17")
    assert error.value.code == code
    assert error.value.method == "dlg.profile_get_size"
    await rpc.aclose()


async def test_probe_tells_whether_kamailio_answers_with_our_token() -> None:
    answering = await client(FakeKamailio(lambda body: rpc_result({"version": "6.1.5"})))
    refusing = await client(FakeKamailio(lambda body: httpx.Response(401, text="no\n")))
    assert await answering.probe()
    assert not await refusing.probe()
    await answering.aclose()
    await refusing.aclose()


async def test_calls_outside_the_context_manager_are_refused() -> None:
    rpc = KamailioRpc(SETTINGS, transport=httpx.MockTransport(FakeKamailio(rpc_result)))
    with pytest.raises(RuntimeError, match="outside"):
        await rpc.account_calls("door-17")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers (a hung Kamailio)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/RPC"


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_hung_kamailio_costs_one_timeout_in_all(silent_server: str) -> None:
    settings = SETTINGS.model_copy(update={"jsonrpc_url": silent_server})
    async with KamailioRpc(settings) as rpc:
        started = time.monotonic()
        with pytest.raises(KamailioRpcError, match=r"no answer within 0.5s"):
            await rpc.account_calls("door-17")
        assert time.monotonic() - started < 1.0
    started = time.monotonic()
    with pytest.raises(KamailioRpcError, match="no answer within"):
        call_sync(settings, "core.version")
    assert time.monotonic() - started < 2.0  # httpx: per phase, connect + read


async def test_an_unreachable_kamailio_is_an_rpc_error(closed_port: int) -> None:
    settings = SETTINGS.model_copy(update={"jsonrpc_url": f"http://127.0.0.1:{closed_port}/RPC"})
    async with KamailioRpc(settings) as rpc:
        with pytest.raises(KamailioRpcError, match="unreachable: ConnectError"):
            await rpc.contacts("1001")
    with pytest.raises(KamailioRpcError, match="unreachable"):
        call_sync(settings, "core.version")


@pytest.fixture
async def answering_server() -> AsyncIterator[str]:
    """A minimal HTTP server answering every request with one JSON-RPC result."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # httpx sends a small JSON body in one go
        body = b'{"jsonrpc":"2.0","result":{"version":"kamailio 6.1.5"},"id":1}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}/RPC"


async def test_call_sync_returns_the_result(answering_server: str) -> None:
    settings = SETTINGS.model_copy(update={"jsonrpc_url": answering_server})
    result = await asyncio.to_thread(call_sync, settings, "core.version")
    assert result == {"version": "kamailio 6.1.5"}
