"""The routing HTTP server on a real loopback socket: answers, keep-alive, malformed input."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from routing.engine import decide
from routing.http import RoutingService, kamailio_answer, serve
from routing.models import CallRequest, RouteSpec
from routing.table import RouteTable

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TABLE = RouteTable.compile(
    [
        (
            1,
            RouteSpec.model_validate(
                {
                    "name": "mobile",
                    "match": {"callee": r"^8(\d{10})$", "caller": r"^(\d+)$"},
                    "rewrite": {"callee": r"7\1", "caller": r"+\1"},
                    "action": "relay",
                    "destinations": ["sip:gw1:5060", "sip:gw2:5060"],
                    "flags": ["nat"],
                }
            ),
        ),
        (
            2,
            RouteSpec.model_validate(
                {
                    "name": "queue",
                    "match": {"callee": "^100$"},
                    "action": "app",
                    "app": "acd",
                    "app_args": ["7", "vip"],
                }
            ),
        ),
    ]
)


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    service = RoutingService(
        lambda: TABLE, max_chain=10, local_hosts=frozenset({"pbx.example"}), clock=lambda: NOW
    )
    server = await serve(service, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.close()
    await server.wait_closed()


async def test_relay_answer_is_rtjson_with_rewrites(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url) as client:
        response = await client.post(
            "/route",
            json={
                "call_id": "c1",
                "caller": "4951110000",
                "caller_host": "pbx.example",
                "callee": "89161234567",
                "callee_host": "sbc",
                "trusted": True,
            },
        )
    assert response.status_code == 200
    assert response.json() == {
        "version": "1.0",
        "routing": "serial",
        "routes": [
            {
                "uri": "sip:79161234567@gw1:5060",
                "headers": {"from": {"uri": "sip:+4951110000@pbx.example"}},
            },
            {
                "uri": "sip:79161234567@gw2:5060",
                "headers": {"from": {"uri": "sip:+4951110000@pbx.example"}},
            },
        ],
        "action": "relay",
        "route": "mobile",
        "caller": "+4951110000",
        "callee": "79161234567",
        "reject_code": 0,
        "reject_reason": "",
        "app": "",
        "app_args": "",
        "flags": ",nat,",
    }


async def test_an_untrusted_caller_is_refused_a_relay_outside_our_domain(
    server_url: str,
) -> None:
    call = {"caller": "4951110000", "callee": "89161234567"}
    async with httpx.AsyncClient(base_url=server_url) as client:
        untrusted = (await client.post("/route", json={**call, "trusted": False})).json()
        unsaid = (await client.post("/route", json=call)).json()
    assert untrusted == unsaid, "no word from Kamailio is no trust"
    assert (untrusted["action"], untrusted["route"]) == ("reject", "mobile")
    assert (untrusted["reject_code"], untrusted["reject_reason"]) == (403, "Relaying Denied")


async def test_app_and_no_match_answers(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url) as client:
        app = (await client.post("/route", json={"callee": "100"})).json()
        missing = (await client.post("/route", json={"callee": "555"})).json()
    assert (app["action"], app["app"], app["app_args"], app["routes"]) == (
        "app",
        "acd",
        "7,vip",
        [],
    )
    assert (missing["action"], missing["reject_code"], missing["route"], missing["flags"]) == (
        "reject",
        404,
        None,
        ",",
    )


async def raw_exchange(server_url: str, payload: bytes, *, read_until_close: bool = True) -> bytes:
    host, port = server_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    try:
        if read_until_close:
            return await asyncio.wait_for(reader.read(), 2)
        return await asyncio.wait_for(reader.read(65536), 2)
    finally:
        writer.close()


def post(body: bytes, *extra: bytes) -> bytes:
    return (
        b"POST /route HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\n" + b"".join(extra) + b"\r\n" + body
    )  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /route HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"POST /route HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"413"),
        (b"POST /route HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", b"413"),
        (b"POST /route HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"411"),
        (b"GET /x HTTP/1.1\r\n" + b"X-Long: " + b"a" * 10000, b"431"),
    ],
)
async def test_malformed_requests_get_a_4xx_and_the_connection_closes(
    server_url: str, payload: bytes, status: bytes
) -> None:
    answer = await raw_exchange(server_url, payload)
    assert answer.startswith(b"HTTP/1.1 " + status)


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"callee": 5}', b'{"callee": "' + b"9" * 300 + b'"}', b"\xff\xfe"],
)
async def test_bad_json_is_a_400_and_the_connection_stays_usable(
    server_url: str, body: bytes
) -> None:
    good = json.dumps({"callee": "100"}).encode()
    answer = await raw_exchange(server_url, post(body) + post(good, b"Connection: close\r\n"))
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"400")
    assert second.startswith(b"200") and b'"app": "acd"' in second


async def test_pipelined_requests_are_answered_in_order(server_url: str) -> None:
    calls = [b'{"callee": "100"}', b'{"callee": "555"}', b'{"callee": "100"}']
    payload = b"".join(post(c) for c in calls[:-1]) + post(calls[-1], b"Connection: close\r\n")
    answers = (await raw_exchange(server_url, payload)).split(b"HTTP/1.1 200 OK")[1:]
    actions = [json.loads(a.split(b"\r\n\r\n", 1)[1])["action"] for a in answers]
    assert actions == ["app", "reject", "app"]


async def test_health_and_metrics(server_url: str) -> None:
    async with httpx.AsyncClient(base_url=server_url) as client:
        await client.post("/route", json={"callee": "100"})
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
        wrong_method = await client.get("/route")
    assert health == {"table_version": 0, "routes": 2}
    assert 'softswitch_routing_decisions_total{action="app",route="queue"}' in metrics
    assert wrong_method.status_code == 405


def test_answer_matches_the_engine_for_a_reject() -> None:
    call = CallRequest(callee="0")
    answer: dict[str, Any] = kamailio_answer(decide(call, TABLE, NOW), call)
    assert (answer["action"], answer["reject_code"], answer["reject_reason"]) == (
        "reject",
        404,
        "Not Found",
    )
