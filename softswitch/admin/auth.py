"""Who may call the admin API: bearer tokens, roles, and the brake on guessing tokens.

A token is 32 random bytes (URL-safe text) shown once; the database keeps only its SHA-256,
so comparing a presented token is one indexed lookup of its digest. Roles are ordered sets of
permissions: ``read_only`` reads everything, ``supervisor`` also acts on the ACD's waiting
callers and agents, ``admin`` may do everything.

Failed authentications are counted per client address in a sliding window of one minute;
at ``auth_failures_per_minute`` failures the address gets 429 (with Retry-After) for every
request, valid token or not, until the oldest failure leaves the window. Requests refused
with 429 do not count, so a blocked client is free again a minute after its failures, however
long it keeps knocking. ``FailureWindow`` is the pure rule (time passed in); ``Authenticator``
adds the clock, a lock (FastAPI runs sync dependencies on worker threads), logs and metrics.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Final, Literal, get_args

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from softswitch.admin.context import RequestDatabase, admin_context, request_database
from softswitch.admin.errors import ApiError
from softswitch.admin.store import authenticate

log = logging.getLogger("softswitch.admin.auth")

Role = Literal["admin", "supervisor", "read_only"]
ROLES: tuple[Role, ...] = get_args(Role)
Permission = Literal["read", "supervise", "administer"]
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    "read_only": frozenset({"read"}),
    "supervisor": frozenset({"read", "supervise"}),
    "admin": frozenset({"read", "supervise", "administer"}),
}
_ROLE_OF: Final[dict[str, Role]] = {role: role for role in ROLES}
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # admin_token_name_shape
WINDOW_SECONDS: Final = 60.0

AUTH_FAILURES = Counter(
    "softswitch_admin_auth_failures_total",
    "Admin API requests refused with 401, by reason",
    ["reason"],
)
RATE_LIMITED = Counter(
    "softswitch_admin_rate_limited_total",
    "Admin API requests refused with 429 (too many failed authentications from the address)",
)


def permits(role: Role, permission: Permission) -> bool:
    """Whether a token of ``role`` may do what needs ``permission``."""
    return permission in ROLE_PERMISSIONS[role]


def new_token() -> str:
    """A fresh token: 32 random bytes as URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """What the database keeps of a token (admin_token.token_sha256)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class FailureWindow:
    """Failed authentications per client in the last ``window_seconds``; pure (time passed in).

    Only the last ``limit`` failures of a client matter, so that is all it keeps; clients
    whose failures have all left the window are forgotten.
    """

    def __init__(self, limit: int, window_seconds: float = WINDOW_SECONDS) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.limit = limit
        self.window_seconds = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        failures = self._recent(client, now)
        if len(failures) < self.limit:
            return None
        # The oldest of the last `limit` failures is the first to leave the window.
        return failures[0] + self.window_seconds - now

    def record_failure(self, client: str, now: float) -> None:
        failures = self._recent(client, now)
        failures.append(now)
        self._failures[client] = failures
        if len(self._failures) > 4 * 1024:
            self.forget_idle(now)

    def forget_idle(self, now: float) -> None:
        """Drop clients with no failure inside the window (bounds memory under a scan)."""
        for client in [c for c, f in self._failures.items() if f[-1] <= now - self.window_seconds]:
            del self._failures[client]

    def clients(self) -> int:
        return len(self._failures)

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client, deque(maxlen=self.limit))
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if not failures:
            self._failures.pop(client, None)
        return failures


@dataclass(frozen=True)
class Principal:
    """The holder of the token a request came with."""

    name: str
    role: Role


class Authenticator:
    """Checks bearer tokens against the database, with ``FailureWindow`` in front."""

    def __init__(
        self, failures_per_minute: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = FailureWindow(failures_per_minute)
        self._clock = clock
        self._lock = threading.Lock()

    def authenticate(self, client: str, token: str | None, database: RequestDatabase) -> Principal:
        """The token's holder; ApiError 429 while ``client`` is blocked, 401 for a missing,
        unknown or revoked token (counted against ``client`` and logged, without the token)."""
        with self._lock:
            wait = self._window.retry_after(client, self._clock())
        if wait is not None:
            RATE_LIMITED.inc()
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                f"too many failed authentications from {client}; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        if not token:
            self._failed(client, "missing")
            raise _unauthenticated("missing bearer token (Authorization: Bearer <token>)")
        found = authenticate(database.connection(), token_digest(token))
        if found is None:
            self._failed(client, "unknown")
            raise _unauthenticated("unknown or revoked token")
        name, role_text = found
        role = _ROLE_OF.get(role_text)
        if role is None:  # the table's CHECK makes this impossible; never widen access
            self._failed(client, "unknown")
            raise _unauthenticated("unknown or revoked token")
        return Principal(name=name, role=role)

    def _failed(self, client: str, reason: str) -> None:
        with self._lock:
            self._window.record_failure(client, self._clock())
        AUTH_FAILURES.labels(reason).inc()
        log.warning(
            "admin API authentication failed",
            extra={"fields": {"client": client, "reason": reason}},
        )


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="softswitch"'})


_bearer = HTTPBearer(
    auto_error=False,
    description="A token from `softswitch admin token add NAME --role ROLE`",
)


def require(permission: Permission) -> Callable[..., Principal]:
    """A FastAPI dependency: the request's principal, refused unless its role permits
    ``permission`` (401 without a valid token, 403 with a token of too small a role)."""

    def principal(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        database: Annotated[RequestDatabase, Depends(request_database)],
    ) -> Principal:
        client = request.client.host if request.client else "unknown"
        token = credentials.credentials if credentials else None
        found = admin_context(request).authenticator.authenticate(client, token, database)
        if not permits(found.role, permission):
            raise ApiError(403, f"token {found.name!r} ({found.role}) may not {permission}")
        return found

    principal.__name__ = f"require_{permission}"
    return principal


READ = Depends(require("read"))
SUPERVISE = Depends(require("supervise"))
ADMINISTER = Depends(require("administer"))
