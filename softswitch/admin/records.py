"""What the record resources (routes, directory, ACD, 112 pool) share.

A PUT body is the record as the import file and `GET` spell it, key included; the key must be
the one in the path, so `GET` then `PUT` round-trips. The record is checked exactly as an
import checks it (the store's model, then its problem list: 422; then its references against
the database: 409), and written by the store's import function as a one-record import without
``replace``, which upserts it in one transaction and leaves every other record alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Response

from softswitch.admin.errors import (
    ApiError,
    ErrorBody,
    FieldError,
    import_fields,
    invalid,
    problem_fields,
)

# What every authenticated operation may answer besides its success.
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "no token, or an unknown or revoked one"},
    403: {"model": ErrorBody, "description": "the token's role does not permit this"},
    422: {"model": ErrorBody, "description": "invalid input, field by field"},
    429: {"model": ErrorBody, "description": "too many failed authentications from the address"},
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    409: {"model": ErrorBody, "description": "conflicts with what the database holds"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such record"}
}

Replace = Annotated[
    bool, Query(description="also delete every record of these kinds the body does not list")
]
DryRun = Annotated[bool, Query(description="check and show the changes, write nothing")]


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Annotated[bytes, Depends(_raw_body)]


def body_text(raw: bytes) -> str:
    """An import body as the stores' file parsers read it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, f"the body is not UTF-8: {exc}") from None


def same_key(field: str, in_body: str, in_path: str) -> None:
    """The body's key must be the path's: a PUT never renames nor writes another record."""
    if in_body != in_path:
        raise invalid([FieldError(field=field, message=f"must be {in_path!r}, as in the path")])


def refuse_invalid(problems: list[str]) -> None:
    """422 with the store's "field: why" problems of one record, when there are any."""
    if problems:
        raise invalid(problem_fields(problems))


def refuse_conflicts(problems: list[str], *, single: bool) -> None:
    """409 with the store's reference problems (what the record names that is not stored)."""
    if problems:
        raise ApiError(
            409, "conflicts with what the database holds", import_fields(problems, single=single)
        )


def refuse_import_errors(errors: list[str]) -> None:
    """422 with every error of an import body (nothing is written)."""
    if errors:
        raise invalid(import_fields(errors), f"{len(errors)} error(s); nothing imported")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}")


def deleted(done: bool, what: str) -> Response:
    """204 when the record was deleted; 404 "no <what>" when there was none to delete."""
    if not done:
        raise not_found(what)
    return Response(status_code=204)


Record = TypeVar("Record")


def find(records: Iterable[Record], matches: Callable[[Record], bool], what: str) -> Record:
    """The record ``matches`` picks; 404 "no <what>" when there is none."""
    found = next((record for record in records if matches(record)), None)
    if found is None:
        raise not_found(what)
    return found


def created_if(response: Response, added: bool) -> None:
    """201 for a record the PUT created, 200 for one it replaced."""
    response.status_code = 201 if added else 200
