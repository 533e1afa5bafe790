"""The only SQL of the flat directory: the per-call lookup, and JSON import/export for admins.

A panel's call needs the panel, the flat its keypad entry means and that flat's devices: one
query, one round trip. The admin side works like `routes import`: the whole file is checked
first (every error names its record and field, and the checks are those of the tables'
constraints, so PostgreSQL refusing a checked file is rare), then written in one transaction,
upserting by key; ``replace`` also deletes what the file does not mention.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, ValidationError

from softswitch.directory.models import MAX_KEYPAD_DIGITS, Flat, FlatDevice, FlatLookup, Panel

MAX_FLAT_NUMBER = 999_999
# The same shapes as the CHECK constraints of sql/migrations/0004_directory.sql.
_ACCOUNT = re.compile(r"[^@\s]+")
_FORWARD_TARGET = re.compile(r"sips?:\S+|\+?[0-9]+")
_FLAT_NUMBER = re.compile(r"0|[1-9][0-9]{0,5}")
_CITY_ID = re.compile(r"\S+")
_KEYPAD = re.compile(rf"[0-9]{{1,{MAX_KEYPAD_DIGITS}}}")

_PANEL_FIELDS = (
    "panel_id",
    "account",
    "building",
    "address",
    "flat_first",
    "flat_last",
    "flat_offset",
    "city_id",
)
_PANEL_COLUMNS = ", ".join(_PANEL_FIELDS)

# SQL only fetches the candidate flat (keypad entry + the panel's offset); whether the panel
# may ring it is Panel.flat_number's decision, so the range rule lives in one place.
_LOOKUP = f"""
SELECT {", ".join(f"p.{field}" for field in _PANEL_FIELDS)}, f.number, d.kind, d.target, d.label
FROM intercom_panel p
LEFT JOIN flat f
    ON f.building = p.building AND f.number = (%(keypad)s::bigint + p.flat_offset)::text
LEFT JOIN flat_device d ON d.building = f.building AND d.number = f.number
WHERE p.account = %(account)s
ORDER BY d.position, d.id
"""


async def lookup_flat(
    conn: psycopg.AsyncConnection[Any], panel_account: str, dialled: str
) -> FlatLookup:
    """Who "panel_account dialled N" rings: the panel, its flat and the flat's devices in order.

    ``panel`` is None when the account is no panel; ``flat`` is None when N is outside the
    panel's range or the flat has no row.
    """
    keypad = int(dialled) if _KEYPAD.fullmatch(dialled) else None
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_LOOKUP, {"account": panel_account, "keypad": keypad})
        rows = await cursor.fetchall()
    if not rows:
        return FlatLookup(panel=None, flat=None, source="database")
    panel = Panel.model_validate({field: rows[0][field] for field in _PANEL_FIELDS})
    number = panel.flat_number(dialled)
    if number is None or rows[0]["number"] != number:
        return FlatLookup(panel=panel, flat=None, source="database")
    devices = tuple(
        FlatDevice(kind=row["kind"], target=row["target"], label=row["label"])
        for row in rows
        if row["kind"] is not None
    )
    flat = Flat(building=panel.building, number=number, devices=devices)
    return FlatLookup(panel=panel, flat=flat, source="database")


def panel_problems(panel: Panel) -> list[str]:
    """What the intercom_panel constraints would refuse, as 'field: why'."""
    problems = []
    if not panel.panel_id.strip():
        problems.append("panel_id: must not be blank")
    if not _ACCOUNT.fullmatch(panel.account):
        problems.append("account: a SIP account name, without @domain or spaces")
    if not panel.building.strip():
        problems.append("building: must not be blank")
    if panel.flat_last > MAX_FLAT_NUMBER:
        problems.append(f"flat_last: at most {MAX_FLAT_NUMBER}")
    if panel.flat_first > panel.flat_last:
        problems.append(f"flat_first: {panel.flat_first} is above flat_last {panel.flat_last}")
    if abs(panel.flat_offset) > MAX_FLAT_NUMBER:
        problems.append(f"flat_offset: between -{MAX_FLAT_NUMBER} and {MAX_FLAT_NUMBER}")
    if panel.city_id is not None and not _CITY_ID.fullmatch(panel.city_id):
        problems.append("city_id: a city key without spaces, or null for no city")
    return problems


def flat_problems(flat: Flat) -> list[str]:
    """What the flat and flat_device constraints would refuse, as 'field: why'."""
    problems = []
    if not flat.building.strip():
        problems.append("building: must not be blank")
    if not _FLAT_NUMBER.fullmatch(flat.number):
        problems.append(
            f"number: a decimal 0..{MAX_FLAT_NUMBER} without leading zeros"
            " (a panel could never ring another spelling)"
        )
    first_of: dict[tuple[str, str], int] = {}
    for index, device in enumerate(flat.devices):
        if device.kind == "forward" and not _FORWARD_TARGET.fullmatch(device.target):
            problems.append(
                f"devices.{index}.target: a forward goes to a sip:/sips: URI"
                " or to digits with an optional leading +"
            )
        if device.kind != "forward" and not _ACCOUNT.fullmatch(device.target):
            problems.append(
                f"devices.{index}.target: a {device.kind} device is an account name,"
                " without @domain or spaces"
            )
        first = first_of.setdefault((device.kind, device.target), index)
        if first != index:
            problems.append(f"devices.{index}: same kind and target as devices.{first}")
    return problems


def describe_validation_error(error: ValidationError) -> list[str]:
    """Pydantic's errors as 'field.path: why' (no path when the record itself is wrong)."""
    return [
        ".".join(str(part) for part in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
        if e["loc"]
        else e["msg"]
        for e in error.errors(include_url=False)
    ]


class DirectoryFile(BaseModel):
    """A whole directory, as `directory import` reads it and `directory export` writes it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    panels: tuple[Panel, ...] = ()
    flats: tuple[Flat, ...] = ()


_Record = TypeVar("_Record", bound=BaseModel)


def parse_records(
    document: dict[str, Any],
    key: str,
    model: type[_Record],
    name_fields: tuple[str, ...],
    problems: Callable[[_Record], list[str]],
    *,
    kind: str | None = None,
) -> tuple[list[tuple[str, _Record]], list[str]]:
    """The good records of one list of an import file, each with the label its errors carry.

    Labels are "<kind> #<index> <name fields>"; ``kind`` defaults to ``key`` without its s.
    """
    items = document.get(key, [])
    if not isinstance(items, list):
        return [], [f"{key}: must be a JSON list"]
    records, errors = [], []
    for index, item in enumerate(items):
        label = f"{kind or key.removesuffix('s')} #{index}"
        if isinstance(item, dict):
            label += "".join(f" {item[f]!r}" for f in name_fields if isinstance(item.get(f), str))
        try:
            record = model.model_validate(item)
        except ValidationError as exc:
            errors += [f"{label}: {why}" for why in describe_validation_error(exc)]
            continue
        found = problems(record)
        errors += [f"{label}: {why}" for why in found]
        if not found:
            records.append((label, record))
    return records, errors


def reused_keys(
    records: list[tuple[str, _Record]], field: str, key: Callable[[_Record], Hashable]
) -> list[str]:
    """'<label>: <field> already used by <first label>' for every record repeating a key."""
    first_label: dict[Hashable, str] = {}
    errors = []
    for label, record in records:
        first = first_label.setdefault(key(record), label)
        if first != label:
            errors.append(f"{label}: {field} already used by {first}")
    return errors


def parse_document(text: str, what: str, keys: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The JSON object of an import file of lists under ``keys``, and what is wrong with its
    shape (an unusable file gives an empty object)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, [f"not JSON: {exc}"]
    if not isinstance(document, dict):
        lists = ", ".join(f'"{key}": []' for key in keys)
        return {}, [f"the file must hold a JSON object {{{lists}}}"]
    return document, [
        f"unknown key {key!r} ({what} has {' and '.join(keys)})"
        for key in document
        if key not in keys
    ]


def parse_directory_file(text: str) -> tuple[DirectoryFile, list[str]]:
    """The directory in a JSON file, and every error naming its record and field.

    The file is usable only when the error list is empty.
    """
    document, errors = parse_document(text, "a directory file", ("panels", "flats"))
    panels, panel_errors = parse_records(document, "panels", Panel, ("panel_id",), panel_problems)
    flats, flat_errors = parse_records(
        document, "flats", Flat, ("building", "number"), flat_problems
    )
    errors += panel_errors + flat_errors
    errors += reused_keys(panels, "panel_id", lambda panel: panel.panel_id)
    errors += reused_keys(panels, "account", lambda panel: panel.account)
    errors += reused_keys(flats, "building and number", lambda flat: (flat.building, flat.number))
    return DirectoryFile(
        panels=tuple(panel for _, panel in panels), flats=tuple(flat for _, flat in flats)
    ), errors


def unknown_city_problems(conn: psycopg.Connection[Any], directory: DirectoryFile) -> list[str]:
    """Panels of a parsed file naming a city the 112 pool does not have, labelled as the parse
    labels them (PostgreSQL's foreign key would refuse them with a less helpful message)."""
    wanted = sorted({panel.city_id for panel in directory.panels if panel.city_id is not None})
    known = {
        city_id
        for (city_id,) in conn.execute(
            "SELECT city_id FROM sos_city WHERE city_id = ANY(%s)", (wanted,)
        ).fetchall()
    }
    return [
        f"panel #{index} {panel.panel_id!r}: city_id: no city {panel.city_id!r} in the 112 pool"
        " (`softswitch sos import` adds cities)"
        for index, panel in enumerate(directory.panels)
        if panel.city_id is not None and panel.city_id not in known
    ]


_Key = TypeVar("_Key")
FlatKey = tuple[str, str]  # building, number


@dataclass(frozen=True)
class KeyedDiff(Generic[_Key]):
    """What an import changes in one kind of record, by key."""

    added: list[_Key]
    changed: list[_Key]
    removed: list[_Key]
    unchanged: list[_Key]


def diff_by_key(
    before: Mapping[_Key, object], after: Mapping[_Key, object], *, replace: bool
) -> KeyedDiff[_Key]:
    """Records to add, change and (with ``replace``) remove to turn ``before`` into ``after``."""
    return KeyedDiff(
        added=[key for key in after if key not in before],
        changed=[key for key in after if key in before and before[key] != after[key]],
        removed=[key for key in before if key not in after] if replace else [],
        unchanged=[key for key in after if key in before and before[key] == after[key]],
    )


@dataclass(frozen=True)
class DirectoryPlan:
    """What an import changes (the diff a dry run prints)."""

    panels: KeyedDiff[str]
    flats: KeyedDiff[FlatKey]


def _panels_by_id(directory: DirectoryFile) -> dict[str, Panel]:
    return {panel.panel_id: panel for panel in directory.panels}


def _flats_by_key(directory: DirectoryFile) -> dict[FlatKey, Flat]:
    return {(flat.building, flat.number): flat for flat in directory.flats}


def plan_directory_import(
    current: DirectoryFile, incoming: DirectoryFile, *, replace: bool
) -> DirectoryPlan:
    """Panels by panel_id and flats (with their devices) by building and number."""
    return DirectoryPlan(
        panels=diff_by_key(_panels_by_id(current), _panels_by_id(incoming), replace=replace),
        flats=diff_by_key(_flats_by_key(current), _flats_by_key(incoming), replace=replace),
    )


def current_directory(conn: psycopg.Connection[Any]) -> DirectoryFile:
    """Everything in the directory tables, in export order (flats in numeric order)."""
    with conn.cursor(row_factory=dict_row) as cursor:
        panel_rows = cursor.execute(
            f"SELECT {_PANEL_COLUMNS} FROM intercom_panel ORDER BY panel_id"
        ).fetchall()
        device_rows = cursor.execute(
            "SELECT building, number, d.kind, d.target, d.label"
            " FROM flat f LEFT JOIN flat_device d USING (building, number)"
            " ORDER BY building, length(number), number, d.position, d.id"
        ).fetchall()
    devices: dict[FlatKey, list[FlatDevice]] = {}
    for row in device_rows:
        found = devices.setdefault((row["building"], row["number"]), [])
        if row["kind"] is not None:
            found.append(FlatDevice(kind=row["kind"], target=row["target"], label=row["label"]))
    return DirectoryFile(
        panels=tuple(Panel.model_validate(row) for row in panel_rows),
        flats=tuple(
            Flat(building=building, number=number, devices=tuple(flat_devices))
            for (building, number), flat_devices in devices.items()
        ),
    )


def export_directory(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """The directory as the JSON `directory import` reads (export then import is a no-op)."""
    return current_directory(conn).model_dump(mode="json")


_UPSERT_PANEL = (
    f"INSERT INTO intercom_panel ({_PANEL_COLUMNS})"
    f" VALUES ({', '.join(f'%({field})s' for field in _PANEL_FIELDS)})"
    " ON CONFLICT (panel_id) DO UPDATE SET "
    + ", ".join(f"{field} = EXCLUDED.{field}" for field in _PANEL_FIELDS[1:])
)


def apply_directory_import(
    conn: psycopg.Connection[Any], file: DirectoryFile, *, replace: bool
) -> DirectoryPlan:
    """Write the file in one transaction (all or nothing); upsert by key, optionally replace.

    A changed flat gets its devices rewritten in the file's order; unchanged flats are left
    alone. Raises psycopg.errors.IntegrityError when PostgreSQL refuses a record (for
    example an account another panel, not in the file, already has).
    """
    with conn.transaction(), conn.cursor() as cursor:
        # Two imports at once would each plan against a state the other is changing.
        cursor.execute("LOCK TABLE intercom_panel, flat, flat_device IN SHARE ROW EXCLUSIVE MODE")
        plan = plan_directory_import(current_directory(conn), file, replace=replace)
        if plan.panels.removed:
            cursor.execute(
                "DELETE FROM intercom_panel WHERE panel_id = ANY(%s)", (plan.panels.removed,)
            )
        if plan.flats.removed:
            cursor.execute(
                "DELETE FROM flat WHERE (building, number) IN"
                " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                (
                    [building for building, _ in plan.flats.removed],
                    [number for _, number in plan.flats.removed],
                ),
            )
        panels = _panels_by_id(file)
        cursor.executemany(
            _UPSERT_PANEL,
            [panels[key].model_dump() for key in plan.panels.added + plan.panels.changed],
        )
        flats = _flats_by_key(file)
        rewritten = [flats[key] for key in plan.flats.added + plan.flats.changed]
        cursor.executemany(
            "INSERT INTO flat (building, number) VALUES (%s, %s)"
            " ON CONFLICT (building, number) DO UPDATE SET updated_at = now()",
            [(flat.building, flat.number) for flat in rewritten],
        )
        cursor.executemany(
            "DELETE FROM flat_device WHERE building = %s AND number = %s", plan.flats.changed
        )
        cursor.executemany(
            "INSERT INTO flat_device (building, number, kind, target, label, position)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (flat.building, flat.number, device.kind, device.target, device.label, position)
                for flat in rewritten
                for position, device in enumerate(flat.devices)
            ],
        )
    return plan
