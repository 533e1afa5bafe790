"""The only SQL of the 112 pool: leasing and releasing numbers, the callback snapshot, the
admin operations and JSON import/export of cities and numbers.

A lease is one UPDATE whose target is picked by a sub-select with FOR UPDATE SKIP LOCKED:
concurrent emergency calls of one city each lock a different row and never wait for each
other, where a city-wide lock would queue them. The sub-selects follow
``softswitch.sos.policy.choose_number`` (a property test holds them together). The lease,
its audit row and its events are one statement (one round trip): they commit together or not
at all.

The import works like `directory import`: the whole file is checked first (every error names
its record and field), then written in one transaction, upserting by key; ``replace`` also
deletes what the file does not mention.
"""

from __future__ import annotations

import logging
import re
import time
import zoneinfo
from dataclasses import dataclass
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge, Histogram
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict

from softswitch.directory.store import (
    KeyedDiff,
    diff_by_key,
    parse_document,
    parse_records,
    reused_keys,
)
from softswitch.events.models import (
    SosNumberLeased,
    SosNumberReleased,
    SosPoolExhausted,
)
from softswitch.events.outbox import templated_event, templated_outbox_row
from softswitch.sos.models import (
    City,
    CityUsage,
    Lease,
    LeaseOutcome,
    LeaseReason,
    NumberEntry,
    PanelLocation,
    PoolNumber,
    Release,
    Reservation,
)

log = logging.getLogger("softswitch.sos")

LEASES = Counter(
    "softswitch_sos_leases_total",
    "Caller IDs given to emergency calls, by city and how (fallback: no pool number)",
    ["city", "how"],
)
EXHAUSTED = Counter(
    "softswitch_sos_exhausted_total",
    "Emergency calls that got no pool number (exhausted or empty pool, no city, unknown panel)",
    ["city"],
)
LEASE_SECONDS = Histogram(
    "softswitch_sos_lease_seconds",
    "Time to lease a caller ID for an emergency call, fallbacks included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
POOL_NUMBERS = Gauge(
    "softswitch_sos_pool_numbers",
    "Pool numbers by city and status (free, reserved, leased, blocked) at the last refresh",
    ["city", "status"],
)
# The label of calls that have no city (no panel, or a panel without city).
NO_CITY = ""

# The same shapes as the CHECK constraints of sql/migrations/0005_sos_pool.sql.
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_KEY = re.compile(r"\S+")
_FIAS_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EMERGENCY_NUMBER = re.compile(r"[0-9]{2,15}")
_SIP_URI = re.compile(r"sips?:\S+")

_CITY_FIELDS = tuple(City.model_fields)
_NUMBER_FIELDS = tuple(PoolNumber.model_fields)
_NUMBER_COLUMNS = ", ".join(_NUMBER_FIELDS)

# The events the lease and release statements write, completed from the rows they changed.
_EXHAUSTED_EVENT = templated_outbox_row("exhausted", "'city', city_label, 'panel', panel")
_LEASED_EVENT = templated_outbox_row(
    "leased", "'city', city_label, 'number', caller_id, 'panel', panel, 'how', how"
)
_RELEASED_EVENT = templated_outbox_row(
    "released",
    "'city', city_id, 'number', number, 'panel', panel_id, 'held_seconds', held_seconds,"
    " 'call_id', call_id",
)

# One statement finds the calling panel and its city, leases the number, writes the audit row
# and the events: one round trip. choose_number's three steps are sub-selects, COALESCE runs a
# step only when the ones before it found nothing, and SKIP LOCKED passes over rows other
# calls are leasing at this moment. lease_how is computed from the row as it was before the
# UPDATE. Always one row: the caller's columns are NULL for an account that is no panel,
# pool_number when no number was leased, caller_id when not even a fallback is known.
_LEASE = f"""
WITH caller AS (
    SELECT p.panel_id, p.account, p.address, {", ".join(f"c.{field}" for field in _CITY_FIELDS)}
    FROM intercom_panel p
    LEFT JOIN sos_city c ON c.city_id = p.city_id
    WHERE p.account = %(account)s
),
leased AS (
    UPDATE sos_number
    SET state = 'leased', panel_id = (SELECT panel_id FROM caller), call_id = %(call_id)s,
        leased_at = now(), released_at = NULL, reserved_until = NULL, last_used_at = now(),
        lease_how = CASE
            WHEN panel_id = (SELECT panel_id FROM caller)
                 AND (state = 'leased' OR reserved_until > now()) THEN 'reused'
            WHEN reserved_until > now() THEN 'taken_over'
            ELSE 'lru'
        END
    WHERE number = coalesce(
        (SELECT number FROM sos_number
         WHERE city_id = (SELECT city_id FROM caller) AND panel_id = (SELECT panel_id FROM caller)
           AND (state = 'leased' OR (state = 'free' AND reserved_until > now()))
         ORDER BY number LIMIT 1 FOR UPDATE SKIP LOCKED),
        (SELECT number FROM sos_number
         WHERE city_id = (SELECT city_id FROM caller) AND state = 'free'
           AND (reserved_until IS NULL OR reserved_until <= now())
         ORDER BY last_used_at NULLS FIRST, number LIMIT 1 FOR UPDATE SKIP LOCKED),
        (SELECT number FROM sos_number
         WHERE city_id = (SELECT city_id FROM caller) AND state = 'free'
           AND reserved_until > now()
           AND (SELECT exhaustion_policy FROM caller) = 'take_oldest'
         ORDER BY reserved_until, number LIMIT 1 FOR UPDATE SKIP LOCKED))
    RETURNING number, lease_how
),
-- A reused number may still be leased by an earlier call whose release never came.
closed AS (
    UPDATE sos_lease a SET released_at = now()
    FROM leased l
    WHERE a.number = l.number AND a.released_at IS NULL AND a.how <> 'fallback'
),
outcome AS (
    SELECT caller.*, leased.number AS pool_number, now() AS now,
           coalesce(leased.number, caller.fallback_number, %(fallback_number)s) AS caller_id,
           coalesce(leased.lease_how, 'fallback') AS how,
           coalesce(caller.city_id, %(no_city)s) AS city_label,
           coalesce(caller.panel_id, %(account)s) AS panel,
           -- Only asked when nothing was leased (no index leads with city_id: a scan).
           CASE WHEN leased.number IS NOT NULL THEN true
                ELSE EXISTS (SELECT 1 FROM sos_number n WHERE n.city_id = caller.city_id)
           END AS has_numbers
    FROM (SELECT) AS one_row
    LEFT JOIN caller ON true
    LEFT JOIN leased ON true
),
-- leased_at is now(), the transaction's time: the same as the pool number's leased_at.
audit AS (
    INSERT INTO sos_lease (number, city_id, panel_account, panel_id, call_id, how)
    SELECT caller_id, city_id, %(account)s, panel_id, %(call_id)s, how
    FROM outcome WHERE caller_id IS NOT NULL
),
events AS (
    INSERT INTO event_outbox (event_id, routing_key, payload)
    SELECT event.id, event.key, event.payload
    FROM outcome, LATERAL (VALUES
        (1, pool_number IS NULL, {_EXHAUSTED_EVENT}),
        (2, caller_id IS NOT NULL, {_LEASED_EVENT})
    ) AS event(position, wanted, id, key, payload)
    WHERE event.wanted
    ORDER BY event.position
)
SELECT * FROM outcome
"""

# call_id NULL: an admin's release of whatever call holds the number. The locking sub-select
# hands over the call id the UPDATE clears. The event is written by the same statement.
_RELEASE = f"""
WITH released AS (
    UPDATE sos_number n
    SET state = 'free', call_id = NULL, released_at = now(), last_used_at = now(),
        reserved_until = now() + make_interval(mins => c.reservation_minutes)
    FROM sos_city c,
         (SELECT number, call_id FROM sos_number
          WHERE number = %(number)s AND state = 'leased'
            AND (%(call_id)s::text IS NULL OR call_id = %(call_id)s)
          FOR UPDATE) AS old
    WHERE n.number = old.number AND c.city_id = n.city_id
    RETURNING n.number, n.city_id, n.panel_id, old.call_id, n.reserved_until,
              greatest(extract(epoch FROM n.released_at - n.leased_at)::float8, 0)
                  AS held_seconds
),
closed AS (
    UPDATE sos_lease a SET released_at = now(), callback_valid_until = r.reserved_until
    FROM released r
    WHERE a.number = r.number AND a.released_at IS NULL AND a.how <> 'fallback'
),
events AS (
    INSERT INTO event_outbox (event_id, routing_key, payload)
    SELECT {_RELEASED_EVENT}
    FROM released
)
SELECT * FROM released
"""

# A blocked number ends its lease (if any) and its reservation at once.
_BLOCK = f"""
WITH blocked AS (
    UPDATE sos_number
    SET state = 'blocked', blocked_reason = %(reason)s, call_id = NULL, reserved_until = NULL
    WHERE number = %(number)s
    RETURNING {_NUMBER_COLUMNS}
),
closed AS (
    UPDATE sos_lease a SET released_at = now(), callback_valid_until = now()
    FROM blocked b
    WHERE a.number = b.number AND a.released_at IS NULL AND a.how <> 'fallback'
)
SELECT {_NUMBER_COLUMNS} FROM blocked
"""

_UNBLOCK = f"""
UPDATE sos_number SET state = 'free', blocked_reason = NULL
WHERE number = %(number)s AND state = 'blocked'
RETURNING {_NUMBER_COLUMNS}
"""

_RESERVATIONS = """
SELECT n.number, n.panel_id, p.account AS panel_account, n.city_id,
       CASE n.state WHEN 'leased' THEN 'leased' ELSE 'reserved' END AS status,
       n.reserved_until AS valid_until,
       CASE n.state WHEN 'leased' THEN n.leased_at ELSE n.released_at END AS since
FROM sos_number n
JOIN intercom_panel p ON p.panel_id = n.panel_id
WHERE n.state = 'leased' OR (n.state = 'free' AND n.reserved_until > now())
ORDER BY n.city_id, n.number
"""

_USAGE = """
SELECT c.city_id, c.name,
       count(n.number) FILTER (
           WHERE n.state = 'free' AND (n.reserved_until IS NULL OR n.reserved_until <= now())
       ) AS free,
       count(n.number) FILTER (WHERE n.state = 'free' AND n.reserved_until > now()) AS reserved,
       count(n.number) FILTER (WHERE n.state = 'leased') AS leased,
       count(n.number) FILTER (WHERE n.state = 'blocked') AS blocked
FROM sos_city c
LEFT JOIN sos_number n ON n.city_id = c.city_id
GROUP BY c.city_id, c.name
ORDER BY c.city_id
"""


def _no_pool_reason(location: PanelLocation | None, row: dict[str, Any]) -> LeaseReason:
    if location is None:
        return "unknown_panel"
    if location.city_id is None:
        return "no_city"
    return "exhausted" if row["has_numbers"] else "no_numbers"


async def lease_number(
    conn: psycopg.AsyncConnection[Any],
    *,
    panel_account: str,
    call_id: str,
    fallback_number: str | None = None,
) -> LeaseOutcome:
    """The caller ID for an emergency call from ``panel_account``, leased in one statement
    with its audit row and events (its own transaction on an autocommit connection, else
    part of the caller's).

    A panel with a city gets a pool number (see ``choose_number``) or, when none can be had,
    the city's fallback number; an unknown account or a panel without a city gets
    ``fallback_number`` (settings.sos.fallback_number), and no lease at all when that is None.
    Every outcome but a pool number is logged, counted and sent as SosPoolExhausted.
    """
    started = time.perf_counter()
    params = {
        "account": panel_account,
        "call_id": call_id,
        "fallback_number": fallback_number,
        "no_city": NO_CITY,
        **templated_event(
            "exhausted", SosPoolExhausted(city=NO_CITY, panel=panel_account, call_id=call_id)
        ),
        **templated_event(
            "leased",
            SosNumberLeased(city=NO_CITY, number="", panel=panel_account, call_id=call_id),
        ),
    }
    # One statement is atomic on its own (its own transaction on an autocommit connection,
    # part of the caller's otherwise): one round trip. Prepared at once: planning the
    # statement costs more than running it (0.4 against 0.3 ms).
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_LEASE, params, prepare=True)
        row = await cursor.fetchone()
    assert row is not None  # the statement always returns one row
    LEASE_SECONDS.observe(time.perf_counter() - started)
    city = City.model_validate({f: row[f] for f in _CITY_FIELDS}) if row["city_id"] else None
    location = (
        PanelLocation(
            panel_id=row["panel_id"],
            account=row["account"],
            address=row["address"],
            city_id=row["city_id"],
            city_name=row["name"],
            fias_code=row["fias_code"],
        )
        if row["panel_id"]
        else None
    )
    reason: LeaseReason = "leased" if row["pool_number"] else _no_pool_reason(location, row)
    number = row["caller_id"]
    lease = None
    if number is not None:
        lease = Lease(
            number=number,
            how=row["how"],
            call_id=call_id,
            panel_account=panel_account,
            panel_id=row["panel_id"],
            city_id=row["city_id"],
            gateway_uri=city.gateway_uri if city else None,
            emergency_number=city.emergency_number if city else None,
            leased_at=row["now"],
            location=location,
        )
        LEASES.labels(row["city_label"], lease.how).inc()
    if reason != "leased":
        EXHAUSTED.labels(row["city_label"]).inc()
        log.warning(
            "112 call %s from %s got no pool number (%s); caller ID %s",
            call_id,
            panel_account,
            reason,
            number or "unchanged (no fallback number configured)",
        )
    return LeaseOutcome(reason=reason, lease=lease)


async def release_number(
    conn: psycopg.AsyncConnection[Any], *, number: str, call_id: str | None
) -> Release | None:
    """End the lease of ``number`` by call ``call_id``: the number stays reserved for its
    panel for the city's reservation_minutes (the callback window).

    None when there is nothing to release: the number is not leased, or is leased by another
    call now (a late or repeated release changes nothing). ``call_id`` None releases whatever
    call holds the number (an admin's forced release).
    """
    template = SosNumberReleased(city=NO_CITY, number=number, panel="", held_seconds=0)
    params = {"number": number, "call_id": call_id, **templated_event("released", template)}
    # One statement and one round trip, prepared at once, as a lease.
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_RELEASE, params, prepare=True)
        row = await cursor.fetchone()
    return Release.model_validate(row) if row else None


async def reservations(conn: psycopg.AsyncConnection[Any]) -> dict[str, Reservation]:
    """Who a callback to each pool number reaches now: numbers leased, or still reserved for
    their last panel. Numbers whose panel no longer exists reach nobody and are left out."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_RESERVATIONS)
        return {row["number"]: Reservation.model_validate(row) for row in await cursor.fetchall()}


async def block_number(
    conn: psycopg.AsyncConnection[Any], *, number: str, reason: str
) -> PoolNumber | None:
    """Never lease ``number`` again until unblocked; a call using it keeps going, but its lease
    and any reservation end now. None when the pool has no such number."""
    if not reason.strip():
        raise ValueError("a blocked number needs a reason")
    return await _number_row(conn, _BLOCK, {"number": number, "reason": reason})


async def unblock_number(conn: psycopg.AsyncConnection[Any], *, number: str) -> PoolNumber | None:
    """Make a blocked number free again; None when ``number`` is no blocked pool number."""
    return await _number_row(conn, _UNBLOCK, {"number": number})


async def _number_row(
    conn: psycopg.AsyncConnection[Any], statement: str, params: dict[str, str]
) -> PoolNumber | None:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(statement, params)
        row = await cursor.fetchone()
    return PoolNumber.model_validate(row) if row else None


async def pool_usage(conn: psycopg.AsyncConnection[Any]) -> list[CityUsage]:
    """How many numbers of every city are free, reserved, leased and blocked now."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_USAGE)
        return [CityUsage.model_validate(row) for row in await cursor.fetchall()]


async def refresh_pool_gauges(conn: psycopg.AsyncConnection[Any]) -> list[CityUsage]:
    """Set softswitch_sos_pool_numbers from ``pool_usage`` (cities gone are dropped)."""
    usage = await pool_usage(conn)
    POOL_NUMBERS.clear()
    for city in usage:
        for status in ("free", "reserved", "leased", "blocked"):
            POOL_NUMBERS.labels(city.city_id, status).set(getattr(city, status))
    return usage


# Import and export of cities and numbers.


class SosFile(BaseModel):
    """The whole pool, as `sos import` reads it and `sos export` writes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cities: tuple[City, ...] = ()
    numbers: tuple[NumberEntry, ...] = ()


@dataclass(frozen=True)
class SosPlan:
    """What an import changes (the diff a dry run prints)."""

    cities: KeyedDiff[str]
    numbers: KeyedDiff[str]


_TIME_ZONES = frozenset(zoneinfo.available_timezones())


def city_problems(city: City) -> list[str]:
    """What the sos_city constraints (and the time zone database) would refuse, as 'field: why'."""
    checks = (
        ("city_id", _KEY.fullmatch(city.city_id), "a key without spaces"),
        ("name", city.name.strip(), "must not be blank"),
        (
            "fias_code",
            _FIAS_GUID.fullmatch(city.fias_code),
            "a FIAS/GAR GUID, lowercase hex 8-4-4-4-12",
        ),
        ("emergency_number", _EMERGENCY_NUMBER.fullmatch(city.emergency_number), "2 to 15 digits"),
        ("gateway_uri", _SIP_URI.fullmatch(city.gateway_uri), "a sip: or sips: URI"),
        (
            "time_zone",
            city.time_zone in _TIME_ZONES,
            "an IANA time zone name such as Asia/Novosibirsk",
        ),
        (
            "fallback_number",
            E164.fullmatch(city.fallback_number),
            "an E.164 number such as +73832000000",
        ),
    )
    return [f"{field}: {why}" for field, good, why in checks if not good]


def number_problems(entry: NumberEntry) -> list[str]:
    """What the sos_number constraints would refuse, as 'field: why'."""
    problems = []
    if not E164.fullmatch(entry.number):
        problems.append("number: an E.164 number such as +73832000001")
    if not _KEY.fullmatch(entry.city_id):
        problems.append("city_id: a city key without spaces")
    if entry.blocked_reason is not None and not entry.blocked_reason.strip():
        problems.append("blocked_reason: must not be blank (leave it out for a usable number)")
    return problems


def parse_sos_file(
    text: str, *, default_reservation_minutes: int = 60
) -> tuple[SosFile, list[str]]:
    """The pool in a JSON file, and every error naming its record and field.

    Cities without reservation_minutes get ``default_reservation_minutes``
    (settings.sos.reservation_minutes). The file is usable only when the error list is empty.
    """
    document, errors = parse_document(text, "a pool file", ("cities", "numbers"))
    for city in document.get("cities", []) if isinstance(document.get("cities"), list) else []:
        if isinstance(city, dict):
            city.setdefault("reservation_minutes", default_reservation_minutes)
    cities, city_errors = parse_records(
        document, "cities", City, ("city_id",), city_problems, kind="city"
    )
    numbers, number_errors = parse_records(
        document, "numbers", NumberEntry, ("number",), number_problems
    )
    errors += city_errors + number_errors
    errors += reused_keys(cities, "city_id", lambda city: city.city_id)
    errors += reused_keys(numbers, "number", lambda entry: entry.number)
    return SosFile(
        cities=tuple(city for _, city in cities), numbers=tuple(entry for _, entry in numbers)
    ), errors


def reference_problems(current: SosFile, incoming: SosFile, *, replace: bool) -> list[str]:
    """Numbers of a parsed file whose city is neither in the file nor (without ``replace``)
    in the database, labelled as the parse labels them."""
    cities = {city.city_id for city in incoming.cities}
    if not replace:
        cities |= {city.city_id for city in current.cities}
    return [
        f"number #{index} {entry.number!r}: city_id: no city {entry.city_id!r}"
        + (" in the file" if replace else " in the file or the database")
        for index, entry in enumerate(incoming.numbers)
        if entry.city_id not in cities
    ]


def plan_sos_import(current: SosFile, incoming: SosFile, *, replace: bool) -> SosPlan:
    """Cities by city_id and numbers by number."""
    return SosPlan(
        cities=diff_by_key(
            {c.city_id: c for c in current.cities},
            {c.city_id: c for c in incoming.cities},
            replace=replace,
        ),
        numbers=diff_by_key(
            {n.number: n for n in current.numbers},
            {n.number: n for n in incoming.numbers},
            replace=replace,
        ),
    )


def current_pool(conn: psycopg.Connection[Any]) -> SosFile:
    """Every city and number, in export order."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cities = cursor.execute(
            f"SELECT {', '.join(_CITY_FIELDS)} FROM sos_city ORDER BY city_id"
        ).fetchall()
        numbers = cursor.execute(
            "SELECT number, city_id, blocked_reason FROM sos_number ORDER BY city_id, number"
        ).fetchall()
    return SosFile(
        cities=tuple(City.model_validate(row) for row in cities),
        numbers=tuple(NumberEntry.model_validate(row) for row in numbers),
    )


def export_pool(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The pool as the JSON `sos import` reads (export then import is a no-op)."""
    return current_pool(conn).model_dump(mode="json", exclude_none=True)


_UPSERT_CITY = (
    f"INSERT INTO sos_city ({', '.join(_CITY_FIELDS)})"
    f" VALUES ({', '.join(f'%({field})s' for field in _CITY_FIELDS)})"
    " ON CONFLICT (city_id) DO UPDATE SET "
    + ", ".join(f"{field} = EXCLUDED.{field}" for field in _CITY_FIELDS[1:])
)


def apply_sos_import(conn: psycopg.Connection[Any], file: SosFile, *, replace: bool) -> SosPlan:
    """Write the file in one transaction (all or nothing); upsert by key, optionally replace.

    Lease state is left alone, except that a number the file blocks ends its lease and
    reservation (as `sos block` does), and a number ``replace`` removes is gone, lease and
    all. Raises psycopg.errors.IntegrityError when PostgreSQL refuses a record.
    """
    with conn.transaction(), conn.cursor() as cursor:
        # Serialises imports; leases never touch sos_city, so they go on meanwhile.
        cursor.execute("LOCK TABLE sos_city IN SHARE ROW EXCLUSIVE MODE")
        current = current_pool(conn)
        plan = plan_sos_import(current, file, replace=replace)
        cities = {city.city_id: city for city in file.cities}
        cursor.executemany(
            _UPSERT_CITY,
            [cities[key].model_dump() for key in plan.cities.added + plan.cities.changed],
        )
        numbers = {entry.number: entry for entry in file.numbers}
        cursor.executemany(
            "INSERT INTO sos_number (number, city_id) VALUES (%(number)s, %(city_id)s)"
            " ON CONFLICT (number) DO UPDATE SET city_id = EXCLUDED.city_id",
            [numbers[key].model_dump() for key in plan.numbers.added + plan.numbers.changed],
        )
        before = {entry.number: entry.blocked_reason for entry in current.numbers}
        for key in plan.numbers.added + plan.numbers.changed:
            reason = numbers[key].blocked_reason
            if reason != before.get(key):
                cursor.execute(
                    _UNBLOCK if reason is None else _BLOCK, {"number": key, "reason": reason}
                )
        cursor.execute("DELETE FROM sos_number WHERE number = ANY(%s)", (plan.numbers.removed,))
        cursor.execute("DELETE FROM sos_city WHERE city_id = ANY(%s)", (plan.cities.removed,))
    return plan
