"""The admin API built on a migrated scratch database and driven in process through httpx's
ASGI transport: tokens and roles, the rate limit, every resource group's round trip, field-level
validation, all-or-nothing imports, conflicts, and the live views against loopback stand-ins
for the ACD supervisor API and Kamailio (and against nothing at all)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web
from fastapi import FastAPI
from pydantic import SecretStr

from softswitch.accounts import ha1
from softswitch.admin.app import build
from softswitch.admin.auth import Role, new_token, token_digest
from softswitch.admin.store import add_token
from softswitch.settings import (
    AcdSettings,
    AdminSettings,
    DatabaseSettings,
    KamailioSettings,
    Settings,
)
from softswitch.sos.store import lease_number
from tests.conftest import free_tcp_port
from tests.integration.conftest import softswitch_cli

pytestmark = pytest.mark.integration

FAILURES_PER_MINUTE = 4
BUSY = {
    "name": "busy",
    "action": "reject",
    "match": {"callee": "^486$"},
    "reject": {"code": 486, "reason": "Busy Here"},
}
TO_1001 = {
    "name": "to-1001",
    "priority": 10,
    "match": {"callee": "^1001$"},
    "action": "relay",
    "destinations": ["sip:1001@127.0.0.1"],
}
CITY = {
    "city_id": "nsk",
    "name": "Novosibirsk",
    "fias_code": "8dea00e3-9aab-4d8e-887c-ef2aaa546456",
    "gateway_uri": "sip:gw.nsk.example",
    "time_zone": "Asia/Novosibirsk",
    "fallback_number": "+73832000000",
}
PANEL = {"panel_id": "lenina-1", "account": "door-1", "building": "lenina-1", "city_id": "nsk"}
FLAT = {
    "building": "lenina-1",
    "number": "12",
    "devices": [{"kind": "sip", "target": "1001"}, {"kind": "forward", "target": "+79130000000"}],
}


@dataclass
class Api:
    app: FastAPI
    settings: Settings

    @property
    def url(self) -> str:
        return self.settings.database.url

    def token(self, role: Role, name: str | None = None) -> str:
        token = new_token()
        with psycopg.connect(self.url, autocommit=True) as conn:
            add_token(conn, name or f"{role}-{token[:6]}", role, token_digest(token))
        return token

    def client(self, token: str | None = None, *, address: str = "127.0.0.1") -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app, client=(address, 40000)),
            base_url="http://admin.test",
            headers=headers,
        )

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query).fetchall()


def admin_settings(database: DatabaseSettings, **parts: Any) -> Settings:
    """Settings of a test: Kamailio and the ACD API on ports nothing listens on."""
    defaults: dict[str, Any] = {
        "database": database,
        "kamailio": KamailioSettings(
            jsonrpc_url=f"http://127.0.0.1:{free_tcp_port()}/RPC",
            jsonrpc_token=SecretStr("kamailio-token"),
            jsonrpc_timeout_seconds=0.5,
        ),
        "acd": AcdSettings(api_port=free_tcp_port()),
        "admin": AdminSettings(auth_failures_per_minute=FAILURES_PER_MINUTE),
    }
    return Settings(_env_file=None, **(defaults | parts))  # type: ignore[call-arg]


@pytest.fixture
def api(migrated_database: DatabaseSettings) -> Api:
    settings = admin_settings(migrated_database)
    return Api(build(settings), settings)


@pytest.fixture
async def admin(api: Api) -> AsyncIterator[httpx.AsyncClient]:
    async with api.client(api.token("admin")) as client:
        yield client


def fields(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error", "fields"}, body
    return {item["field"]: item["message"] for item in body["fields"]}


# Authentication, roles, rate limit.


async def test_health_needs_no_token_and_everything_else_does(api: Api) -> None:
    async with api.client() as anonymous:
        assert (await anonymous.get("/health")).json() == {"status": "ok"}
        for path in ("/api/v1/routes", "/metrics", "/openapi.json"):
            refused = await anonymous.get(path)
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert refused.json() == {"error": refused.json()["error"], "fields": []}


async def test_every_operation_of_the_document_refuses_a_request_without_token(api: Api) -> None:
    async with api.client(api.token("read_only")) as reader:
        document = (await reader.get("/openapi.json")).json()
    operations = [
        (method.upper(), path.replace("{", "").replace("}", ""))
        for path, item in document["paths"].items()
        for method in item
        if path != "/health"
    ]
    assert len(operations) > 50
    for number, (method, path) in enumerate(operations):
        # An address of its own each: the rate limit would answer 429 after a few.
        async with api.client(address=f"10.9.{number}.1") as anonymous:
            response = await anonymous.request(method, path)
        assert response.status_code == 401, (method, path, response.text)


async def test_roles_read_only_reads_supervisor_acts_on_the_acd_admin_does_everything(
    api: Api,
) -> None:
    async with api.client(api.token("read_only")) as reader:
        assert (await reader.get("/api/v1/routes")).status_code == 200
        assert (await reader.get("/metrics")).status_code == 200
        refused = await reader.put("/api/v1/routes/busy", json=BUSY)
        assert refused.status_code == 403
        assert "read_only" in refused.json()["error"]
        assert (await reader.post("/api/v1/acd/waiters/w1/priority", json={})).status_code == 403
    async with api.client(api.token("supervisor")) as supervisor:
        assert (await supervisor.get("/api/v1/panels")).status_code == 200
        assert (await supervisor.put("/api/v1/routes/busy", json=BUSY)).status_code == 403
        # Past the role check: the ACD app is not running, hence 503.
        acted = await supervisor.post("/api/v1/acd/waiters/w1/priority", json={"priority": 5})
        assert acted.status_code == 503
    async with api.client(api.token("admin")) as admin:
        assert (await admin.put("/api/v1/routes/busy", json=BUSY)).status_code == 201
    assert api.rows("SELECT count(*) FROM route") == [(1,)]


async def test_unknown_and_revoked_tokens_are_refused_and_use_is_recorded(api: Api) -> None:
    token = api.token("read_only", name="grafana")
    async with api.client("not-a-token") as stranger:
        assert (await stranger.get("/api/v1/routes")).status_code == 401
    async with api.client(token) as reader:
        assert (await reader.get("/api/v1/routes")).status_code == 200
        assert api.rows("SELECT last_used_at IS NOT NULL FROM admin_token") == [(True,)]
        with psycopg.connect(api.url, autocommit=True) as conn:
            conn.execute("UPDATE admin_token SET revoked_at = now() WHERE name = 'grafana'")
        revoked = await reader.get("/api/v1/routes")
        assert revoked.status_code == 401
        assert revoked.json()["error"] == "unknown or revoked token"


async def test_tokens_are_stored_only_as_sha256(api: Api) -> None:
    token = api.token("admin", name="ops")
    (stored,) = api.rows("SELECT * FROM admin_token")
    assert stored[2] == hashlib.sha256(token.encode()).digest()
    text = repr(stored)
    assert token not in text
    assert token.encode() not in bytes(stored[2])


async def test_failed_authentications_are_logged_and_rate_limited_per_address(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    token = api.token("admin")
    wrong = "wrong-" + token
    async with api.client(wrong, address="10.0.0.66") as guesser:
        for _ in range(FAILURES_PER_MINUTE):
            assert (await guesser.get("/api/v1/routes")).status_code == 401
        blocked = await guesser.get("/api/v1/routes")
        assert blocked.status_code == 429
        assert 55 <= int(blocked.headers["Retry-After"]) <= 60
        assert "10.0.0.66" in blocked.json()["error"]
    # The address is blocked whatever it sends, a valid token too; other addresses are not.
    async with api.client(token, address="10.0.0.66") as same_address:
        assert (await same_address.get("/api/v1/routes")).status_code == 429
    async with api.client(token, address="10.0.0.67") as other_address:
        assert (await other_address.get("/api/v1/routes")).status_code == 200
    failures = [r for r in caplog.records if r.getMessage() == "admin API authentication failed"]
    assert len(failures) == FAILURES_PER_MINUTE
    assert {r.fields["client"] for r in failures} == {"10.0.0.66"}  # type: ignore[attr-defined]
    assert all(wrong not in json.dumps(r.fields) + r.getMessage() for r in failures)  # type: ignore[attr-defined]


def test_cli_adds_lists_and_revokes_tokens_printing_each_once(
    migrated_database: DatabaseSettings,
) -> None:
    added = softswitch_cli(
        migrated_database, "admin", "token", "add", "noc", "--role", "supervisor"
    )
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) == 43
    assert "shown only now" in added.stderr
    with psycopg.connect(migrated_database.url) as conn:
        assert conn.execute("SELECT name, role, token_sha256 FROM admin_token").fetchall() == [
            ("noc", "supervisor", token_digest(token))
        ]
    again = softswitch_cli(migrated_database, "admin", "token", "add", "noc", "--role", "admin")
    assert again.returncode == 1
    assert "exists" in again.stderr
    bad_role = softswitch_cli(migrated_database, "admin", "token", "add", "x", "--role", "root")
    assert bad_role.returncode == 2
    listed = softswitch_cli(migrated_database, "admin", "token", "list")
    assert "noc" in listed.stdout and "supervisor" in listed.stdout
    assert token not in listed.stdout
    assert softswitch_cli(migrated_database, "admin", "token", "revoke", "noc").returncode == 0
    assert softswitch_cli(migrated_database, "admin", "token", "revoke", "noc").returncode == 1
    with psycopg.connect(migrated_database.url) as conn:
        assert conn.execute("SELECT revoked_at IS NOT NULL FROM admin_token").fetchall() == [
            (True,)
        ]


# Routes.


async def test_routes_round_trip_and_test_call(admin: httpx.AsyncClient, api: Api) -> None:
    created = await admin.put("/api/v1/routes/busy", json=BUSY)
    assert created.status_code == 201
    assert (await admin.put("/api/v1/routes/to-1001", json=TO_1001)).status_code == 201
    replaced = await admin.put("/api/v1/routes/busy", json=BUSY | {"priority": 50})
    assert replaced.status_code == 200
    route = (await admin.get("/api/v1/routes/busy")).json()
    assert route["priority"] == 50 and route["reject"] == {"code": 486, "reason": "Busy Here"}
    listed = (await admin.get("/api/v1/routes")).json()
    assert [r["name"] for r in listed] == ["to-1001", "busy"]
    decided = await admin.get("/api/v1/routes/test", params={"caller": "1002", "callee": "1001"})
    assert decided.json()["decision"]["destinations"] == ["sip:1001@127.0.0.1"]
    assert decided.json()["skipped"] == []
    # To one of our own accounts: routed whoever calls (no open-relay check).
    stranger = {"caller": "x", "callee": "1001", "trusted": "false"}
    untrusted = await admin.get("/api/v1/routes/test", params=stranger)
    assert untrusted.json()["decision"]["action"] == "relay"
    assert (await admin.delete("/api/v1/routes/busy")).status_code == 204
    assert (await admin.get("/api/v1/routes/busy")).status_code == 404
    assert (await admin.delete("/api/v1/routes/busy")).status_code == 404
    # Export then import is a no-op.
    imported = await admin.post(
        "/api/v1/routes/import", json=(await admin.get("/api/v1/routes")).json()
    )
    assert imported.json()["changes"]["routes"]["unchanged"] == ["to-1001"]
    assert api.rows("SELECT name FROM route") == [("to-1001",)]


@pytest.mark.parametrize(
    ("mask", "reason"),
    [("(", "missing )"), ("^(?=1)", "invalid perl operator"), (r"^\1$", "invalid escape")],
)
async def test_a_mask_re2_refuses_is_a_field_error(
    admin: httpx.AsyncClient, mask: str, reason: str
) -> None:
    refused = await admin.put("/api/v1/routes/busy", json=BUSY | {"match": {"callee": mask}})
    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid request"
    assert list(fields(refused)) == ["match.callee"]
    assert "RE2 cannot compile" in fields(refused)["match.callee"]
    assert reason in fields(refused)["match.callee"]


async def test_route_bodies_are_checked_as_the_importer_checks_them(
    admin: httpx.AsyncClient,
) -> None:
    incomplete = await admin.put("/api/v1/routes/r", json={"name": "r", "action": "relay"})
    assert fields(incomplete) == {"(body)": "relay needs at least one destination"}
    renamed = await admin.put("/api/v1/routes/r", json=BUSY)
    assert fields(renamed) == {"name": "must be 'r', as in the path"}
    not_json = await admin.put(
        "/api/v1/routes/r", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422 and list(fields(not_json)) == ["(body)"]
    bad_query = await admin.get("/api/v1/routes/test", params={"caller": "1"})
    assert fields(bad_query) == {"callee": "Field required"}
    bad_time = await admin.get(
        "/api/v1/routes/test", params={"caller": "1", "callee": "2", "at": "0001-01-01T00:00:00"}
    )
    assert list(fields(bad_time)) == ["at"]


async def test_a_route_import_is_all_or_nothing(admin: httpx.AsyncClient, api: Api) -> None:
    assert (await admin.put("/api/v1/routes/busy", json=BUSY)).status_code == 201
    bad_second = [TO_1001, BUSY | {"name": "other", "match": {"callee": "(?<x"}}]
    refused = await admin.post("/api/v1/routes/import?replace=true", json=bad_second)
    assert refused.status_code == 422
    assert list(fields(refused)) == ["1.match.callee"]
    same_name = await admin.post("/api/v1/routes/import", json=[TO_1001, TO_1001])
    assert fields(same_name) == {"1": "name already used by route #0"}
    assert api.rows("SELECT name FROM route") == [("busy",)]
    dry = await admin.post("/api/v1/routes/import?replace=true&dry_run=true", json=[TO_1001])
    assert dry.json() == {
        "dry_run": True,
        "changes": {
            "routes": {"added": ["to-1001"], "changed": [], "removed": ["busy"], "unchanged": []}
        },
    }
    assert api.rows("SELECT name FROM route") == [("busy",)]
    done = await admin.post("/api/v1/routes/import?replace=true", json=[TO_1001])
    assert done.json()["changes"]["routes"]["removed"] == ["busy"]
    assert api.rows("SELECT name FROM route") == [("to-1001",)]


async def test_a_row_written_in_sql_that_does_not_validate_is_named(
    admin: httpx.AsyncClient, api: Api
) -> None:
    with psycopg.connect(api.url, autocommit=True) as conn:
        conn.execute("INSERT INTO route (name, action, callee_mask) VALUES ('sql', 'next', '(')")
    listed = await admin.get("/api/v1/routes")
    assert listed.status_code == 409 and "'sql'" in listed.json()["error"]
    assert (await admin.get("/api/v1/routes/sql")).status_code == 409
    decided = await admin.get("/api/v1/routes/test", params={"caller": "1", "callee": "2"})
    assert [s["name"] for s in decided.json()["skipped"]] == ["sql"]
    repaired = await admin.put("/api/v1/routes/sql", json={"name": "sql", "action": "next"})
    assert repaired.status_code == 200
    assert (await admin.get("/api/v1/routes")).status_code == 200


# Subscribers.


async def test_subscribers_are_stored_as_ha1_and_never_shown_with_it(
    admin: httpx.AsyncClient, api: Api
) -> None:
    created = await admin.put("/api/v1/subscribers/1001", json={"password": "correct horse"})
    assert created.status_code == 201
    assert created.json() == {"username": "1001", "domain": "127.0.0.1"}
    rekeyed = await admin.put(
        "/api/v1/subscribers/1001", json={"password": "battery staple", "domain": "127.0.0.1"}
    )
    assert rekeyed.status_code == 200
    assert api.rows("SELECT username, domain, password, ha1 FROM subscriber") == [
        ("1001", "127.0.0.1", "", ha1("1001", "127.0.0.1", "battery staple"))
    ]
    listed = await admin.get("/api/v1/subscribers")
    assert listed.json() == [{"username": "1001", "domain": "127.0.0.1", "contacts": []}]
    assert (
        "battery" not in listed.text
        and ha1("1001", "127.0.0.1", "battery staple") not in listed.text
    )
    assert (await admin.delete("/api/v1/subscribers/1001")).status_code == 204
    assert (await admin.delete("/api/v1/subscribers/1001")).status_code == 404
    assert api.rows("SELECT count(*) FROM subscriber") == [(0,)]


@pytest.mark.parametrize(
    ("username", "body", "field"),
    [
        ("door@17", {"password": "long enough"}, "username"),
        ("1001", {"password": "short"}, "password"),
        ("1001", {"password": "line\nbreak!"}, "password"),
        ("1001", {"password": "long enough", "domain": "a b"}, "domain"),
        ("1001", {"password": "long enough", "ha1": "0" * 32}, "ha1"),
        ("1001", {}, "password"),
    ],
)
async def test_bad_account_input_is_refused_field_by_field_and_writes_nothing(
    admin: httpx.AsyncClient, api: Api, username: str, body: dict[str, str], field: str
) -> None:
    refused = await admin.put(f"/api/v1/subscribers/{username}", json=body)
    assert refused.status_code == 422
    assert field in fields(refused)
    assert api.rows("SELECT count(*) FROM subscriber") == [(0,)]


# Directory.


async def test_panels_and_flats_round_trip(admin: httpx.AsyncClient, api: Api) -> None:
    assert (await admin.put("/api/v1/cities/nsk", json=CITY)).status_code == 201
    assert (await admin.put("/api/v1/panels/lenina-1", json=PANEL)).status_code == 201
    panel = (await admin.get("/api/v1/panels/lenina-1")).json()
    assert panel["account"] == "door-1" and panel["flat_last"] == 9999
    assert (await admin.put("/api/v1/flats/lenina-1/12", json=FLAT)).status_code == 201
    one_device = FLAT | {"devices": [{"kind": "mobile", "target": "app-7"}]}
    assert (await admin.put("/api/v1/flats/lenina-1/12", json=one_device)).status_code == 200
    assert (await admin.get("/api/v1/flats/lenina-1/12")).json()["devices"] == [
        {"kind": "mobile", "target": "app-7", "label": ""}
    ]
    assert [f["number"] for f in (await admin.get("/api/v1/flats")).json()] == ["12"]
    assert len((await admin.get("/api/v1/panels")).json()) == 1
    assert (await admin.delete("/api/v1/flats/lenina-1/12")).status_code == 204
    assert api.rows("SELECT count(*) FROM flat_device") == [(0,)]
    assert (await admin.delete("/api/v1/panels/lenina-1")).status_code == 204
    assert (await admin.get("/api/v1/panels/lenina-1")).status_code == 404


async def test_directory_conflicts_are_409_and_bad_records_422(
    admin: httpx.AsyncClient, api: Api
) -> None:
    unknown_city = await admin.put("/api/v1/panels/lenina-1", json=PANEL)
    assert unknown_city.status_code == 409
    assert "no city 'nsk'" in fields(unknown_city)["city_id"]
    assert (await admin.put("/api/v1/cities/nsk", json=CITY)).status_code == 201
    assert (await admin.put("/api/v1/panels/lenina-1", json=PANEL)).status_code == 201
    same_account = await admin.put("/api/v1/panels/lenina-2", json=PANEL | {"panel_id": "lenina-2"})
    assert same_account.status_code == 409
    assert "intercom_panel_account" in same_account.json()["error"]
    assert "door-1" in same_account.json()["error"]
    bad_range = await admin.put(
        "/api/v1/panels/lenina-1", json=PANEL | {"flat_first": 10, "flat_last": 5}
    )
    assert list(fields(bad_range)) == ["flat_first"]
    bad_device = await admin.put(
        "/api/v1/flats/lenina-1/12", json=FLAT | {"devices": [{"kind": "sip", "target": "a@b"}]}
    )
    assert list(fields(bad_device)) == ["devices.0.target"]
    assert api.rows("SELECT panel_id FROM intercom_panel") == [("lenina-1",)]
    assert api.rows("SELECT count(*) FROM flat") == [(0,)]


async def test_a_directory_import_is_all_or_nothing(admin: httpx.AsyncClient, api: Api) -> None:
    document = {"panels": [], "flats": [FLAT, FLAT | {"number": "012"}]}
    refused = await admin.post("/api/v1/directory/import", json=document)
    assert refused.status_code == 422
    assert list(fields(refused)) == ["flats.1.number"]
    assert api.rows("SELECT count(*) FROM flat") == [(0,)]
    document["flats"] = [FLAT]
    done = await admin.post("/api/v1/directory/import", json=document)
    assert done.json()["changes"]["flats"]["added"] == [["lenina-1", "12"]]
    assert api.rows("SELECT count(*) FROM flat_device") == [(2,)]


# ACD configuration.


async def test_queues_and_agents_round_trip(admin: httpx.AsyncClient, api: Api) -> None:
    queue = {"queue_id": "support", "strategy": "least_recent", "name": "Support"}
    assert (await admin.put("/api/v1/queues/support", json=queue)).status_code == 201
    stored = (await admin.get("/api/v1/queues/support")).json()
    assert stored["strategy"] == "least_recent" and stored["ring_timeout_seconds"] == 15.0
    agent = {"agent_id": "ivanova", "account": "1101", "queues": [{"queue_id": "support"}]}
    assert (await admin.put("/api/v1/agents/ivanova", json=agent)).status_code == 201
    assert (await admin.get("/api/v1/agents")).json() == [
        {
            "agent_id": "ivanova",
            "account": "1101",
            "name": "",
            "queues": [{"queue_id": "support", "penalty": 0, "weight": 1, "position": 0}],
        }
    ]
    assert (
        await admin.put("/api/v1/agents/ivanova", json=agent | {"queues": []})
    ).status_code == 200
    assert api.rows("SELECT count(*) FROM acd_membership") == [(0,)]
    assert (await admin.delete("/api/v1/agents/ivanova")).status_code == 204
    assert (await admin.delete("/api/v1/queues/support")).status_code == 204
    assert (await admin.get("/api/v1/queues/support")).status_code == 404


async def test_acd_bad_input_is_422_and_broken_references_409(
    admin: httpx.AsyncClient, api: Api
) -> None:
    bad_strategy = await admin.put(
        "/api/v1/queues/sales", json={"queue_id": "sales", "strategy": "loudest_first"}
    )
    assert bad_strategy.status_code == 422
    assert "ring_all" in fields(bad_strategy)["strategy"]
    bad_key = await admin.put(
        "/api/v1/queues/sales", json={"queue_id": "sales", "callback_key": "11"}
    )
    assert list(fields(bad_key)) == ["callback_key"]
    nowhere = await admin.put(
        "/api/v1/queues/sales", json={"queue_id": "sales", "overflow": "queue:support"}
    )
    assert nowhere.status_code == 409
    assert list(fields(nowhere)) == ["overflow"]
    assert (
        await admin.put("/api/v1/queues/support", json={"queue_id": "support"})
    ).status_code == 201
    overflowing = {"queue_id": "sales", "overflow": "queue:support"}
    assert (await admin.put("/api/v1/queues/sales", json=overflowing)).status_code == 201
    in_use = await admin.delete("/api/v1/queues/support")
    assert in_use.status_code == 409 and "'sales'" in in_use.json()["error"]
    no_queue = await admin.put(
        "/api/v1/agents/a1",
        json={"agent_id": "a1", "account": "1101", "queues": [{"queue_id": "x"}]},
    )
    assert no_queue.status_code == 409 and list(fields(no_queue)) == ["queues.0.queue_id"]
    assert (
        await admin.put("/api/v1/agents/a1", json={"agent_id": "a1", "account": "1101"})
    ).status_code == 201
    taken = await admin.put("/api/v1/agents/a2", json={"agent_id": "a2", "account": "1101"})
    assert taken.status_code == 409 and "'a1'" in fields(taken)["account"]
    assert api.rows("SELECT agent_id FROM acd_agent") == [("a1",)]


async def test_an_acd_import_is_all_or_nothing(admin: httpx.AsyncClient, api: Api) -> None:
    document = {
        "queues": [{"queue_id": "support"}, {"queue_id": "sales", "strategy": "fastest"}],
        "agents": [{"agent_id": "a1", "account": "1101", "queues": [{"queue_id": "support"}]}],
    }
    refused = await admin.post("/api/v1/acd/import", json=document)
    assert refused.status_code == 422
    assert list(fields(refused)) == ["queues.1.strategy"]
    document["queues"] = [{"queue_id": "support"}, {"queue_id": "sales", "announce_seconds": 5}]
    refused = await admin.post("/api/v1/acd/import", json=document)
    assert list(fields(refused)) == ["queues.1.announce_seconds"]
    assert api.rows("SELECT count(*) FROM acd_queue") == [(0,)]
    document["queues"] = [{"queue_id": "support"}]
    done = await admin.post("/api/v1/acd/import", json=document)
    assert done.json()["changes"]["memberships"]["added"] == [["a1", "support"]]


# 112 pool.


async def test_pool_cities_numbers_and_operator_actions(admin: httpx.AsyncClient, api: Api) -> None:
    assert (await admin.put("/api/v1/cities/nsk", json=CITY)).status_code == 201
    assert (await admin.get("/api/v1/cities/nsk")).json()["reservation_minutes"] == 60
    assert (await admin.put("/api/v1/panels/lenina-1", json=PANEL)).status_code == 201
    number = {"number": "+73832000001", "city_id": "nsk"}
    assert (await admin.put("/api/v1/numbers/+73832000001", json=number)).status_code == 201
    assert (await admin.get("/api/v1/numbers")).json() == [number | {"blocked_reason": None}]
    not_leased = await admin.post("/api/v1/numbers/+73832000001/release")
    assert not_leased.status_code == 409
    async with await psycopg.AsyncConnection.connect(api.url) as conn:
        outcome = await lease_number(conn, panel_account="door-1", call_id="call-1")
    assert outcome.lease is not None and outcome.lease.number == "+73832000001"
    usage = (await admin.get("/api/v1/sos/usage")).json()
    assert usage == [
        {
            "city_id": "nsk",
            "name": "Novosibirsk",
            "free": 0,
            "reserved": 0,
            "leased": 1,
            "blocked": 0,
        }
    ]
    holders = (await admin.get("/api/v1/sos/holders")).json()
    assert [(h["number"], h["status"], h["panel_id"]) for h in holders] == [
        ("+73832000001", "leased", "lenina-1")
    ]
    released = await admin.post("/api/v1/numbers/+73832000001/release")
    assert released.status_code == 200 and released.json()["call_id"] == "call-1"
    blocked = await admin.post("/api/v1/numbers/+73832000001/block", json={"reason": "spam"})
    assert blocked.json()["state"] == "blocked" and blocked.json()["blocked_reason"] == "spam"
    assert (
        await admin.post("/api/v1/numbers/+73832000001/block", json={"reason": " "})
    ).status_code == 422
    assert (await admin.post("/api/v1/numbers/+73832000001/unblock")).json()["state"] == "free"
    assert (await admin.post("/api/v1/numbers/+73832000001/unblock")).status_code == 409
    assert (await admin.post("/api/v1/numbers/+70000000000/unblock")).status_code == 404
    assert (await admin.post("/api/v1/numbers/+70000000000/release")).status_code == 404
    still_used = await admin.delete("/api/v1/cities/nsk")
    assert still_used.status_code == 409 and "sos_number_city_fkey" in still_used.json()["error"]
    assert (await admin.delete("/api/v1/numbers/+73832000001")).status_code == 204
    assert (await admin.delete("/api/v1/cities/nsk")).status_code == 204
    assert api.rows("SELECT city_id FROM intercom_panel") == [(None,)]


async def test_pool_input_is_checked_as_the_importer_checks_it(
    admin: httpx.AsyncClient, api: Api
) -> None:
    bad_zone = await admin.put("/api/v1/cities/nsk", json=CITY | {"time_zone": "Mars/Olympus"})
    assert list(fields(bad_zone)) == ["time_zone"]
    no_city = await admin.put(
        "/api/v1/numbers/+73832000001", json={"number": "+73832000001", "city_id": "nsk"}
    )
    assert no_city.status_code == 409 and list(fields(no_city)) == ["city_id"]
    not_e164 = await admin.put(
        "/api/v1/numbers/83832000001", json={"number": "83832000001", "city_id": "nsk"}
    )
    assert list(fields(not_e164)) == ["number"]
    document = {
        "cities": [CITY],
        "numbers": [
            {"number": "+73832000001", "city_id": "nsk"},
            {"number": "+7383", "city_id": "nsk"},
        ],
    }
    refused = await admin.post("/api/v1/sos/import", json=document)
    assert refused.status_code == 422 and list(fields(refused)) == ["numbers.1.number"]
    assert api.rows("SELECT count(*) FROM sos_city") == [(0,)]
    document["numbers"] = document["numbers"][:1]
    done = await admin.post("/api/v1/sos/import", json=document)
    assert done.json()["changes"]["numbers"]["added"] == ["+73832000001"]


async def test_a_value_postgresql_cannot_store_is_422_not_500(admin: httpx.AsyncClient) -> None:
    nul = await admin.put("/api/v1/queues/q", json={"queue_id": "q", "name": "a\u0000b"})
    assert nul.status_code == 422
    assert "NUL" in nul.json()["error"]
    blank = await admin.put("/api/v1/routes/ ", json={"name": " ", "action": "next"})
    assert blank.status_code == 422 and "route_name_not_blank" in blank.json()["error"]


# Live views: the ACD supervisor API and Kamailio.


class AcdStandIn:
    """A small aiohttp server answering as the ACD supervisor API does."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, bytes]] = []

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.method, request.raw_path, body))
        if request.path == "/acd/queues":
            return web.json_response({"queues": [{"queue_id": "support", "waiters": []}]})
        if request.path == "/acd/waiters/w1/priority":
            if b'"priority"' not in body:
                return web.json_response(
                    {
                        "error": "invalid request",
                        "fields": [{"field": "priority", "message": "Field required"}],
                    },
                    status=400,
                )
            return web.json_response({"status": "done"})
        if request.path == "/acd/agents/a1/status":
            return web.json_response({"error": "agent a1 is ringing"}, status=409)
        return web.json_response({"error": f"no waiting caller {request.path}"}, status=404)


@pytest.fixture
async def acd_stand_in(
    migrated_database: DatabaseSettings,
) -> AsyncIterator[tuple[Api, AcdStandIn]]:
    stand_in = AcdStandIn()
    runner = web.AppRunner(stand_in.application())
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    settings = admin_settings(migrated_database, acd=AcdSettings(api_port=port))
    try:
        yield Api(build(settings), settings), stand_in
    finally:
        await runner.cleanup()


async def test_acd_views_and_actions_pass_through_with_their_status_and_body(
    acd_stand_in: tuple[Api, AcdStandIn],
) -> None:
    api, stand_in = acd_stand_in
    async with api.client(api.token("read_only")) as reader:
        queues = await reader.get("/api/v1/acd/queues")
        assert queues.status_code == 200
        assert queues.json() == {"queues": [{"queue_id": "support", "waiters": []}]}
        assert (await reader.get("/api/v1/acd/callers/+7 913")).status_code == 404
    async with api.client(api.token("supervisor")) as supervisor:
        done = await supervisor.post("/api/v1/acd/waiters/w1/priority", json={"priority": 7})
        assert (done.status_code, done.json()) == (200, {"status": "done"})
        refused = await supervisor.post("/api/v1/acd/waiters/w1/priority", json={})
        assert refused.status_code == 400
        assert refused.json()["fields"] == [{"field": "priority", "message": "Field required"}]
        conflict = await supervisor.post("/api/v1/acd/agents/a1/status", json={"action": "pause"})
        assert (conflict.status_code, conflict.json()) == (409, {"error": "agent a1 is ringing"})
        gone = await supervisor.delete("/api/v1/acd/waiters/w9")
        assert gone.status_code == 404
    assert [(m, p) for m, p, _ in stand_in.seen] == [
        ("GET", "/acd/queues"),
        ("GET", "/acd/callers/%2B7%20913"),
        ("POST", "/acd/waiters/w1/priority"),
        ("POST", "/acd/waiters/w1/priority"),
        ("POST", "/acd/agents/a1/status"),
        ("DELETE", "/acd/waiters/w9"),
    ]
    assert stand_in.seen[2][2] == b'{"priority":7}'


async def test_acd_app_not_answering_is_503(api: Api) -> None:
    async with api.client(api.token("supervisor")) as supervisor:
        for method, path in [
            ("GET", "/api/v1/acd/queues"),
            ("GET", "/api/v1/acd/kpi"),
            ("POST", "/api/v1/acd/waiters/w1/move"),
            ("DELETE", "/api/v1/acd/waiters/w1"),
        ]:
            answer = await supervisor.request(method, path)
            assert answer.status_code == 503, (method, path)
            assert "the ACD app does not answer" in answer.json()["error"]
    switched_off = admin_settings(api.settings.database, acd=AcdSettings(api_port=0))
    off = Api(build(switched_off), switched_off)
    async with off.client(off.token("read_only")) as reader:
        answer = await reader.get("/api/v1/acd/agents")
        assert answer.status_code == 503 and "switched off" in answer.json()["error"]


async def test_kamailio_not_answering_is_503(api: Api) -> None:
    async with api.client(api.token("read_only")) as reader:
        for path in (
            "/api/v1/calls",
            "/api/v1/kamailio/status",
            "/api/v1/subscribers/1001/contacts",
        ):
            answer = await reader.get(path)
            assert answer.status_code == 503, path
            assert answer.json()["error"].startswith("Kamailio does not answer")


async def test_kamailio_views_read_its_json_rpc_answers(
    migrated_database: DatabaseSettings,
) -> None:
    answers: dict[str, Any] = {
        "dlg.list": [
            {
                "call-id": "c1",
                "from_uri": "sip:1001@x",
                "to_uri": "sip:1002@x",
                "state": 4,
                "h_entry": 1,
            }
        ],
        "ul.lookup": {"AoR": "1001", "Contacts": [{"Contact": {"Address": "sip:1001@10.0.0.5"}}]},
        "core.version": "kamailio 6.1.5 (x86_64/linux)",
        "core.uptime": {
            "now": "Sun Nov 22 10:00:00 2026",
            "up_since": "Sun Nov 22 09:00:00 2026",
            "uptime": 3600,
        },
    }
    tokens: set[str] = set()

    async def rpc(request: web.Request) -> web.Response:
        tokens.add(request.headers["Authorization"])
        body = await request.json()
        return web.json_response({"jsonrpc": "2.0", "result": answers[body["method"]], "id": 1})

    app = web.Application()
    app.router.add_post("/RPC", rpc)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_tcp_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    kamailio = KamailioSettings(
        jsonrpc_url=f"http://127.0.0.1:{port}/RPC", jsonrpc_token=SecretStr("kamailio-token")
    )
    settings = admin_settings(migrated_database, kamailio=kamailio)
    api = Api(build(settings), settings)
    try:
        async with api.client(api.token("read_only")) as reader:
            calls = (await reader.get("/api/v1/calls")).json()
            assert calls == [
                {
                    "call_id": "c1",
                    "from_uri": "sip:1001@x",
                    "to_uri": "sip:1002@x",
                    "state": "CONFIRMED",
                }
            ]
            contacts = (await reader.get("/api/v1/subscribers/1001/contacts")).json()
            assert contacts == {"username": "1001", "contacts": ["sip:1001@10.0.0.5"]}
            status = (await reader.get("/api/v1/kamailio/status")).json()
            assert status == {
                "version": "kamailio 6.1.5 (x86_64/linux)",
                "uptime_seconds": 3600,
                "up_since": "Sun Nov 22 09:00:00 2026",
            }
            assert (await reader.get("/api/v1/subscribers/a@b/contacts")).status_code == 422
    finally:
        await runner.cleanup()
    assert tokens == {"Bearer kamailio-token"}


async def test_metrics_count_requests_by_route_template(admin: httpx.AsyncClient) -> None:
    await admin.get("/api/v1/routes/nothing-here")
    metrics = (await admin.get("/metrics")).text
    assert (
        'softswitch_admin_requests_total{method="GET",route="/api/v1/routes/{name:path}",status="404"}'
        in metrics
    )
    assert "nothing-here" not in metrics
