"""The flat directory: intercom panels, flats with their devices, and the whole-file import.

Checks and writes are ``softswitch.directory.store``'s, as `softswitch directory import`.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from softswitch.admin.auth import ADMINISTER, READ
from softswitch.admin.context import Db
from softswitch.admin.models import ImportResult, import_result
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
    refuse_conflicts,
    refuse_import_errors,
    refuse_invalid,
    same_key,
)
from softswitch.admin.store import delete_flat, delete_panel
from softswitch.directory.models import Flat, Panel
from softswitch.directory.store import (
    DirectoryFile,
    apply_directory_import,
    current_directory,
    flat_problems,
    panel_problems,
    parse_directory_file,
    plan_directory_import,
    unknown_city_problems,
)

router = APIRouter(tags=["directory"])


@router.get("/panels", dependencies=[READ], responses=ERRORS)
def list_panels(conn: Db) -> list[Panel]:
    return list(current_directory(conn).panels)


@router.get("/panels/{panel_id:path}", dependencies=[READ], responses={**ERRORS, **NOT_FOUND})
def get_panel(panel_id: str, conn: Db) -> Panel:
    return find(
        current_directory(conn).panels, lambda p: p.panel_id == panel_id, f"panel {panel_id!r}"
    )


@router.put("/panels/{panel_id:path}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_panel(panel_id: str, panel: Panel, conn: Db, response: Response) -> Panel:
    """Create or replace one panel (its account must be no other panel's, its city one of
    the 112 pool's)."""
    same_key("panel_id", panel.panel_id, panel_id)
    refuse_invalid(panel_problems(panel))
    one = DirectoryFile(panels=(panel,))
    refuse_conflicts(unknown_city_problems(conn, one), single=True)
    plan = apply_directory_import(conn, one, replace=False)
    created_if(response, bool(plan.panels.added))
    return panel


@router.delete(
    "/panels/{panel_id:path}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND},
)
def remove_panel(panel_id: str, conn: Db) -> Response:
    return deleted(delete_panel(conn, panel_id), f"panel {panel_id!r}")


@router.get("/flats", dependencies=[READ], responses=ERRORS)
def list_flats(conn: Db) -> list[Flat]:
    """Every flat with its devices in ringing order (flats in numeric order per building)."""
    return list(current_directory(conn).flats)


@router.get("/flats/{building}/{number}", dependencies=[READ], responses={**ERRORS, **NOT_FOUND})
def get_flat(building: str, number: str, conn: Db) -> Flat:
    return find(
        current_directory(conn).flats,
        lambda f: (f.building, f.number) == (building, number),
        f"flat {number} in {building!r}",
    )


@router.put("/flats/{building}/{number}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_flat(building: str, number: str, flat: Flat, conn: Db, response: Response) -> Flat:
    """Create or replace one flat with exactly the devices listed, rung in that order."""
    same_key("building", flat.building, building)
    same_key("number", flat.number, number)
    refuse_invalid(flat_problems(flat))
    plan = apply_directory_import(conn, DirectoryFile(flats=(flat,)), replace=False)
    created_if(response, bool(plan.flats.added))
    return flat


@router.delete(
    "/flats/{building}/{number}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND},
)
def remove_flat(building: str, number: str, conn: Db) -> Response:
    """Delete a flat and its devices."""
    return deleted(delete_flat(conn, building, number), f"flat {number} in {building!r}")


@router.post("/directory/import", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def import_directory(
    directory: DirectoryFile,
    raw: RawBody,
    conn: Db,
    replace: Replace = False,
    dry_run: DryRun = False,
) -> ImportResult:
    """Validate every panel and flat, then write all of them in one transaction, or none
    (`softswitch directory import`); the body is what `softswitch directory export` prints."""
    del directory  # validated by FastAPI with the store's models; the store parses the body
    incoming, errors = parse_directory_file(body_text(raw))
    refuse_import_errors(errors)
    refuse_conflicts(unknown_city_problems(conn, incoming), single=False)
    if dry_run:
        plan = plan_directory_import(current_directory(conn), incoming, replace=replace)
    else:
        plan = apply_directory_import(conn, incoming, replace=replace)
    return import_result(dry_run=dry_run, panels=plan.panels, flats=plan.flats)
