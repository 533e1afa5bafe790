"""The 112 number pool: cities and numbers (config), usage and holders (live), and the
operator's actions on one number: release its lease, block it, unblock it.

Checks and writes are ``softswitch.sos.store``'s, as `softswitch sos ...`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from softswitch.admin.auth import ADMINISTER, READ
from softswitch.admin.context import Context, Db, async_connection
from softswitch.admin.errors import ApiError
from softswitch.admin.models import BlockBody, ImportResult, import_result
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
    find,
    not_found,
    refuse_conflicts,
    refuse_import_errors,
    refuse_invalid,
    same_key,
)
from softswitch.admin.store import delete_city, delete_number, pool_number_exists
from softswitch.sos.models import City, CityUsage, NumberEntry, PoolNumber, Release, Reservation
from softswitch.sos.store import (
    SosFile,
    apply_sos_import,
    block_number,
    city_problems,
    current_pool,
    number_problems,
    parse_sos_file,
    plan_sos_import,
    pool_usage,
    reference_problems,
    release_number,
    reservations,
    unblock_number,
)

router = APIRouter(tags=["112 pool"])
CONFLICT: dict[int | str, dict[str, Any]] = {409: WRITE_ERRORS[409]}


@router.get("/cities", dependencies=[READ], responses=ERRORS)
def list_cities(conn: Db) -> list[City]:
    return list(current_pool(conn).cities)


@router.get("/cities/{city_id:path}", dependencies=[READ], responses={**ERRORS, **NOT_FOUND})
def get_city(city_id: str, conn: Db) -> City:
    return find(current_pool(conn).cities, lambda c: c.city_id == city_id, f"city {city_id!r}")


@router.put("/cities/{city_id:path}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_city(city_id: str, city: City, conn: Db, context: Context, response: Response) -> City:
    """Create or replace one city (reservation_minutes defaults to
    SOFTSWITCH_SOS_RESERVATION_MINUTES, as in `softswitch sos import`)."""
    same_key("city_id", city.city_id, city_id)
    if "reservation_minutes" not in city.model_fields_set:
        minutes = context.settings.sos.reservation_minutes
        city = city.model_copy(update={"reservation_minutes": minutes})
    refuse_invalid(city_problems(city))
    plan = apply_sos_import(conn, SosFile(cities=(city,)), replace=False)
    created_if(response, bool(plan.cities.added))
    return city


@router.delete(
    "/cities/{city_id:path}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
)
def remove_city(city_id: str, conn: Db) -> Response:
    """Delete a city without pool numbers (409 while it has some); its panels keep working
    with the global fallback caller ID."""
    return deleted(delete_city(conn, city_id), f"city {city_id!r}")


@router.get("/numbers", dependencies=[READ], responses=ERRORS)
def list_numbers(conn: Db) -> list[NumberEntry]:
    """Every pool number with its city (and why it is blocked); lease state: /sos/holders."""
    return list(current_pool(conn).numbers)


@router.get("/numbers/{number}", dependencies=[READ], responses={**ERRORS, **NOT_FOUND})
def get_number(number: str, conn: Db) -> NumberEntry:
    return find(current_pool(conn).numbers, lambda e: e.number == number, f"pool number {number!r}")


@router.put("/numbers/{number}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_number(number: str, entry: NumberEntry, conn: Db, response: Response) -> NumberEntry:
    """Create or change one pool number: its city, and blocked_reason (a reason blocks it,
    ending its lease and reservation; null unblocks it)."""
    same_key("number", entry.number, number)
    refuse_invalid(number_problems(entry))
    one = SosFile(numbers=(entry,))
    refuse_conflicts(reference_problems(current_pool(conn), one, replace=False), single=True)
    plan = apply_sos_import(conn, one, replace=False)
    created_if(response, bool(plan.numbers.added))
    return entry


@router.delete(
    "/numbers/{number}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND},
)
def remove_number(number: str, conn: Db) -> Response:
    """Delete a pool number, whatever its lease."""
    return deleted(delete_number(conn, number), f"pool number {number!r}")


@router.post(
    "/numbers/{number}/release",
    dependencies=[ADMINISTER],
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
)
async def release(number: str, context: Context) -> Release:
    """End the lease of a number whatever call holds it (`softswitch sos release`); it stays
    reserved for its panel for the city's callback window. 409 when it is not leased."""
    async with async_connection(context.settings) as conn:
        released = await release_number(conn, number=number, call_id=None)
        if released is None:
            if not await pool_number_exists(conn, number):
                raise not_found(f"pool number {number!r}")
            raise ApiError(409, f"{number} is not leased; nothing released")
    return released


@router.post(
    "/numbers/{number}/block", dependencies=[ADMINISTER], responses={**ERRORS, **NOT_FOUND}
)
async def block(number: str, body: BlockBody, context: Context) -> PoolNumber:
    """Never lease the number again until unblocked; its lease and reservation end now."""
    async with async_connection(context.settings) as conn:
        blocked = await block_number(conn, number=number, reason=body.reason)
    if blocked is None:
        raise not_found(f"pool number {number!r}")
    return blocked


@router.post(
    "/numbers/{number}/unblock",
    dependencies=[ADMINISTER],
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
)
async def unblock(number: str, context: Context) -> PoolNumber:
    """Make a blocked number free again (409 when it is not blocked)."""
    async with async_connection(context.settings) as conn:
        unblocked = await unblock_number(conn, number=number)
        if unblocked is None:
            if not await pool_number_exists(conn, number):
                raise not_found(f"pool number {number!r}")
            raise ApiError(409, f"{number} is not blocked")
    return unblocked


@router.get("/sos/usage", dependencies=[READ], responses=ERRORS)
async def usage(context: Context) -> list[CityUsage]:
    """Per city: how many numbers are free, reserved, leased and blocked now."""
    async with async_connection(context.settings) as conn:
        return await pool_usage(conn)


@router.get("/sos/holders", dependencies=[READ], responses=ERRORS)
async def holders(context: Context) -> list[Reservation]:
    """Numbers leased or reserved now: which panel holds each, since when, until when."""
    async with async_connection(context.settings) as conn:
        return list((await reservations(conn)).values())


@router.post("/sos/import", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def import_pool(
    pool: SosFile,
    raw: RawBody,
    conn: Db,
    context: Context,
    replace: Replace = False,
    dry_run: DryRun = False,
) -> ImportResult:
    """Validate every city and number, then write all of them in one transaction, or none
    (`softswitch sos import`); the body is what `softswitch sos export` prints."""
    del pool  # validated by FastAPI with the store's models; the store parses the body
    incoming, errors = parse_sos_file(
        body_text(raw), default_reservation_minutes=context.settings.sos.reservation_minutes
    )
    refuse_import_errors(errors)
    current = current_pool(conn)
    refuse_conflicts(reference_problems(current, incoming, replace=replace), single=False)
    if dry_run:
        plan = plan_sos_import(current, incoming, replace=replace)
    else:
        plan = apply_sos_import(conn, incoming, replace=replace)
    return import_result(dry_run=dry_run, cities=plan.cities, numbers=plan.numbers)
