"""Call routes: list, read, upsert and delete one, import a whole file, decide a test call.

Validation is ``routing.models.RouteSpec``'s (RE2 masks, rewrite groups, complete actions),
writes are ``routing.store.apply_import``'s; the routing service picks every change up
through the table's NOTIFY within a second.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from routing.models import CallRequest, RouteSpec
from routing.store import (
    apply_import,
    current_routes,
    decide_stored,
    export_specs,
    parse_route_file,
    plan_import,
)
from softswitch.admin.auth import ADMINISTER, READ
from softswitch.admin.context import Context, Db
from softswitch.admin.errors import ApiError, FieldError, invalid
from softswitch.admin.models import ImportResult, RouteTest, SkippedRoute, import_result
from softswitch.admin.records import (
    ERRORS,
    NOT_FOUND,
    WRITE_ERRORS,
    DryRun,
    RawBody,
    Replace,
    body_text,
    created_if,
    deleted,
    not_found,
    refuse_import_errors,
    same_key,
)
from softswitch.admin.store import delete_route

router = APIRouter(tags=["routes"])
# Schedules convert the moment into time zones; far from today that overflows datetime.
_EARLIEST, _LATEST = datetime(1970, 1, 2, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
Number = Annotated[str, Query(max_length=256)]


@router.get(
    "/routes",
    dependencies=[READ],
    responses={**ERRORS, 409: {"description": "the table holds rows that do not validate"}},
)
def list_routes(conn: Db) -> list[RouteSpec]:
    """Every route in decision order, as `softswitch routes export` prints them (the body of
    POST /routes/import). Refused (409, naming them) while rows written in SQL do not
    validate: fix them with PUT or SQL."""
    try:
        return export_specs(conn)
    except ValueError as exc:
        raise ApiError(409, str(exc)) from None


@router.get("/routes/test", dependencies=[READ], responses=ERRORS)
def test_route(
    conn: Db,
    context: Context,
    caller: Number,
    callee: Number,
    caller_host: Number = "",
    callee_host: Number = "",
    at: Annotated[
        datetime | None, Query(description="decide as at this ISO time (default now; naive = UTC)")
    ] = None,
    trusted: Annotated[
        bool,
        Query(
            description="false: as from a caller Kamailio does not vouch for, whose relays"
            " outside our domain need a `public` route"
        ),
    ] = True,
) -> RouteTest:
    """Decide one call against the routes in PostgreSQL exactly as the routing service would
    (`softswitch routes test`); rows the service would skip are listed."""
    moment = at or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        in_range = _EARLIEST <= moment <= _LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise invalid([FieldError(field="at", message="must be between 1970 and 9000")])
    call = CallRequest(
        caller=caller,
        caller_host=caller_host,
        callee=callee,
        callee_host=callee_host,
        trusted=trusted,
    )
    decision, loaded = decide_stored(conn, call, moment, context.settings)
    return RouteTest(
        decision=decision,
        skipped=[SkippedRoute(id=i, name=name, reason=why) for i, name, why in loaded.bad],
    )


@router.post("/routes/import", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def import_routes(
    routes: list[RouteSpec],
    raw: RawBody,
    conn: Db,
    replace: Replace = False,
    dry_run: DryRun = False,
) -> ImportResult:
    """Validate every route, then write all of them in one transaction, or none
    (`softswitch routes import`): upsert by name; ``replace`` also deletes routes the body
    does not list."""
    del routes  # validated by FastAPI with RouteSpec; the store's parser reads the body itself
    specs, errors = parse_route_file(body_text(raw))
    refuse_import_errors(errors)
    if dry_run:
        plan = plan_import(current_routes(conn), specs, replace=replace)
    else:
        plan = apply_import(conn, specs, replace=replace)
    return import_result(dry_run=dry_run, routes=plan)


@router.get(
    "/routes/{name:path}",
    dependencies=[READ],
    responses={**ERRORS, **NOT_FOUND, 409: {"description": "the row does not validate"}},
)
def get_route(name: str, conn: Db) -> RouteSpec:
    """One route by name (a route named ``test`` is listed by GET /routes: this path is the
    test call's)."""
    current = current_routes(conn)
    if name not in current:
        raise not_found(f"route {name!r}")
    spec = current[name]
    if spec is None:
        raise ApiError(409, f"route {name!r} does not validate (see `softswitch routes errors`)")
    return spec


@router.put("/routes/{name:path}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_route(name: str, spec: RouteSpec, conn: Db, response: Response) -> RouteSpec:
    """Create or replace one route; the body is the route as GET returns it."""
    same_key("name", spec.name, name)
    plan = apply_import(conn, [spec], replace=False)
    created_if(response, bool(plan.added))
    return spec


@router.delete(
    "/routes/{name:path}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND},
)
def remove_route(name: str, conn: Db) -> Response:
    return deleted(delete_route(conn, name), f"route {name!r}")
