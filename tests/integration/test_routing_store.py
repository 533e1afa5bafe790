"""Routes in a real PostgreSQL: import/export, live reload on SQL edits, database outages."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from routing.engine import decide
from routing.models import CallRequest
from routing.store import RouteLoader, apply_import, export_specs, parse_route_file, spec_to_json
from softswitch import db
from softswitch.settings import DatabaseSettings
from tests.integration.conftest import PrivatePostgres, softswitch_cli

pytestmark = pytest.mark.integration
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
ROUTES: list[dict[str, Any]] = [
    {
        "name": "8 to 7",
        "group": "PSTN",
        "priority": 10,
        "match": {"callee": r"^8(\d{10})$"},
        "rewrite": {"callee": r"7\1"},
        "action": "next",
        "flags": ["record"],
    },
    {
        "name": "Mobile",
        "priority": 20,
        "match": {"callee": r"^79\d{9}$"},
        "action": "relay",
        "destinations": ["sip:gw1:5060", "sip:gw2:5060"],
        "parallel": True,
    },
    {
        "name": "Queue",
        "priority": 30,
        "match": {"callee": "^100$"},
        "action": "app",
        "app": "acd",
        "app_args": ["7"],
        "schedule": {
            "timezone": "Europe/Moscow",
            "windows": [{"days": ["mon", "fri"], "start": "09:00", "end": "18:00"}],
        },
    },
    {
        "name": "Barred",
        "priority": 40,
        "match": {"callee": "^0"},
        "action": "reject",
        "reject": {"code": 403, "reason": "Barred"},
    },
]


def import_routes(url: str, routes: list[dict[str, Any]], *, replace: bool = False) -> None:
    specs, errors = parse_route_file(json.dumps(routes))
    assert errors == []
    with psycopg.connect(url) as conn:
        apply_import(conn, specs, replace=replace)


def exported(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        return [spec_to_json(spec) for spec in export_specs(conn)]


def test_export_then_import_is_a_no_op(migrated_database: DatabaseSettings) -> None:
    import_routes(migrated_database.url, ROUTES)
    first = exported(migrated_database.url)
    with psycopg.connect(migrated_database.url) as conn:
        before = conn.execute("SELECT id, updated_at FROM route ORDER BY id").fetchall()
    import_routes(migrated_database.url, first, replace=True)
    assert exported(migrated_database.url) == first
    with psycopg.connect(migrated_database.url) as conn:
        assert conn.execute("SELECT id, updated_at FROM route ORDER BY id").fetchall() == before
    assert [r["name"] for r in first] == ["8 to 7", "Mobile", "Queue", "Barred"]
    assert first[2]["schedule"]["windows"][0]["start"] == "09:00:00"


def test_replace_removes_routes_missing_from_the_file(migrated_database: DatabaseSettings) -> None:
    import_routes(migrated_database.url, ROUTES)
    import_routes(migrated_database.url, ROUTES[:1], replace=True)
    assert [r["name"] for r in exported(migrated_database.url)] == ["8 to 7"]


def test_import_reports_every_bad_route_and_writes_nothing(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    bad = [
        *ROUTES,
        {"name": "broken", "match": {"callee": "^(1"}, "action": "next"},
        {"name": "no destinations", "action": "relay"},
    ]
    route_file = tmp_path / "routes.json"
    route_file.write_text(json.dumps(bad))
    result = softswitch_cli(migrated_database, "routes", "import", str(route_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: route #4 'broken': match.callee: RE2 cannot compile '^(1': missing ): ^(1",
        "error: route #5 'no destinations': route: relay needs at least one destination",
        "2 error(s); nothing imported",
    ]
    assert exported(migrated_database.url) == []


def test_dry_run_prints_the_diff_and_writes_nothing(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    import_routes(migrated_database.url, ROUTES[:2])
    changed = [{**ROUTES[1], "parallel": False}, ROUTES[2]]
    route_file = tmp_path / "routes.json"
    route_file.write_text(json.dumps(changed))
    result = softswitch_cli(
        migrated_database, "routes", "import", "--dry-run", "--replace", str(route_file)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "+ Queue",
        "~ Mobile",
        "- 8 to 7",
        "would change: 1 added, 1 changed, 1 removed, 0 unchanged",
    ]
    assert [r["name"] for r in exported(migrated_database.url)] == ["8 to 7", "Mobile"]


def test_routes_test_decides_like_the_service(migrated_database: DatabaseSettings) -> None:
    import_routes(migrated_database.url, ROUTES)
    result = softswitch_cli(
        migrated_database, "routes", "test", "--caller", "4951110000", "--callee",
        "89161234567", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "route": "Mobile",
        "chain": ["8 to 7", "Mobile"],
        "action": "relay",
        "caller": "4951110000",
        "callee": "79161234567",
        "destinations": ["sip:79161234567@gw1:5060", "sip:79161234567@gw2:5060"],
        "parallel": True,
        "app": None,
        "app_args": [],
        "reject": None,
        "flags": ["record"],
    }
    closed = softswitch_cli(
        migrated_database, "routes", "test", "--caller", "1", "--callee", "100",
        "--at", "2026-11-24T20:00:00+03:00", "--json",
    )  # fmt: skip
    assert json.loads(closed.stdout)["reject"] == {"code": 404, "reason": "Not Found"}
    opened = softswitch_cli(
        migrated_database, "routes", "test", "--caller", "1", "--callee", "100",
        "--at", "2026-11-23T10:00:00+03:00", "--json",
    )  # fmt: skip
    assert json.loads(opened.stdout)["app"] == "acd"
    untrusted = softswitch_cli(
        migrated_database, "routes", "test", "--caller", "4951110000", "--callee",
        "89161234567", "--untrusted", "--json",
    )  # fmt: skip
    assert json.loads(untrusted.stdout)["reject"] == {"code": 403, "reason": "Relaying Denied"}


def test_a_database_refusal_midway_rolls_back_the_whole_import(
    migrated_database: DatabaseSettings,
) -> None:
    import_routes(migrated_database.url, ROUTES[:1])
    with psycopg.connect(migrated_database.url) as conn:
        # A constraint an admin added by hand, that the importer cannot know about.
        conn.execute("ALTER TABLE route ADD CONSTRAINT no_queues CHECK (action <> 'app')")
    specs, _ = parse_route_file(json.dumps(ROUTES))
    with (
        psycopg.connect(migrated_database.url) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        apply_import(conn, specs, replace=True)
    assert [r["name"] for r in exported(migrated_database.url)] == ["8 to 7"]


@pytest.fixture
async def loader_for(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Any]:
    tasks: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(url: str) -> RouteLoader:
        loader = RouteLoader(url, debounce_seconds=0.01, health_interval_seconds=0.3)
        stop = asyncio.Event()
        tasks.append((stop, asyncio.create_task(loader.run(stop))))
        return loader

    yield start
    for stop, task in tasks:
        stop.set()
        await asyncio.wait_for(task, 10)


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def route_of(loader: RouteLoader, callee: str) -> str | None:
    return decide(CallRequest(callee=callee), loader.table, MONDAY_NOON).route


async def test_hand_written_sql_takes_effect_through_notify(
    migrated_database: DatabaseSettings, loader_for: Any
) -> None:
    import_routes(migrated_database.url, ROUTES)
    loader = loader_for(migrated_database.url)
    await asyncio.wait_for(loader.loaded.wait(), 5)
    assert route_of(loader, "79161234567") == "Mobile"
    version = loader.table.version
    async with await psycopg.AsyncConnection.connect(migrated_database.url) as conn:
        await conn.execute(
            "INSERT INTO route (name, priority, callee_mask, action, reject_code, reject_reason)"
            " VALUES ('Block 7916', 15, '^7916', 'reject', 486, 'Busy Here')"
        )
        await conn.commit()
    await eventually(lambda: loader.table.version > version)
    assert route_of(loader, "79161234567") == "Block 7916"
    assert route_of(loader, "79261234567") == "Mobile"


async def test_a_bad_row_is_skipped_recorded_and_never_stops_the_load(
    migrated_database: DatabaseSettings, loader_for: Any
) -> None:
    import_routes(migrated_database.url, ROUTES)
    with psycopg.connect(migrated_database.url) as conn:
        conn.execute("UPDATE route SET callee_mask = '^79(\\d' WHERE name = 'Mobile'")
    loader = loader_for(migrated_database.url)
    await asyncio.wait_for(loader.loaded.wait(), 5)
    assert [r.spec.name for r in loader.table.routes] == ["8 to 7", "Queue", "Barred"]
    with psycopg.connect(migrated_database.url) as conn:
        errors = conn.execute("SELECT route_name, reason FROM route_load_error").fetchall()
    assert errors == [("Mobile", r"match.callee: RE2 cannot compile '^79(\d': missing ): ^79(\d")]


async def test_database_down_keeps_the_last_table_and_recovers(
    private_postgres: PrivatePostgres, loader_for: Any
) -> None:
    database = DatabaseSettings(url=private_postgres.url)
    db.upgrade(database)
    import_routes(database.url, ROUTES)
    loader = loader_for(database.url)
    await asyncio.wait_for(loader.loaded.wait(), 5)
    served = loader.table

    await asyncio.to_thread(private_postgres.stop)
    await asyncio.sleep(1.0)  # health checks fail, reconnects are refused
    assert loader.table is served
    assert route_of(loader, "89161234567") == "Mobile"

    await asyncio.to_thread(private_postgres.start)
    await eventually(lambda: loader.table.version > served.version, timeout=15)
    import_routes(
        database.url,
        [
            *ROUTES,
            {
                "name": "New",
                "priority": 1,
                "action": "reject",
                "match": {"callee": "^555$"},
                "reject": {"code": 404, "reason": "Gone"},
            },
        ],
    )
    await eventually(lambda: route_of(loader, "555") == "New")


def test_route_file_example_in_docs_imports(migrated_database: DatabaseSettings) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "routes.example.json").read_text()
    specs, errors = parse_route_file(text)
    assert errors == [] and specs
