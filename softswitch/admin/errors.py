"""Every error of the admin API as one JSON shape, and the rule for its status code.

Body: ``{"error": "what went wrong", "fields": [{"field": "match.callee", "message": "..."}]}``
(``fields`` lists what is wrong with the input, field by field, and is empty otherwise).

- 422: the request is wrong whatever the database holds: a value the importers' models or
  checks refuse (the same models and checks as `softswitch ... import`), or a value a CHECK
  constraint or a column type of PostgreSQL refuses;
- 409: it conflicts with what is stored: a reference to a record that does not exist, a
  unique key another record has, a record others still reference;
- 503: a part the API needs (PostgreSQL, Kamailio, the ACD app) does not answer.

Nothing a client sends may become a 500, and a refused write leaves nothing written (the
stores write in one transaction).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic_core import ErrorDetails
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("softswitch.admin")

BODY = "(body)"  # the field of an error about the whole body or record


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str
    fields: list[FieldError] = []


class ApiError(Exception):
    """An answer other than 2xx, raised anywhere in a handler."""

    def __init__(
        self,
        status: int,
        error: str,
        fields: Sequence[FieldError] = (),
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.fields = list(fields)
        self.headers = dict(headers or {})


def invalid(fields: Sequence[FieldError], error: str = "invalid request") -> ApiError:
    return ApiError(422, error, fields)


def _message(error: ErrorDetails) -> str:
    return error["msg"].removeprefix("Value error, ")


def fields_of(errors: Sequence[ErrorDetails], *, skip: int = 0) -> list[FieldError]:
    """Pydantic's errors as fields ``a.0.b``; ``skip`` drops leading parts of each location
    (FastAPI's "body", "query", "path")."""
    return [
        FieldError(
            # A body that is no JSON is located at the offending character: not a field.
            field=BODY
            if error["type"] == "json_invalid"
            else ".".join(str(part) for part in error["loc"][skip:]) or BODY,
            message=_message(error),
        )
        for error in errors
    ]


_FIELD = re.compile(r"(?P<field>[A-Za-z_]\w*(?:\.\w+)*): (?P<why>.*)", re.S)
# "<kind> #<index>", then the record's name fields as Python reprs (see parse_records).
_REPR = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_LABEL = re.compile(rf"(?P<kind>[a-z]+) #(?P<index>\d+)(?: {_REPR})*: (?P<rest>.*)", re.S)
# Where each kind of record sits in its import body; routes are a bare list.
_LIST_OF = {
    "route": "",
    "panel": "panels",
    "flat": "flats",
    "city": "cities",
    "number": "numbers",
    "queue": "queues",
    "agent": "agents",
}


def problem_fields(problems: Sequence[str], *, prefix: str = "") -> list[FieldError]:
    """The stores' "field: why" problems as fields (a problem without a field is the record's)."""
    fields = []
    for problem in problems:
        found = _FIELD.fullmatch(problem)
        if found is None or found["field"] == "route":  # routing's name for "the record"
            fields.append(FieldError(field=prefix.rstrip(".") or BODY, message=problem))
        else:
            fields.append(FieldError(field=prefix + found["field"], message=found["why"]))
    return fields


def import_fields(errors: Sequence[str], *, single: bool = False) -> list[FieldError]:
    """The stores' import errors ("agent #1 'x': queues.0.queue_id: no queue 'q'") as fields
    of the import body ("agents.1.queues.0.queue_id"); ``single``: of a one-record body."""
    fields: list[FieldError] = []
    for error in errors:
        labelled = _LABEL.fullmatch(error)
        if labelled is None or labelled["kind"] not in _LIST_OF:
            fields += problem_fields([error])
            continue
        kind, rest = labelled["kind"], labelled["rest"]
        listed = _LIST_OF[kind]
        prefix = "" if single else ".".join(p for p in (listed, labelled["index"]) if p) + "."
        # Routing joins a route's errors with "; " (describe_error); the others give one each.
        parts = _route_problems(rest) if kind == "route" else [rest]
        fields += problem_fields(parts, prefix=prefix)
    return fields


def _route_problems(text: str) -> list[str]:
    problems: list[str] = []
    for part in text.split("; "):
        if problems and _FIELD.fullmatch(part) is None:
            problems[-1] += f"; {part}"  # a message that itself holds "; "
        else:
            problems.append(part)
    return problems


def _json(
    status: int,
    error: str,
    fields: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=error, fields=list(fields)).model_dump()
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _database_refusal(exc: psycopg.Error) -> str:
    diag = exc.diag
    constraint = f" ({diag.constraint_name})" if diag.constraint_name else ""
    detail = f": {diag.message_detail}" if diag.message_detail else ""
    primary = diag.message_primary or str(exc).splitlines()[0]
    return f"refused by the database{constraint}: {primary}{detail}"


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _json(exc.status, exc.error, exc.fields, exc.headers)


async def _request_invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors: list[ErrorDetails] = list(exc.errors())
    return _json(422, "invalid request", fields_of(errors, skip=1))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _json(exc.status_code, str(exc.detail), headers=exc.headers)


async def _bad_value(_: Request, exc: Exception) -> JSONResponse:
    # A CHECK constraint, NOT NULL, a column type or a value PostgreSQL cannot store (NUL).
    assert isinstance(exc, psycopg.Error)
    return _json(422, _database_refusal(exc))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, psycopg.Error)
    return _json(409, _database_refusal(exc))


async def _not_unicode(_: Request, exc: Exception) -> JSONResponse:
    return _json(422, f"text must be valid Unicode: {exc}")


async def _database_down(_: Request, exc: Exception) -> JSONResponse:
    log.warning("admin API: database unavailable: %s", exc)
    return _json(503, "the database is unavailable; try again later", headers={"Retry-After": "5"})


async def _schema_missing(_: Request, exc: Exception) -> JSONResponse:
    log.error("admin API: %s", exc)
    return _json(503, "the database schema is not up to date: run `softswitch db upgrade`")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every expected failure into ``ErrorBody``."""
    handlers: list[tuple[type[Exception], Any]] = [
        (ApiError, _api_error),
        (RequestValidationError, _request_invalid),
        (StarletteHTTPException, _http_error),
        (psycopg.errors.CheckViolation, _bad_value),
        (psycopg.errors.NotNullViolation, _bad_value),
        (psycopg.DataError, _bad_value),
        (psycopg.IntegrityError, _conflict),
        (UnicodeError, _not_unicode),
        (psycopg.OperationalError, _database_down),
        (psycopg.errors.UndefinedTable, _schema_missing),
    ]
    for exception, handler in handlers:
        app.add_exception_handler(exception, handler)
