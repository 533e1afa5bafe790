"""The only SQL of routing: rows <-> specs, import/export, and the live table loader.

The loader LISTENs on ``route_changed`` (fired by a statement trigger, so hand-written SQL
counts too) and ``sos_reservation_changed`` (emergency-pool reservations, for callback
routes), reloads the whole table in one snapshot, compiles it off the event loop and
swaps it in with one assignment. A row that does not validate is skipped, logged, counted
and written to ``route_load_error``; it never fails the load. When PostgreSQL is down the
last good table keeps serving and the loader reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from routing.engine import decide
from routing.models import CallbackTarget, CallRequest, Decision, RouteSpec
from routing.table import RouteTable
from softswitch.reconnect import keep_connected
from softswitch.settings import Settings
from softswitch.sos.store import reservations

log = logging.getLogger("softswitch.routing.store")

TABLE_VERSION = Gauge("softswitch_routing_table_version", "Loads of the route table so far")
TABLE_ROUTES = Gauge("softswitch_routing_table_routes", "Enabled routes in the live table")
BAD_ROWS = Gauge("softswitch_routing_bad_rows", "Rows skipped at the last load")
RELOAD_ERRORS = Counter("softswitch_routing_reload_errors_total", "Failed table loads")
CALLBACK_NUMBERS = Gauge(
    "softswitch_routing_callback_numbers", "Emergency-pool numbers a callback route can reach"
)
DATABASE_UP = Gauge("softswitch_routing_database_up", "1 while the route LISTEN connection is up")

CHANNEL = "route_changed"
RESERVATIONS_CHANNEL = "sos_reservation_changed"
_COLUMNS = (
    "id, name, route_group, priority, enabled, caller_mask, caller_host_mask, callee_mask,"
    " callee_host_mask, rewrite_caller, rewrite_callee, action, destinations, parallel, app,"
    " app_args, reject_code, reject_reason, flags, schedule"
)
_SELECT_ROUTES = f"SELECT {_COLUMNS} FROM route ORDER BY priority, id"


def spec_from_row(row: dict[str, Any]) -> RouteSpec:
    """A route row as the admin-facing spec; raises ValidationError for a bad row."""
    return RouteSpec.model_validate(
        {
            "name": row["name"],
            "group": row["route_group"],
            "priority": row["priority"],
            "enabled": row["enabled"],
            "match": {
                "caller": row["caller_mask"],
                "caller_host": row["caller_host_mask"],
                "callee": row["callee_mask"],
                "callee_host": row["callee_host_mask"],
            },
            "rewrite": {"caller": row["rewrite_caller"], "callee": row["rewrite_callee"]},
            "action": row["action"],
            "destinations": row["destinations"],
            "parallel": row["parallel"],
            "app": row["app"],
            "app_args": row["app_args"],
            "reject": (
                {"code": row["reject_code"], "reason": row["reject_reason"]}
                if row["reject_code"] is not None
                else None
            ),
            "flags": row["flags"],
            "schedule": row["schedule"],
        }
    )


def row_from_spec(spec: RouteSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "route_group": spec.group,
        "priority": spec.priority,
        "enabled": spec.enabled,
        "caller_mask": spec.match.caller,
        "caller_host_mask": spec.match.caller_host,
        "callee_mask": spec.match.callee,
        "callee_host_mask": spec.match.callee_host,
        "rewrite_caller": spec.rewrite.caller,
        "rewrite_callee": spec.rewrite.callee,
        "action": spec.action,
        "destinations": spec.destinations,
        "parallel": spec.parallel,
        "app": spec.app,
        "app_args": spec.app_args,
        "reject_code": spec.reject.code if spec.reject else None,
        "reject_reason": spec.reject.reason if spec.reject else None,
        "flags": spec.flags,
        "schedule": (Jsonb(spec.schedule.model_dump(mode="json")) if spec.schedule else None),
    }


def describe_error(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'route'}: {e['msg'].removeprefix('Value error, ')}"
        for e in error.errors(include_url=False)
    )


@dataclass(frozen=True)
class LoadedRoutes:
    good: list[tuple[int, RouteSpec]]
    bad: list[tuple[int, str, str]]  # id, name, reason


def validate_rows(rows: Sequence[dict[str, Any]]) -> LoadedRoutes:
    good, bad = [], []
    for row in rows:
        try:
            good.append((int(row["id"]), spec_from_row(row)))
        except ValidationError as exc:
            bad.append((int(row["id"]), str(row["name"]), describe_error(exc)))
    return LoadedRoutes(good, bad)


def fetch_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(_SELECT_ROUTES).fetchall()


def decide_stored(
    conn: psycopg.Connection[Any], call: CallRequest, at: datetime, settings: Settings
) -> tuple[Decision, LoadedRoutes]:
    """Decide ``call`` against the routes stored now, exactly as the routing service would
    (for `softswitch routes test` and the admin API); with the rows the service skips."""
    loaded = validate_rows(fetch_rows(conn))
    decision = decide(
        call,
        RouteTable.compile(loaded.good),
        at if at.tzinfo is not None else at.replace(tzinfo=UTC),
        max_chain=settings.routing.max_chain,
        local_hosts=settings.kamailio.local_hosts,
    )
    return decision, loaded


def export_specs(conn: psycopg.Connection[Any]) -> list[RouteSpec]:
    """Every route as specs, in decision order; a bad row fails the export with its reason."""
    loaded = validate_rows(fetch_rows(conn))
    if loaded.bad:
        raise ValueError(
            "cannot export invalid rows: "
            + "; ".join(f"route id {i} {name!r}: {why}" for i, name, why in loaded.bad)
        )
    return [spec for _, spec in loaded.good]


def current_routes(conn: psycopg.Connection[Any]) -> dict[str, RouteSpec | None]:
    loaded = validate_rows(fetch_rows(conn))
    current: dict[str, RouteSpec | None] = {spec.name: spec for _, spec in loaded.good}
    current.update({name: None for _, name, _ in loaded.bad})
    return current


def spec_to_json(spec: RouteSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


@dataclass(frozen=True)
class ImportPlan:
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: list[str]


def plan_import(
    current: dict[str, RouteSpec | None], incoming: Sequence[RouteSpec], *, replace: bool
) -> ImportPlan:
    """What an import changes, by route name (the diff a dry run prints).

    ``current`` maps each existing name to its spec, or None for a row that does not
    validate (an import may repair or remove it).
    """
    before = current
    after = {spec.name: spec for spec in incoming}
    return ImportPlan(
        added=[name for name in after if name not in before],
        changed=[name for name in after if name in before and before[name] != after[name]],
        removed=[name for name in before if name not in after] if replace else [],
        unchanged=[name for name in after if name in before and before[name] == after[name]],
    )


def apply_import(
    conn: psycopg.Connection[Any], incoming: Sequence[RouteSpec], *, replace: bool
) -> ImportPlan:
    """Write routes in one transaction (all or nothing); upsert by name, optionally replace.

    Unchanged routes are left alone so their ids, and with them tie-break order, stay put.
    """
    with conn.transaction():
        conn.execute("LOCK TABLE route IN SHARE ROW EXCLUSIVE MODE")
        plan = plan_import(current_routes(conn), incoming, replace=replace)
        if plan.removed:
            conn.execute("DELETE FROM route WHERE name = ANY(%s)", (plan.removed,))
        by_name = {spec.name: spec for spec in incoming}
        for name in plan.added + plan.changed:
            row = row_from_spec(by_name[name])
            columns = ", ".join(row)
            placeholders = ", ".join(f"%({c})s" for c in row)
            updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in row if c != "name")
            conn.execute(
                f"INSERT INTO route ({columns}) VALUES ({placeholders})"
                f" ON CONFLICT (name) DO UPDATE SET {updates}",
                row,
            )
    return plan


def parse_route_file(text: str) -> tuple[list[RouteSpec], list[str]]:
    """Specs from a JSON route file, or every error with the route's index and name."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [f"not JSON: {exc}"]
    if not isinstance(document, list):
        return [], ["the file must hold a JSON list of routes"]
    specs, errors = [], []
    seen: dict[str, int] = {}
    for index, item in enumerate(document):
        label = f"route #{index}"
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            label += f" {item['name']!r}"
        try:
            spec = RouteSpec.model_validate(item)
        except ValidationError as exc:
            errors.append(f"{label}: {describe_error(exc)}")
            continue
        if spec.name in seen:
            errors.append(f"{label}: name already used by route #{seen[spec.name]}")
            continue
        seen[spec.name] = index
        specs.append(spec)
    return specs, errors


class RouteLoader:
    """Keeps a live RouteTable in sync with PostgreSQL; ``table`` is always the last good one."""

    def __init__(
        self,
        database_url: str,
        *,
        debounce_seconds: float = 0.05,
        health_interval_seconds: float = 5.0,
    ) -> None:
        self._url = database_url
        self._debounce = debounce_seconds
        self._health_interval = health_interval_seconds
        self.table = RouteTable.compile([])
        self.loaded = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        await keep_connected(
            self._listen_and_reload,
            stop,
            what="route loader",
            failures=(psycopg.OperationalError, psycopg.InterfaceError),
            on_failure=self._database_lost,
        )

    def _database_lost(self, _: BaseException) -> None:
        DATABASE_UP.set(0)
        RELOAD_ERRORS.inc()
        log.warning("route database unavailable; serving table version %d", self.table.version)

    async def _listen_and_reload(self, stop: asyncio.Event) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=3
        ) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            await conn.execute(f"LISTEN {RESERVATIONS_CHANNEL}")
            DATABASE_UP.set(1)
            # After LISTEN: no change can slip between the two.
            await self._reload(conn)
            await self._reload_callbacks(conn)
            while not stop.is_set():
                changed = set()
                async for notify in conn.notifies(timeout=self._health_interval, stop_after=1):
                    changed.add(notify.channel)
                if changed:
                    await asyncio.sleep(self._debounce)  # let a burst of edits settle
                    async for notify in conn.notifies(timeout=0):
                        changed.add(notify.channel)
                    if CHANNEL in changed:
                        await self._reload(conn)
                    if RESERVATIONS_CHANNEL in changed:
                        await self._reload_callbacks(conn)
                else:
                    await conn.execute("SELECT 1")  # notice a dead connection promptly

    async def _reload(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(_SELECT_ROUTES)
            rows = await cursor.fetchall()
        loaded, table = await asyncio.to_thread(_compile, rows, self.table.version + 1)
        table = table.with_callbacks(self.table.callbacks)
        async with conn.transaction():
            await conn.execute("DELETE FROM route_load_error")
            for route_id, name, reason in loaded.bad:
                await conn.execute(
                    "INSERT INTO route_load_error (route_id, route_name, reason)"
                    " VALUES (%s, %s, %s)",
                    (route_id, name, reason),
                )
        for route_id, name, reason in loaded.bad:
            log.error("route id %d %r skipped: %s", route_id, name, reason)
        self.table = table
        # The table is long-lived: keep the cyclic GC from walking its ~10 objects per route
        # on every full collection (pauses of milliseconds at 100k routes). Refcounting still
        # frees the previous table.
        gc.freeze()
        TABLE_VERSION.set(table.version)
        TABLE_ROUTES.set(len(table.routes))
        BAD_ROWS.set(len(loaded.bad))
        log.info(
            "route table version %d: %d routes, %d skipped",
            table.version,
            len(table.routes),
            len(loaded.bad),
        )
        self.loaded.set()

    async def _reload_callbacks(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Swap in who each emergency-pool number reaches (its panel) for callback routes."""
        callbacks = {
            number: CallbackTarget(
                panel_account=held.panel_account,
                panel_id=held.panel_id,
                city_id=held.city_id,
                valid_until=held.valid_until,
            )
            for number, held in (await reservations(conn)).items()
        }
        if callbacks != self.table.callbacks:
            self.table = self.table.with_callbacks(callbacks)
        CALLBACK_NUMBERS.set(len(callbacks))
        log.info("callback reservations: %d numbers", len(callbacks))


def _compile(rows: list[dict[str, Any]], version: int) -> tuple[LoadedRoutes, RouteTable]:
    loaded = validate_rows(rows)
    return loaded, RouteTable.compile(loaded.good, version=version)
