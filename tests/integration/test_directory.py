"""The flat directory for real: PostgreSQL (lookups, import/export, connection loss), a CRM
and a push gateway served by local aiohttp servers that answer, stall or are not there."""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from softswitch import db
from softswitch.directory.crm import DatabaseDirectory, FallbackDirectory, HttpCrmDirectory
from softswitch.directory.models import Flat, FlatDevice, FlatLookup, Panel
from softswitch.directory.push import PushFlat, PushGateway, PushRequest
from softswitch.directory.store import (
    DirectoryFile,
    DirectoryPlan,
    apply_directory_import,
    export_directory,
    lookup_flat,
    parse_directory_file,
)
from softswitch.settings import DatabaseSettings
from tests.conftest import free_tcp_port
from tests.integration.conftest import PrivatePostgres, softswitch_cli

pytestmark = pytest.mark.integration

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "docs" / "directory.example.json").read_text()
)
ENTRANCE_2 = Panel.model_validate(EXAMPLE["panels"][1])
FLAT_52 = Flat.model_validate(EXAMPLE["flats"][1])


def import_directory(url: str, document: dict[str, Any], *, replace: bool = False) -> DirectoryPlan:
    directory, errors = parse_directory_file(json.dumps(document))
    assert errors == []
    with psycopg.connect(url) as conn:
        return apply_directory_import(conn, directory, replace=replace)


def exported(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        return export_directory(conn)


@pytest.fixture
def directory_database(migrated_database: DatabaseSettings) -> DatabaseSettings:
    """A migrated database holding docs/directory.example.json."""
    import_directory(migrated_database.url, EXAMPLE)
    return migrated_database


async def lookup(url: str, panel_account: str, dialled: str) -> FlatLookup:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await lookup_flat(conn, panel_account, dialled)


async def test_a_panel_call_finds_the_flat_and_its_devices_in_order(
    directory_database: DatabaseSettings,
) -> None:
    found = await lookup(directory_database.url, "door-lenina5-2", "12")
    assert found == FlatLookup(panel=ENTRANCE_2, flat=FLAT_52, source="database")
    assert [d.target for d in FLAT_52.devices] == [
        "1052", "+79161234567", "sip:concierge@pbx.example",
    ]  # fmt: skip
    first_entrance = await lookup(directory_database.url, "door-lenina5-1", "012")
    assert first_entrance.flat is not None
    assert first_entrance.flat.number == "12"


async def test_a_flat_without_devices_is_found_with_none(
    directory_database: DatabaseSettings,
) -> None:
    found = await lookup(directory_database.url, "door-lenina5-2", "13")
    assert found.flat == Flat(building="lenina-5", number="53", devices=())


async def test_an_account_that_is_no_panel_finds_nothing(
    directory_database: DatabaseSettings,
) -> None:
    assert await lookup(directory_database.url, "1052", "12") == FlatLookup(
        panel=None, flat=None, source="database"
    )


@pytest.mark.parametrize(
    "dialled",
    [
        "41",  # flat 81: beyond the panel's range
        "0",  # flat 40: a flat of the other entrance
        "*12",
        "9" * 30,  # beyond a bigint
        "",
    ],
)
async def test_a_keypad_entry_outside_the_panels_range_is_no_flat(
    directory_database: DatabaseSettings, dialled: str
) -> None:
    found = await lookup(directory_database.url, "door-lenina5-2", dialled)
    assert (found.panel, found.flat) == (ENTRANCE_2, None)


async def test_a_flat_in_range_without_a_row_is_no_flat(
    directory_database: DatabaseSettings,
) -> None:
    found = await lookup(directory_database.url, "door-lenina5-1", "13")
    assert found.panel is not None
    assert found.flat is None


def test_export_then_import_is_a_no_op(directory_database: DatabaseSettings) -> None:
    url = directory_database.url
    first = exported(url)
    assert first == EXAMPLE
    with psycopg.connect(url) as conn:
        device_ids = conn.execute("SELECT id FROM flat_device ORDER BY id").fetchall()
    plan = import_directory(url, first)
    assert plan.panels.unchanged == ["lenina-5-entrance-1", "lenina-5-entrance-2"]
    assert len(plan.flats.unchanged) == 3
    assert plan.panels.added + plan.panels.changed + plan.flats.added + plan.flats.changed == []
    assert exported(url) == first
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT id FROM flat_device ORDER BY id").fetchall() == device_ids


def test_import_upserts_by_key(directory_database: DatabaseSettings) -> None:
    url = directory_database.url
    flat_12 = EXAMPLE["flats"][0] | {"devices": EXAMPLE["flats"][0]["devices"][::-1]}
    panel = EXAMPLE["panels"][0] | {"address": "Lenina 5, main door"}
    new_flat = {"building": "lenina-5", "number": "7", "devices": [{"kind": "sip", "target": "7"}]}
    plan = import_directory(url, {"panels": [panel], "flats": [flat_12, new_flat]})
    assert (plan.panels.changed, plan.flats.changed) == (
        ["lenina-5-entrance-1"], [("lenina-5", "12")],
    )  # fmt: skip
    assert plan.flats.added == [("lenina-5", "7")]
    after = exported(url)
    assert after["panels"][0]["address"] == "Lenina 5, main door"
    assert len(after["panels"]) == 2  # not replaced
    assert [f["number"] for f in after["flats"]] == ["7", "12", "52", "53"]
    assert after["flats"][1]["devices"] == flat_12["devices"]


def test_replace_deletes_what_the_file_does_not_mention(
    directory_database: DatabaseSettings,
) -> None:
    url = directory_database.url
    plan = import_directory(
        url, {"panels": EXAMPLE["panels"][:1], "flats": EXAMPLE["flats"][:1]}, replace=True
    )
    assert plan.panels.removed == ["lenina-5-entrance-2"]
    assert plan.flats.removed == [("lenina-5", "52"), ("lenina-5", "53")]
    assert exported(url) == {"panels": EXAMPLE["panels"][:1], "flats": EXAMPLE["flats"][:1]}
    with psycopg.connect(url) as conn:
        # The removed flat's devices went with it (ON DELETE CASCADE).
        assert conn.execute("SELECT count(*) FROM flat_device").fetchone() == (2,)


def test_an_account_can_move_between_panels_in_one_import(
    directory_database: DatabaseSettings,
) -> None:
    first, second = EXAMPLE["panels"]
    swapped = [first | {"account": second["account"]}, second | {"account": first["account"]}]
    import_directory(directory_database.url, {"panels": swapped})
    assert exported(directory_database.url)["panels"] == swapped


def test_an_import_postgresql_refuses_changes_nothing(
    directory_database: DatabaseSettings,
) -> None:
    url = directory_database.url
    before = exported(url)
    # Valid on its own, but the account belongs to a panel the file does not mention.
    taken = EXAMPLE["panels"][1] | {"panel_id": "new-panel"}
    new_flat = {"building": "lenina-5", "number": "1", "devices": []}
    directory, errors = parse_directory_file(json.dumps({"panels": [taken], "flats": [new_flat]}))
    assert errors == []
    with (
        psycopg.connect(url) as conn,
        pytest.raises(psycopg.errors.UniqueViolation) as refused,
    ):
        apply_directory_import(conn, directory, replace=False)
    assert refused.value.diag.constraint_name == "intercom_panel_account_unique"
    assert exported(url) == before


def test_a_bad_record_late_in_the_file_leaves_the_database_unchanged(
    directory_database: DatabaseSettings,
) -> None:
    url = directory_database.url
    before = exported(url)
    # Built past the file checks, so PostgreSQL's own constraint has to stop it.
    directory = DirectoryFile(
        panels=(ENTRANCE_2.model_copy(update={"address": "changed"}),),
        flats=(Flat(building="lenina-5", number="1"), Flat(building="lenina-5", number="012")),
    )
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.CheckViolation) as refused:
        apply_directory_import(conn, directory, replace=True)
    assert refused.value.diag.constraint_name == "flat_number_decimal"
    assert exported(url) == before


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO intercom_panel (panel_id, account, building) VALUES ('p', 'a@b', 'b')",
            "intercom_panel_account_shape",
        ),
        (
            "INSERT INTO intercom_panel (panel_id, account, building, flat_first, flat_last)"
            " VALUES ('p', 'a', 'b', 10, 5)",
            "intercom_panel_flat_range",
        ),
        (
            "INSERT INTO intercom_panel (panel_id, account, building) VALUES ('p', 'a', ' ')",
            "intercom_panel_building_not_blank",
        ),
        ("INSERT INTO flat (building, number) VALUES ('b', '12A')", "flat_number_decimal"),
        (
            "INSERT INTO flat_device (building, number, kind, target)"
            " VALUES ('lenina-5', '12', 'forward', 'pbx.example')",
            "flat_device_target_shape",
        ),
        (
            "INSERT INTO flat_device (building, number, kind, target)"
            " VALUES ('lenina-5', '12', 'mobile', 'anna@app')",
            "flat_device_target_shape",
        ),
        (
            "INSERT INTO flat_device (building, number, kind, target)"
            " VALUES ('lenina-5', '12', 'fax', '1')",
            "flat_device_kind_known",
        ),
        (
            "INSERT INTO flat_device (building, number, kind, target)"
            " VALUES ('lenina-5', '99', 'sip', '1')",
            "flat_device_flat_fkey",
        ),
        (
            "INSERT INTO flat_device (building, number, kind, target)"
            " VALUES ('lenina-5', '12', 'sip', '1012')",
            "flat_device_unique",
        ),
    ],
)
def test_the_tables_refuse_nonsense_written_in_sql(
    directory_database: DatabaseSettings, statement: str, constraint: str
) -> None:
    with (
        psycopg.connect(directory_database.url) as conn,
        pytest.raises(psycopg.errors.IntegrityError) as refused,
    ):
        conn.execute(statement)
    assert refused.value.diag.constraint_name == constraint


def test_an_update_in_sql_touches_updated_at(directory_database: DatabaseSettings) -> None:
    select = "SELECT panel_id, updated_at FROM intercom_panel"
    with psycopg.connect(directory_database.url, autocommit=True) as conn:
        before: dict[str, datetime] = dict(conn.execute(select).fetchall())
        conn.execute(
            "UPDATE intercom_panel SET address = 'x' WHERE panel_id = 'lenina-5-entrance-1'"
        )
        after: dict[str, datetime] = dict(conn.execute(select).fetchall())
    assert after["lenina-5-entrance-1"] > before["lenina-5-entrance-1"]
    assert after["lenina-5-entrance-2"] == before["lenina-5-entrance-2"]


def test_cli_import_reports_every_error_and_writes_nothing(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    bad = {
        "panels": [EXAMPLE["panels"][0] | {"flat_last": 0}],
        "flats": [*EXAMPLE["flats"], {"building": "lenina-5", "number": "08"}],
    }
    directory_file = tmp_path / "directory.json"
    directory_file.write_text(json.dumps(bad))
    result = softswitch_cli(migrated_database, "directory", "import", str(directory_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: panel #0 'lenina-5-entrance-1': flat_first: 1 is above flat_last 0",
        "error: flat #3 'lenina-5' '08': number: a decimal 0..999999 without leading zeros"
        " (a panel could never ring another spelling)",
        "2 error(s); nothing imported",
    ]
    assert exported(migrated_database.url) == {"panels": [], "flats": []}


def test_cli_dry_run_prints_the_diff_and_export_prints_the_file(
    directory_database: DatabaseSettings, tmp_path: Path
) -> None:
    changed = {
        "panels": [EXAMPLE["panels"][0] | {"flat_last": 39}],
        "flats": [{"building": "lenina-5", "number": "1"}, *EXAMPLE["flats"][:2]],
    }
    directory_file = tmp_path / "directory.json"
    directory_file.write_text(json.dumps(changed))
    result = softswitch_cli(
        directory_database, "directory", "import", "--dry-run", "--replace", str(directory_file)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "+ flat lenina-5 1",
        "~ panel lenina-5-entrance-1",
        "- panel lenina-5-entrance-2",
        "- flat lenina-5 53",
        "panels would change: 0 added, 1 changed, 1 removed, 0 unchanged",
        "flats would change: 1 added, 0 changed, 1 removed, 2 unchanged",
    ]
    export = softswitch_cli(directory_database, "directory", "export")
    assert export.returncode == 0, export.stderr
    assert json.loads(export.stdout) == EXAMPLE


def test_cli_import_names_the_record_postgresql_refuses(
    directory_database: DatabaseSettings, tmp_path: Path
) -> None:
    taken = {"panels": [EXAMPLE["panels"][1] | {"panel_id": "new-panel"}]}
    directory_file = tmp_path / "directory.json"
    directory_file.write_text(json.dumps(taken))
    result = softswitch_cli(directory_database, "directory", "import", str(directory_file))
    assert result.returncode == 1
    assert "(intercom_panel_account_unique)" in result.stderr
    assert "Key (account)=(door-lenina5-2) already exists" in result.stderr


async def test_database_directory_replaces_a_dropped_connection(
    directory_database: DatabaseSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with DatabaseDirectory(directory_database.url) as directory:
        assert (await directory.lookup_flat("door-lenina5-2", "12")).flat == FLAT_52
        with psycopg.connect(directory_database.url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert killed == (1,)
        with caplog.at_level(logging.WARNING, logger="softswitch.directory"):
            assert (await directory.lookup_flat("door-lenina5-2", "12")).flat == FLAT_52
    assert "directory database connection lost" in caplog.text


async def test_database_directory_raises_while_postgresql_is_down_and_recovers(
    private_postgres: PrivatePostgres,
) -> None:
    database = DatabaseSettings(url=private_postgres.url)
    db.upgrade(database)
    import_directory(database.url, EXAMPLE)
    async with DatabaseDirectory(database.url) as directory:
        assert (await directory.lookup_flat("door-lenina5-2", "12")).flat == FLAT_52
        private_postgres.stop()
        with pytest.raises(psycopg.OperationalError):
            await directory.lookup_flat("door-lenina5-2", "12")
        private_postgres.start()
        assert (await directory.lookup_flat("door-lenina5-2", "12")).flat == FLAT_52


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 whose answers a test sets; it records each request and
    holds its answers while ``release`` is clear."""

    def __init__(self) -> None:
        self.url = ""
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, bytes]] = []
        self.received = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.raw_path, await request.read()))
        self.received.set()
        await self.release.wait()
        status, body = self.answers.get(request.raw_path, (404, b""))
        return web.Response(status=status, body=body, content_type="application/json")


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    scripted = ScriptedServer()
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()  # port 0: a free one, no race
    scripted.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield scripted
    finally:
        scripted.release.set()
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        yield http


CRM_ANSWER = {
    "panel": {"panel_id": "crm-7", "account": "door-lenina5-2", "building": "lenina-5"},
    "flat": {"building": "lenina-5", "number": "52", "devices": [{"kind": "sip", "target": "9"}]},
}
CRM_PATH = "/crm/panels/door-lenina5-2/flats/12"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_crm_answers_a_lookup(server: ScriptedServer, client: httpx.AsyncClient) -> None:
    server.answers[CRM_PATH] = (200, json.dumps(CRM_ANSWER).encode())
    crm = HttpCrmDirectory(f"{server.url}/crm/", 0.3, client)
    found = await crm.lookup_flat("door-lenina5-2", "12")
    assert found.source == "crm"
    assert found.panel == Panel(panel_id="crm-7", account="door-lenina5-2", building="lenina-5")
    assert found.flat == Flat(
        building="lenina-5", number="52", devices=(FlatDevice(kind="sip", target="9"),)
    )
    assert await crm.lookup_flat("door/../x", "1") == FlatLookup(
        panel=None, flat=None, source="crm"
    )
    assert server.requests[-1][0] == "/crm/panels/door%2F..%2Fx/flats/1"


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (None, "timeout"),  # the server holds its answer past the timeout
        ((200, b"<html>maintenance</html>"), "garbage"),
        ((503, b""), "error"),
    ],
)
async def test_a_failing_crm_falls_back_to_postgresql(
    directory_database: DatabaseSettings,
    server: ScriptedServer,
    client: httpx.AsyncClient,
    answer: tuple[int, bytes] | None,
    reason: str,
) -> None:
    if answer is None:
        server.release.clear()
    else:
        server.answers[CRM_PATH] = answer
    before = metric("softswitch_directory_fallbacks_total", reason=reason)
    async with DatabaseDirectory(directory_database.url) as database:
        directory = FallbackDirectory(HttpCrmDirectory(f"{server.url}/crm", 0.2, client), database)
        started = time.monotonic()
        found = await directory.lookup_flat("door-lenina5-2", "12")
    assert found == FlatLookup(panel=ENTRANCE_2, flat=FLAT_52, source="database")
    assert time.monotonic() - started < 1.0
    assert metric("softswitch_directory_fallbacks_total", reason=reason) == before + 1


async def test_a_crm_that_is_down_falls_back_to_postgresql(
    directory_database: DatabaseSettings, client: httpx.AsyncClient
) -> None:
    before = metric("softswitch_directory_fallbacks_total", reason="error")
    crm = HttpCrmDirectory(f"http://127.0.0.1:{free_tcp_port()}", 0.3, client)
    async with DatabaseDirectory(directory_database.url) as database:
        found = await FallbackDirectory(crm, database).lookup_flat("door-lenina5-2", "12")
    assert found.source == "database"
    assert found.flat == FLAT_52
    assert metric("softswitch_directory_fallbacks_total", reason="error") == before + 1


def test_cli_flat_prints_the_lookup_falling_back_from_a_crm_that_is_down(
    directory_database: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOFTSWITCH_DIRECTORY_CRM_URL", f"http://127.0.0.1:{free_tcp_port()}")
    result = softswitch_cli(directory_database, "directory", "flat", "door-lenina5-2", "12")
    assert result.returncode == 0, result.stderr
    assert FlatLookup.model_validate_json(result.stdout) == FlatLookup(
        panel=ENTRANCE_2, flat=FLAT_52, source="database"
    )
    assert "falls back (error)" in result.stderr


def push_for(call_id: str) -> PushRequest:
    return PushRequest(
        account="app-lenina5-12-anna",
        call_id=call_id,
        panel_id="lenina-5-entrance-1",
        flat=PushFlat(building="lenina-5", number="12"),
        caller_name="Lenina 5, entrance 1",
        ring_seconds=30,
        requested_at=datetime(2026, 11, 22, 10, 15, tzinfo=UTC),
    )


def pushes(outcome: str) -> float:
    return metric("softswitch_push_requests_total", outcome=outcome)


async def test_a_push_is_sent_in_the_background_with_its_json_body(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.answers["/push"] = (202, b"{}")
    server.release.clear()
    sent_before = pushes("sent")
    gateway = PushGateway(f"{server.url}/push", 2.0, client)
    gateway.request(push_for("call-1"))  # returns while the gateway holds its answer
    await asyncio.wait_for(server.received.wait(), 5)
    await asyncio.sleep(0.05)
    assert pushes("sent") == sent_before  # not answered yet
    server.release.set()
    await gateway.aclose()
    assert pushes("sent") == sent_before + 1
    assert [(path, json.loads(body)) for path, body in server.requests] == [
        (
            "/push",
            {
                "account": "app-lenina5-12-anna",
                "call_id": "call-1",
                "panel_id": "lenina-5-entrance-1",
                "flat": {"building": "lenina-5", "number": "12"},
                "caller_name": "Lenina 5, entrance 1",
                "ring_seconds": 30.0,
                "requested_at": "2026-11-22T10:15:00Z",
            },
        )
    ]


async def test_cancel_drops_a_queued_push_of_a_call_that_is_over(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.answers["/push"] = (200, b"")
    server.release.clear()
    cancelled_before = pushes("cancelled")
    gateway = PushGateway(f"{server.url}/push", 2.0, client, max_in_flight=1)
    gateway.request(push_for("call-a"))
    await asyncio.wait_for(server.received.wait(), 5)  # call-a holds the only slot
    gateway.request(push_for("call-b"))
    await asyncio.sleep(0.05)  # call-b waits for the slot
    assert gateway.cancel("call-b") == 1
    assert gateway.cancel("call-a") == 0  # on the wire already: cannot be taken back
    server.release.set()
    await gateway.aclose()
    assert [json.loads(body)["call_id"] for _, body in server.requests] == ["call-a"]
    assert pushes("cancelled") == cancelled_before + 1


@pytest.mark.parametrize(("answer", "outcome"), [((503, b"busy"), "rejected"), (None, "timeout")])
async def test_a_push_the_gateway_refuses_or_holds_is_counted(
    server: ScriptedServer,
    client: httpx.AsyncClient,
    answer: tuple[int, bytes] | None,
    outcome: str,
) -> None:
    if answer is None:
        server.release.clear()
    else:
        server.answers["/push"] = answer
    before = pushes(outcome)
    gateway = PushGateway(f"{server.url}/push", 0.2, client)
    gateway.request(push_for("call-1"))
    await gateway.aclose()
    assert pushes(outcome) == before + 1


async def test_a_push_gateway_that_is_down_is_counted_not_raised(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    before = pushes("error")
    gateway = PushGateway(f"http://127.0.0.1:{free_tcp_port()}/push", 2.0, client)
    with caplog.at_level(logging.WARNING, logger="softswitch.directory"):
        gateway.request(push_for("call-1"))
        await gateway.aclose()
    assert pushes("error") == before + 1
    assert "push for call call-1 to app-lenina5-12-anna failed: ConnectError" in caplog.text


async def test_close_waits_briefly_then_cancels_what_is_still_under_way(
    server: ScriptedServer, client: httpx.AsyncClient
) -> None:
    server.release.clear()
    cancelled_before = pushes("cancelled")
    gateway = PushGateway(f"{server.url}/push", 5.0, client, close_grace_seconds=0.2)
    gateway.request(push_for("call-1"))
    await asyncio.wait_for(server.received.wait(), 5)
    started = time.monotonic()
    await gateway.aclose()
    assert 0.15 < time.monotonic() - started < 1.0
    assert pushes("cancelled") == cancelled_before + 1
    with pytest.raises(RuntimeError, match="closed"):
        gateway.request(push_for("call-2"))
