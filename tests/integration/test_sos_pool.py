"""The 112 pool on a real PostgreSQL: concurrent leases, exhaustion, reservations and
callbacks, events committed with the lease, import/export and the CLI."""

import asyncio
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ari_apps.sos.app import refresh_pool_metrics
from softswitch.db import KeptConnection
from softswitch.events.models import EVENT_TYPES
from softswitch.settings import DatabaseSettings
from softswitch.sos.models import ExhaustionPolicy, LeaseOutcome, PoolNumber
from softswitch.sos.policy import choose_number
from softswitch.sos.store import (
    apply_sos_import,
    export_pool,
    lease_number,
    parse_sos_file,
    release_number,
    reservations,
)
from tests.integration.conftest import softswitch_cli

pytestmark = pytest.mark.integration

EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "docs" / "sos.example.json").read_text()
)
BERDSK, NSK = EXAMPLE["cities"]
# Many callers at once, within PostgreSQL's max_connections (100 here) and what other
# clients of the server use now.
MAX_CONNECTIONS = 80


def import_pool(url: str, document: dict[str, Any], *, replace: bool = False) -> None:
    pool, errors = parse_sos_file(json.dumps(document))
    assert errors == []
    with psycopg.connect(url) as conn:
        apply_sos_import(conn, pool, replace=replace)


def add_panels(url: str, count: int, city_id: str | None = "novosibirsk") -> list[str]:
    """``count`` panels of ``city_id``; returns their accounts (door-0, door-1, ...)."""
    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO intercom_panel (panel_id, account, building, address, city_id)"
            " VALUES (%s, %s, 'lenina-5', %s, %s)",
            [(f"p-{i}", f"door-{i}", f"Lenina 5, entrance {i}", city_id) for i in range(count)],
        )
    return [f"door-{i}" for i in range(count)]


def pool_of(size: int, policy: ExhaustionPolicy) -> dict[str, Any]:
    """Novosibirsk alone, with ``size`` numbers."""
    return {
        "cities": [NSK | {"exhaustion_policy": policy}],
        "numbers": [{"number": f"+7383300{i:04d}", "city_id": "novosibirsk"} for i in range(size)],
    }


async def lease(url: str, account: str, call_id: str, **kwargs: Any) -> LeaseOutcome:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await lease_number(conn, panel_account=account, call_id=call_id, **kwargs)


async def release(url: str, number: str, call_id: str | None) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await release_number(conn, number=number, call_id=call_id) is not None


def spare_connections(url: str) -> int:
    """Connections this test may open: up to MAX_CONNECTIONS, leaving 10 for others."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        ).fetchone()
    assert row is not None
    return max(10, min(MAX_CONNECTIONS, int(row[0]) - 10))


async def lease_concurrently(url: str, accounts: list[str]) -> list[LeaseOutcome]:
    """Every account leases once, on as many connections as can be had, all at once."""
    count = spare_connections(url)
    connections = [
        await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(count)
    ]
    start = asyncio.Event()

    async def caller(conn: psycopg.AsyncConnection[Any], mine: list[str]) -> list[LeaseOutcome]:
        await start.wait()
        return [
            await lease_number(conn, panel_account=account, call_id=f"call-{account}")
            for account in mine
        ]

    tasks = [
        asyncio.create_task(caller(conn, accounts[i::count])) for i, conn in enumerate(connections)
    ]
    await asyncio.sleep(0.05)
    start.set()
    outcomes = [outcome for done in await asyncio.gather(*tasks) for outcome in done]
    for conn in connections:
        await conn.close()
    return outcomes


def outbox(url: str) -> Counter[str]:
    with psycopg.connect(url) as conn:
        return Counter(key for (key,) in conn.execute("SELECT routing_key FROM event_outbox"))


@pytest.mark.parametrize(
    ("policy", "reserved_first", "pool_leases", "how"),
    [
        ("fallback", False, 50, "lru"),
        ("take_oldest", False, 50, "lru"),
        # Every number reserved for an earlier panel: take_oldest takes them over.
        ("take_oldest", True, 50, "taken_over"),
        ("fallback", True, 0, "lru"),
    ],
)
async def test_200_concurrent_leases_on_50_numbers_never_share_a_number(
    migrated_database: DatabaseSettings,
    policy: ExhaustionPolicy,
    reserved_first: bool,
    pool_leases: int,
    how: str,
) -> None:
    url = migrated_database.url
    import_pool(url, pool_of(50, policy))
    accounts = add_panels(url, 250)
    if reserved_first:
        for account in accounts[200:]:
            outcome = await lease(url, account, f"earlier-{account}")
            assert outcome.lease is not None
            assert await release(url, outcome.lease.number, f"earlier-{account}")
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM event_outbox")

    outcomes = await lease_concurrently(url, accounts[:200])

    leases = [o.lease for o in outcomes if o.lease is not None]
    assert len(leases) == 200
    pooled = [lease.number for lease in leases if lease.how != "fallback"]
    assert len(pooled) == len(set(pooled)) == pool_leases
    assert {lease.how for lease in leases if lease.how != "fallback"} <= {how}
    fallbacks = [o for o in outcomes if o.lease is not None and o.lease.how == "fallback"]
    assert len(fallbacks) == 200 - pool_leases
    assert {(o.reason, o.lease.number) for o in fallbacks if o.lease} <= {
        ("exhausted", NSK["fallback_number"])
    }
    with psycopg.connect(url) as conn:
        held = conn.execute(
            "SELECT count(*), count(DISTINCT panel_id) FROM sos_number WHERE state = 'leased'"
        ).fetchone()
        audited = conn.execute(
            "SELECT how, count(*) FROM sos_lease WHERE call_id LIKE 'call-%' GROUP BY how"
        ).fetchall()
    assert held == (pool_leases, pool_leases)
    assert sum(count for _, count in audited) == 200
    assert (
        outbox(url)
        == Counter({"sos.number.leased": 200, "sos.number.exhausted": 200 - pool_leases})
        - Counter()
    )


async def test_a_rolled_back_lease_leaves_no_number_audit_or_event(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_pool(url, pool_of(2, "take_oldest"))
    (account,) = add_panels(url, 1)
    async with await psycopg.AsyncConnection.connect(url) as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                outcome = await lease_number(conn, panel_account=account, call_id="call-1")
                assert outcome.reason == "leased"
                raise RuntimeError("the call app died before its commit")
    with psycopg.connect(url) as check:
        assert check.execute(
            "SELECT count(*) FROM sos_number WHERE state <> 'free'"
        ).fetchone() == (0,)
        assert check.execute("SELECT count(*) FROM sos_lease").fetchone() == (0,)
    assert outbox(url) == Counter()
    committed = await lease(url, account, "call-2")
    assert committed.lease is not None
    assert outbox(url) == Counter({"sos.number.leased": 1})


async def test_a_released_number_stays_with_its_panel_until_the_reservation_expires(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_pool(url, pool_of(2, "take_oldest"))
    first, second, third = add_panels(url, 3)
    a, b = "+73833000000", "+73833000001"

    async def number_of(account: str, call_id: str) -> tuple[str, str]:
        outcome = await lease(url, account, call_id)
        assert outcome.lease is not None
        return outcome.lease.number, outcome.lease.how

    assert await number_of(first, "c1") == (a, "lru")
    assert await release(url, a, "c1")
    assert not await release(url, a, "c1")  # a repeated release changes nothing
    assert await number_of(second, "c2") == (b, "lru")  # a is reserved for the first panel
    async with await psycopg.AsyncConnection.connect(url) as conn:
        held = await reservations(conn)
    assert {n: (r.panel_account, r.status) for n, r in held.items()} == {
        a: (first, "reserved"),
        b: (second, "leased"),
    }
    assert not await release(url, b, "c1")  # another call's lease is left alone
    assert await release(url, b, "c2")
    assert await number_of(first, "c3") == (a, "reused")  # the callback still reaches it
    assert await release(url, a, "c3")
    with psycopg.connect(url) as admin:
        admin.execute("UPDATE sos_number SET reserved_until = now() - interval '1 minute'")
        callback = admin.execute(
            "SELECT callback_valid_until - released_at FROM sos_lease WHERE call_id = 'c3'"
        ).fetchone()
    assert callback == (timedelta(minutes=NSK["reservation_minutes"]),)
    # Both reservations expired: b was released before a, so b is the least recently used.
    assert await number_of(third, "c4") == (b, "lru")
    assert await number_of(first, "c5") == (a, "lru")


async def test_a_lease_whose_release_never_came_is_reused_and_its_audit_closed(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_pool(url, pool_of(3, "take_oldest"))
    (account,) = add_panels(url, 1)
    first = await lease(url, account, "c1")
    again = await lease(url, account, "c2")
    assert first.lease is not None and again.lease is not None
    assert (again.lease.number, again.lease.how) == (first.lease.number, "reused")
    assert not await release(url, first.lease.number, "c1")  # c2 holds it now
    with psycopg.connect(url) as conn:
        audit = conn.execute(
            "SELECT call_id, released_at IS NOT NULL FROM sos_lease ORDER BY id"
        ).fetchall()
    assert audit == [("c1", True), ("c2", False)]


async def test_calls_without_a_pool_get_a_fallback_and_say_why(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_pool(url, {"cities": EXAMPLE["cities"]})  # cities without numbers
    add_panels(url, 1)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO intercom_panel (panel_id, account, building)"
            " VALUES ('lost', 'door-x', 'b')"
        )
    global_fallback = "+74950000000"
    cases = {
        "door-0": ("no_numbers", NSK["fallback_number"]),
        "door-x": ("no_city", global_fallback),
        "1001": ("unknown_panel", global_fallback),
    }
    for account, (reason, number) in cases.items():
        outcome = await lease(url, account, f"call-{account}", fallback_number=global_fallback)
        assert outcome.reason == reason
        assert outcome.lease is not None
        assert (outcome.lease.number, outcome.lease.how) == (number, "fallback")
    nothing = await lease(url, "1001", "call-none")
    assert (nothing.reason, nothing.lease) == ("unknown_panel", None)
    assert outbox(url) == Counter({"sos.number.exhausted": 4, "sos.number.leased": 3})


async def test_the_statements_write_complete_events_in_order(
    migrated_database: DatabaseSettings,
) -> None:
    """Lease and release fill in their events' fields in SQL: every payload must still be a
    valid event of its routing key, with the values of the outcome."""
    url = migrated_database.url
    import_pool(url, pool_of(1, "fallback"))
    first, second = add_panels(url, 2)
    leased = await lease(url, first, "c1")
    fallback = await lease(url, second, "c2")
    assert await release(url, "+73833000000", "c1")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT event_id, routing_key, payload FROM event_outbox ORDER BY id"
        ).fetchall()
    events = [EVENT_TYPES[key].model_validate(payload) for _, key, payload in rows]
    assert [event.event_id for event in events] == [event_id for event_id, _, _ in rows]
    assert [
        event.model_dump(exclude={"event_id", "occurred_at", "schema_version"}) for event in events
    ] == [
        {
            "type": "sos.number.leased",
            "city": "novosibirsk",
            "number": "+73833000000",
            "panel": "p-0",
            "how": "lru",
            "call_id": "c1",
            "sip_call_id": None,
            "channel_id": None,
            "bridge_id": None,
        },
        {
            "type": "sos.number.exhausted",
            "city": "novosibirsk",
            "panel": "p-1",
            "call_id": "c2",
            "sip_call_id": None,
            "channel_id": None,
            "bridge_id": None,
        },
        {
            "type": "sos.number.leased",
            "city": "novosibirsk",
            "number": NSK["fallback_number"],
            "panel": "p-1",
            "how": "fallback",
            "call_id": "c2",
            "sip_call_id": None,
            "channel_id": None,
            "bridge_id": None,
        },
        {
            "type": "sos.number.released",
            "city": "novosibirsk",
            "number": "+73833000000",
            "panel": "p-0",
            "held_seconds": events[3].held_seconds,
            "call_id": "c1",
            "sip_call_id": None,
            "channel_id": None,
            "bridge_id": None,
        },
    ]
    assert events[3].held_seconds >= 0
    assert leased.reason == "leased" and fallback.reason == "exhausted"


async def test_a_lease_carries_the_route_and_the_panels_location(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_pool(url, EXAMPLE)
    (account,) = add_panels(url, 1)
    outcome = await lease(url, account, "call-1")
    assert outcome.lease is not None
    assert outcome.lease.gateway_uri == NSK["gateway_uri"]
    assert outcome.lease.emergency_number == "112"
    assert outcome.lease.location is not None
    assert outcome.lease.location.fias_code == NSK["fias_code"]
    assert outcome.lease.location.address == "Lenina 5, entrance 0"


PANELS = ("p-0", "p-1", "p-2")
HOURS_AGO = st.none() | st.integers(1, 3)
# (state, holder, minutes the reservation has left or has been over, hours since last use)
number_states = st.one_of(
    st.tuples(st.just("free"), st.none(), st.none(), HOURS_AGO),
    st.tuples(st.just("free"), st.sampled_from(PANELS), st.sampled_from((-20, -5)), HOURS_AGO),
    st.tuples(st.just("free"), st.sampled_from(PANELS), st.sampled_from((5, 20)), HOURS_AGO),
    st.tuples(st.just("leased"), st.sampled_from(PANELS), st.none(), st.just(4)),
    st.tuples(st.just("blocked"), st.none(), st.none(), HOURS_AGO),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    states=st.lists(number_states, max_size=6),
    panel=st.sampled_from(PANELS),
    policy=st.sampled_from(("take_oldest", "fallback")),
)
def test_the_lease_statement_chooses_as_the_policy_does(
    migrated_database: DatabaseSettings,
    states: list[tuple[str, str | None, int | None, int | None]],
    panel: str,
    policy: ExhaustionPolicy,
) -> None:
    url = migrated_database.url
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE sos_number, sos_lease, event_outbox")
        conn.execute("DELETE FROM intercom_panel")
        conn.execute("DELETE FROM sos_city")
    import_pool(url, pool_of(0, policy))
    add_panels(url, len(PANELS))
    with psycopg.connect(url) as conn:
        now = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        before = [
            PoolNumber(
                number=f"+7383300{index:04d}",
                city_id="novosibirsk",
                state=state,  # type: ignore[arg-type]
                panel_id=holder,
                call_id="old-call" if state == "leased" else None,
                leased_at=now - timedelta(hours=5) if holder else None,
                reserved_until=now + timedelta(minutes=minutes) if minutes else None,
                last_used_at=now - timedelta(hours=hours) if hours else None,
                blocked_reason="revoked" if state == "blocked" else None,
            )
            for index, (state, holder, minutes, hours) in enumerate(states)
        ]
        conn.cursor().executemany(
            "INSERT INTO sos_number (number, city_id, state, panel_id, call_id, leased_at,"
            " reserved_until, last_used_at, blocked_reason, lease_how)"
            " VALUES (%(number)s, %(city_id)s, %(state)s, %(panel_id)s, %(call_id)s,"
            " %(leased_at)s, %(reserved_until)s, %(last_used_at)s, %(blocked_reason)s,"
            " CASE WHEN %(panel_id)s::text IS NULL THEN NULL ELSE 'lru' END)",
            [number.model_dump() for number in before],
        )
    outcome = asyncio.run(lease(url, f"door-{panel[-1]}", "call-new"))
    assert outcome.lease is not None
    expected, how = choose_number(
        before, panel_id=panel, now=outcome.lease.leased_at, policy=policy
    )
    assert (outcome.lease.number, outcome.lease.how) == (
        expected.number if expected else NSK["fallback_number"],
        how,
    )


def test_cli_import_export_usage_holders_block_release(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    database = migrated_database
    example = tmp_path / "sos.json"
    example.write_text(json.dumps(EXAMPLE))
    imported = softswitch_cli(database, "sos", "import", str(example))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.splitlines()[-2:] == [
        "cities changed: 2 added, 0 changed, 0 removed, 0 unchanged",
        "numbers changed: 5 added, 0 changed, 0 removed, 0 unchanged",
    ]
    exported = softswitch_cli(database, "sos", "export")
    assert json.loads(exported.stdout) == EXAMPLE
    (account,) = add_panels(database.url, 1)
    outcome = asyncio.run(lease(database.url, account, "call-1"))
    assert outcome.lease is not None
    number = outcome.lease.number

    usage = softswitch_cli(database, "sos", "usage").stdout.splitlines()
    assert usage[1:] == [
        "berdsk                    1        0      0       1",
        "novosibirsk               2        0      1       0",
    ]
    holders = softswitch_cli(database, "sos", "holders").stdout
    assert f"{number}     leased   p-0 (door-0)" in holders
    released = softswitch_cli(database, "sos", "release", number)
    assert released.returncode == 0, released.stderr
    assert "reserved for the panel until" in released.stdout
    assert softswitch_cli(database, "sos", "release", number).returncode == 1
    assert (
        f"{number}     reserved p-0 (door-0)" in softswitch_cli(database, "sos", "holders").stdout
    )

    blocked = softswitch_cli(database, "sos", "block", number, "--reason", "operator revoked")
    assert blocked.returncode == 0, blocked.stderr
    assert softswitch_cli(database, "sos", "holders").stdout.count("\n") == 1  # header only
    assert softswitch_cli(database, "sos", "unblock", number).returncode == 0
    assert softswitch_cli(database, "sos", "unblock", number).returncode == 1
    assert softswitch_cli(database, "sos", "block", "+70000000000", "--reason", "x").returncode == 1


def test_cli_import_names_record_and_field_and_writes_nothing(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    bad = {
        "cities": [
            NSK | {"fias_code": "8DEA00E3", "time_zone": "Asia/Atlantis"},
            BERDSK | {"reservation_minutes": 0},
        ],
        "numbers": [
            {"number": "83832000001", "city_id": "novosibirsk"},
            {"number": "+73832000002", "city_id": "novosibirsk", "blocked_reason": " "},
        ],
    }
    pool_file = tmp_path / "sos.json"
    pool_file.write_text(json.dumps(bad))
    result = softswitch_cli(migrated_database, "sos", "import", str(pool_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: city #0 'novosibirsk': fias_code: a FIAS/GAR GUID, lowercase hex 8-4-4-4-12",
        "error: city #0 'novosibirsk': time_zone: an IANA time zone name such as Asia/Novosibirsk",
        "error: city #1 'berdsk': reservation_minutes: Input should be greater than or equal to 1",
        "error: number #0 '83832000001': number: an E.164 number such as +73832000001",
        "error: number #1 '+73832000002': blocked_reason: must not be blank"
        " (leave it out for a usable number)",
        "5 error(s); nothing imported",
    ]
    unknown_city = tmp_path / "numbers.json"
    unknown_city.write_text(json.dumps({"numbers": [{"number": "+73832000001", "city_id": "x"}]}))
    result = softswitch_cli(migrated_database, "sos", "import", str(unknown_city))
    assert result.stderr.splitlines()[0] == (
        "error: number #0 '+73832000001': city_id: no city 'x' in the file or the database"
    )
    with psycopg.connect(migrated_database.url) as conn:
        assert export_pool(conn) == {"cities": [], "numbers": []}


def test_replace_removes_numbers_and_cities_and_unlinks_panels(
    migrated_database: DatabaseSettings,
) -> None:
    url = migrated_database.url
    import_pool(url, EXAMPLE)
    add_panels(url, 1, city_id="berdsk")
    nsk_only = {
        "cities": [NSK],
        "numbers": [n for n in EXAMPLE["numbers"] if n["city_id"] == "novosibirsk"],
    }
    import_pool(url, nsk_only, replace=True)
    with psycopg.connect(url) as conn:
        assert export_pool(conn) == nsk_only
        assert conn.execute("SELECT city_id FROM intercom_panel").fetchone() == (None,)


def test_directory_import_refuses_an_unknown_city_by_name(
    migrated_database: DatabaseSettings, tmp_path: Path
) -> None:
    import_pool(migrated_database.url, EXAMPLE)
    panel = {"panel_id": "p-1", "account": "door-1", "building": "b"}
    directory_file = tmp_path / "directory.json"
    directory_file.write_text(
        json.dumps({"panels": [panel | {"city_id": "novosibirsk"}, panel | {
            "panel_id": "p-2", "account": "door-2", "city_id": "atlantis"}]})
    )  # fmt: skip
    result = softswitch_cli(migrated_database, "directory", "import", str(directory_file))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: panel #1 'p-2': city_id: no city 'atlantis' in the 112 pool"
        " (`softswitch sos import` adds cities)",
        "1 error(s); nothing imported",
    ]
    directory_file.write_text(json.dumps({"panels": [panel | {"city_id": "novosibirsk"}]}))
    assert (
        softswitch_cli(migrated_database, "directory", "import", str(directory_file)).returncode
        == 0
    )
    exported = json.loads(softswitch_cli(migrated_database, "directory", "export").stdout)
    assert exported["panels"][0]["city_id"] == "novosibirsk"


async def test_the_ari_process_keeps_the_pool_usage_gauges_current(
    migrated_database: DatabaseSettings,
) -> None:
    """The sos app's background refreshes softswitch_sos_pool_numbers until stopped."""
    url = migrated_database.url
    import_pool(url, pool_of(3, "take_oldest"))
    [panel] = add_panels(url, 1)
    outcome = await lease(url, panel, "g1")
    assert outcome.lease is not None
    stop = asyncio.Event()
    async with KeptConnection(url) as database:
        refreshing = asyncio.create_task(refresh_pool_metrics(database, None, stop))  # type: ignore[arg-type]

        def gauge(status: str) -> float | None:
            return REGISTRY.get_sample_value(
                "softswitch_sos_pool_numbers", {"city": "novosibirsk", "status": status}
            )

        async with asyncio.timeout(5):
            while gauge("leased") != 1:
                await asyncio.sleep(0.05)
        assert gauge("free") == 2
        stop.set()
        await asyncio.wait_for(refreshing, 2)
