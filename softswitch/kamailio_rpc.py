"""Kamailio's live state over its JSON-RPC interface: busy counts, registered contacts, dialogs.

Kamailio answers JSON-RPC over HTTP (xhttp + jsonrpcs) at ``settings.kamailio.jsonrpc_url``,
only with ``Authorization: Bearer <jsonrpc_token>`` (see kamailio_cfg/kamailio.cfg). This
module is the one place that speaks it: ``KamailioRpc`` for async services (call apps asking
"is this panel busy?"), ``call_sync`` for the stack tool's readiness probe. Answers are parsed
into typed values at this edge; every failure (unreachable, timeout, refused token, a JSON-RPC
error, an answer of the wrong shape) is a ``KamailioRpcError``.

Names shared with kamailio.cfg: the dialog profile ``account_calls`` (``#!define
ACCOUNT_CALLS``, one entry per call and account involved) and the usrloc table ``location``.
"""

from __future__ import annotations

import asyncio
import itertools
from enum import IntEnum
from types import TracebackType
from typing import Any, Final, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from softswitch.settings import KamailioSettings

ACCOUNT_CALLS_PROFILE: Final = "account_calls"
LOCATION_TABLE: Final = "location"

# usrloc's answer to ul.lookup for an AoR without bindings (a JSON-RPC error, code 500).
_AOR_NOT_FOUND: Final = "AOR not found"


class KamailioRpcError(Exception):
    """A JSON-RPC call to Kamailio failed; ``code`` is Kamailio's error code when it answered
    with one (Kamailio uses 500 for most errors, with the reason in the message)."""

    def __init__(self, method: str, reason: str, *, code: int | None = None) -> None:
        super().__init__(f"Kamailio RPC {method}: {reason}")
        self.method = method
        self.reason = reason
        self.code = code


class DialogState(IntEnum):
    """The dialog module's states (``state`` in ``dlg.list``)."""

    UNCONFIRMED = 1  # INVITE seen, no reply yet
    EARLY = 2  # provisional reply
    CONFIRMED_NA = 3  # 2xx seen, ACK pending
    CONFIRMED = 4  # call up
    DELETED = 5  # ended; listed until Kamailio frees it


class Dialog(BaseModel):
    """One entry of ``dlg.list``: the fields callers need, the rest is ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    call_id: str = Field(validation_alias="call-id")
    from_uri: str
    to_uri: str
    state: DialogState


class _ProfiledDialog(BaseModel):
    """One entry of ``dlg.profile_list``: only the dialog's profile values."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    profiles: list[dict[str, str]] = Field(default_factory=list)


class _Contact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    address: str = Field(alias="Address")


class _ContactEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    contact: _Contact = Field(alias="Contact")


class _AorBindings(BaseModel):
    """``ul.lookup`` answer: {"AoR": ..., "Contacts": [{"Contact": {"Address": ...}}]}."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    contacts: list[_ContactEntry] = Field(default_factory=list, alias="Contacts")


class _RpcError(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    code: int | None = None
    message: str = ""


class _RpcResponse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    result: Any = None
    error: _RpcError | None = None


_T = TypeVar("_T")
_PROFILE_SIZE = TypeAdapter(int)
_DIALOGS = TypeAdapter(list[Dialog])
_PROFILED_DIALOGS = TypeAdapter(list[_ProfiledDialog])
_AOR_BINDINGS = TypeAdapter(_AorBindings)


def _request_body(method: str, params: tuple[str | int, ...], request_id: int) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params:
        body["params"] = list(params)
    return body


def _headers(settings: KamailioSettings) -> dict[str, str]:
    token = settings.jsonrpc_token.get_secret_value() if settings.jsonrpc_token else ""
    return {"Authorization": f"Bearer {token}"}


def _result(method: str, status_code: int, content: bytes) -> object:
    """The ``result`` of a JSON-RPC answer, or KamailioRpcError.

    Kamailio answers JSON-RPC errors with HTTP 500 and an error body, so the body is read
    before the status; 401 (wrong token) and 404 (wrong path) come as plain text.
    """
    try:
        response = _RpcResponse.model_validate_json(content)
    except ValidationError:
        raise KamailioRpcError(
            method, f"HTTP {status_code}, not a JSON-RPC answer: {content[:200]!r}"
        ) from None
    if response.error is not None:
        raise KamailioRpcError(method, response.error.message, code=response.error.code)
    if status_code != 200:
        raise KamailioRpcError(method, f"HTTP {status_code}")
    return response.result


def _parsed(method: str, adapter: TypeAdapter[_T], result: object) -> _T:
    try:
        return adapter.validate_python(result)
    except ValidationError as exc:
        raise KamailioRpcError(method, f"unexpected answer: {exc.errors()[:3]}") from None


class KamailioRpc:
    """Async JSON-RPC client of one Kamailio; use as ``async with KamailioRpc(settings) as rpc``.

    Each call is bounded by ``settings.jsonrpc_timeout_seconds`` in all (connect included):
    the callers are call apps deciding while a caller waits. No retries: Kamailio closes the
    HTTP connection after each answer (kamailio.cfg), so every call connects afresh anyway,
    and whether to retry is the caller's decision.
    """

    def __init__(
        self,
        settings: KamailioSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> KamailioRpc:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Create the HTTP client (no network I/O: Kamailio is first contacted by a call)."""
        if self._client is None:
            # No kept-alive connections: Kamailio's TCP workers close idle HTTP connections
            # on their own schedule, and a request sent on one it just closed fails with
            # "Server disconnected". A new loopback connection per call costs ~0.1 ms.
            self._client = httpx.AsyncClient(
                headers=_headers(self._settings),
                timeout=self._settings.jsonrpc_timeout_seconds,
                transport=self._transport,
                limits=httpx.Limits(max_keepalive_connections=0),
            )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(self, method: str, *params: str | int) -> object:
        """One JSON-RPC call; the untyped ``result``. Prefer the typed methods below."""
        if self._client is None:
            raise RuntimeError("KamailioRpc used outside `async with` (or after aclose())")
        timeout = self._settings.jsonrpc_timeout_seconds
        body = _request_body(method, params, next(self._ids))
        try:
            # httpx bounds each phase (connect, write, read) on its own; one budget in all.
            async with asyncio.timeout(timeout):
                response = await self._client.post(self._settings.jsonrpc_url, json=body)
        except TimeoutError:
            raise KamailioRpcError(method, f"no answer within {timeout}s") from None
        except httpx.HTTPError as exc:
            raise KamailioRpcError(method, f"unreachable: {type(exc).__name__}: {exc}") from exc
        return _result(method, response.status_code, response.content)

    async def probe(self) -> bool:
        """Health probe: does Kamailio answer (and accept our token)?"""
        try:
            await self.call("core.version")
        except KamailioRpcError:
            return False
        return True

    async def account_calls(self, account: str) -> int:
        """How many calls (INVITE dialogs, ringing or up) involve ``account`` right now,
        as caller or callee; 0 for an account Kamailio has never seen."""
        method = "dlg.profile_get_size"
        result = await self.call(method, ACCOUNT_CALLS_PROFILE, account)
        return _parsed(method, _PROFILE_SIZE, result)

    async def accounts_on_calls(self) -> frozenset[str]:
        """Every account with at least one call now: one RPC however many accounts there are
        (the dialogs of profile ``account_calls``, each with the accounts it counts)."""
        method = "dlg.profile_list"
        result = await self.call(method, ACCOUNT_CALLS_PROFILE)
        return frozenset(
            profile[ACCOUNT_CALLS_PROFILE]
            for dialog in _parsed(method, _PROFILED_DIALOGS, result)
            for profile in dialog.profiles
            if ACCOUNT_CALLS_PROFILE in profile
        )

    async def contacts(self, account: str) -> list[str]:
        """The contact URIs ``account`` is registered with; [] when it is not registered.

        The AoR is sent as ``account@sip_domain``, which usrloc accepts with and without
        ``use_domain`` (without, it keeps only the user part).
        """
        method = "ul.lookup"
        aor = account if "@" in account else f"{account}@{self._settings.sip_domain}"
        try:
            result = await self.call(method, LOCATION_TABLE, aor)
        except KamailioRpcError as exc:
            if exc.reason.startswith(_AOR_NOT_FOUND):
                return []
            raise
        bindings = _parsed(method, _AOR_BINDINGS, result)
        return [entry.contact.address for entry in bindings.contacts]

    async def dialogs(self) -> list[Dialog]:
        """Every dialog Kamailio tracks, ended ones not yet freed included (state DELETED)."""
        method = "dlg.list"
        return _parsed(method, _DIALOGS, await self.call(method))


def call_sync(settings: KamailioSettings, method: str, *params: str | int) -> object:
    """One blocking JSON-RPC call, for synchronous tools (the stack's readiness probe).

    Same request, answer parsing and errors as ``KamailioRpc.call``.
    """
    timeout = settings.jsonrpc_timeout_seconds
    try:
        response = httpx.post(
            settings.jsonrpc_url,
            json=_request_body(method, params, 1),
            headers=_headers(settings),
            timeout=timeout,
        )
    except httpx.TimeoutException:
        raise KamailioRpcError(method, f"no answer within {timeout}s") from None
    except httpx.HTTPError as exc:
        raise KamailioRpcError(method, f"unreachable: {type(exc).__name__}: {exc}") from exc
    return _result(method, response.status_code, response.content)
