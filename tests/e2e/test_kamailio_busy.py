"""Busy state per account and push wait, through real Kamailio, Asterisk and sipp.

Kamailio counts every call of one of our accounts in its dialog profile ``account_calls``
(read with ``KamailioRpc.account_calls``): the caller's and the callee's account once each,
also when a call crosses Kamailio twice (routed to an account, or through Asterisk), and the
count drops when the call ends however it ends. An INVITE from Asterisk with
``X-Softswitch-Push-Wait`` waits for the account to register instead of failing with 404.
Calls from Asterisk are originated over ARI by a Stasis app of the test's own (``AriTestApp``).
Accounts are the test's own and removed after, registrations included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
import psycopg
import pytest
from pydantic import SecretStr

from softswitch.accounts import upsert_account
from softswitch.kamailio_rpc import (
    ACCOUNT_CALLS_PROFILE,
    DialogState,
    KamailioRpc,
    KamailioRpcError,
    call_sync,
)
from softswitch.settings import AriSettings, Settings
from tests.e2e.conftest import RoutingServiceHandle
from tests.e2e.sipp import SippResult, run_sipp, sipp_server

pytestmark = pytest.mark.e2e

PUSH_WAIT_HEADER = "X-Softswitch-Push-Wait"
T = TypeVar("T")


@dataclass(frozen=True)
class Account:
    name: str
    password: str


@pytest.fixture
def new_account(stack_settings: Settings) -> Iterator[Callable[[], Account]]:
    """Creates accounts of the test's own; removes them and their registrations after
    (from Kamailio's memory too: usrloc keeps bindings in memory, PostgreSQL is its copy)."""
    created: list[Account] = []

    def create() -> Account:
        account = Account(f"busy{secrets.token_hex(4)}", secrets.token_hex(8))
        upsert_account(
            stack_settings.database.url,
            account.name,
            stack_settings.kamailio.sip_domain,
            account.password,
        )
        created.append(account)
        return account

    yield create
    names = [account.name for account in created]
    for name in names:
        with contextlib.suppress(KamailioRpcError):  # never registered
            call_sync(stack_settings.kamailio, "ul.rm", "location", name)
    with psycopg.connect(stack_settings.database.url) as conn:
        conn.execute("DELETE FROM subscriber WHERE username = ANY(%s)", (names,))
        conn.execute("DELETE FROM location WHERE username = ANY(%s)", (names,))


@pytest.fixture
async def rpc(stack_settings: Settings) -> AsyncIterator[KamailioRpc]:
    async with KamailioRpc(stack_settings.kamailio) as client:
        yield client


def kamailio_address(settings: Settings) -> str:
    return f"{settings.kamailio.sip_ip}:{settings.kamailio.sip_port}"


def register(settings: Settings, account: Account, contact_port: int, workdir: Path) -> None:
    registration = run_sipp(
        "register_auth.xml",
        kamailio_address(settings),
        service=account.name,
        workdir=workdir,
        timeout_s=10,
        extra=("-au", account.name, "-ap", account.password,
               "-key", "contact_port", str(contact_port)),
    )  # fmt: skip
    assert (registration.successful, registration.failed) == (1, 0), registration.output


def route_to_account(routing: RoutingServiceHandle, settings: Settings, account: str) -> None:
    """Calls to ``account`` go to its registered devices (Kamailio's second pass)."""
    routing.add_routes(
        {"name": f"e2e: account {account}", "priority": 100,
         "match": {"callee": f"^{account}$"}, "action": "relay",
         "destinations": [f"sip:{account}@{settings.kamailio.sip_domain}"]}
    )  # fmt: skip


async def call_as(
    settings: Settings, caller: Account, callee: str, workdir: Path, *, scenario: str, hold_ms: int
) -> SippResult:
    """sipp calling ``callee`` as ``caller`` (From sip:<caller>@<our domain>), in a thread."""
    return await asyncio.to_thread(
        run_sipp,
        scenario,
        kamailio_address(settings),
        service=callee,
        workdir=workdir,
        timeout_s=20,
        extra=("-key", "caller", caller.name, "-d", str(hold_ms)),
    )


async def eventually(
    read: Callable[[], Awaitable[T]], expected: T, *, timeout: float, what: str
) -> None:
    """Poll ``read`` until it returns ``expected``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := await read()) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {value!r}, expected {expected!r} within {timeout}s")
        await asyncio.sleep(0.05)


def busy_counts(rpc: KamailioRpc, *accounts: Account) -> Callable[[], Awaitable[list[int]]]:
    async def read() -> list[int]:
        return list(await asyncio.gather(*(rpc.account_calls(a.name) for a in accounts)))

    return read


class AriTestApp:
    """A Stasis app of the test's own: its events over ARI's websocket, REST via httpx.

    Events are kept, so a wait never misses one that arrived before it started.
    """

    def __init__(self, settings: AriSettings) -> None:
        self.name = f"e2e-busy-{uuid.uuid4().hex[:8]}"
        password = settings.password.get_secret_value() if settings.password else ""
        self._auth = (settings.user, password)
        self._base = settings.url.rstrip("/") + "/ari"
        self._events: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self.rest = httpx.AsyncClient(base_url=self._base, auth=self._auth, timeout=5)

    async def __aenter__(self) -> AriTestApp:
        parts = urlsplit(self._base)
        user, password = self._auth
        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(
            f"ws://{parts.netloc}{parts.path}/events",
            params={"app": self.name, "api_key": f"{user}:{password}"},
        )
        self._reader = asyncio.create_task(self._read(ws))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._session is not None:
            await self._session.close()
        await self.rest.aclose()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self._events.append(json.loads(message.data))
                self._arrived.set()

    async def event(
        self, event_type: str, channel_id: str | None = None, *, timeout: float
    ) -> dict[str, Any]:
        """The first event of ``event_type`` (for ``channel_id`` when given)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events:
                if event["type"] == event_type and (
                    channel_id is None or event.get("channel", {}).get("id") == channel_id
                ):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(e["type"], e.get("channel", {}).get("id")) for e in self._events]
                raise AssertionError(f"no {event_type} for {channel_id} in {timeout}s: {seen}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def originate(
        self, endpoint: str, *, caller_id: str = "", variables: dict[str, str] | None = None
    ) -> str:
        response = await self.rest.post(
            "/channels",
            params={"endpoint": endpoint, "app": self.name, "callerId": caller_id},
            json={"variables": variables or {}},
        )
        response.raise_for_status()
        return str(response.json()["id"])

    async def answer(self, channel_id: str) -> None:
        (await self.rest.post(f"/channels/{channel_id}/answer")).raise_for_status()

    async def hangup(self, channel_id: str) -> None:
        response = await self.rest.delete(f"/channels/{channel_id}")
        assert response.status_code in (204, 404), response.text  # 404: already gone


@pytest.fixture
async def ari_app(stack_settings: Settings) -> AsyncIterator[AriTestApp]:
    async with AriTestApp(stack_settings.ari) as app:
        yield app


def account_endpoint(settings: Settings, account: Account) -> str:
    """Asterisk's way to an account: its `kamailio` endpoint, R-URI sip:<account>@Kamailio."""
    return f"PJSIP/kamailio/sip:{account.name}@{kamailio_address(settings)}"


# ---- busy state ----


async def test_call_between_two_accounts_counts_each_until_bye(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    rpc: KamailioRpc,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    caller, callee = new_account(), new_account()
    route_to_account(routing, stack_settings, callee.name)
    counts = busy_counts(rpc, caller, callee)
    with sipp_server("uas_no180.xml", workdir=tmp_path) as phone:
        register(stack_settings, callee, phone.port, tmp_path)
        call = asyncio.create_task(
            call_as(stack_settings, caller, callee.name, tmp_path,
                    scenario="uac_account_call.xml", hold_ms=3000)
        )  # fmt: skip
        await eventually(counts, [1, 1], timeout=3, what="calls of caller, callee while up")
        assert {caller.name, callee.name} <= await rpc.accounts_on_calls()
        result = await call
        assert (result.successful, result.failed) == (1, 0), result.output
        await eventually(counts, [0, 0], timeout=2, what="calls of caller, callee after BYE")
        assert not {caller.name, callee.name} & await rpc.accounts_on_calls()
        assert (await asyncio.to_thread(phone.result)).successful == 1


async def test_cancelled_call_releases_both_accounts(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    rpc: KamailioRpc,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    caller, callee = new_account(), new_account()
    route_to_account(routing, stack_settings, callee.name)
    counts = busy_counts(rpc, caller, callee)
    with sipp_server("uas_ring_until_cancel.xml", workdir=tmp_path) as phone:
        register(stack_settings, callee, phone.port, tmp_path)
        call = asyncio.create_task(
            call_as(stack_settings, caller, callee.name, tmp_path,
                    scenario="uac_account_cancel.xml", hold_ms=2000)
        )  # fmt: skip
        await eventually(counts, [1, 1], timeout=3, what="calls of caller, callee while ringing")
        result = await call
        assert (result.successful, result.failed) == (1, 0), result.output  # CANCEL -> 487
        await eventually(counts, [0, 0], timeout=2, what="calls after CANCEL")
        assert (await asyncio.to_thread(phone.result)).received("CANCEL")


async def test_failed_branch_releases_the_account_while_the_call_goes_on(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    rpc: KamailioRpc,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    """The callee's device is busy; the route fails over to another destination (a voice
    mailbox, say): the call goes on, the callee's account is free again."""
    caller, callee = new_account(), new_account()
    busy = {"CODE": "486", "REASON": "Busy Here"}
    counts = busy_counts(rpc, caller, callee)
    with (
        sipp_server("uas_reject.tmpl.xml", workdir=tmp_path, values=busy) as phone,
        sipp_server("uas_no180.xml", workdir=tmp_path) as mailbox,
    ):
        register(stack_settings, callee, phone.port, tmp_path)
        routing.add_routes(
            {"name": f"e2e: {callee.name} or mailbox", "priority": 100,
             "match": {"callee": f"^{callee.name}$"}, "action": "relay",
             "flags": ["failover_busy"],
             "destinations": [f"sip:{callee.name}@{stack_settings.kamailio.sip_domain}",
                              f"sip:mailbox@127.0.0.1:{mailbox.port}"]}
        )  # fmt: skip
        call = asyncio.create_task(
            call_as(stack_settings, caller, callee.name, tmp_path,
                    scenario="uac_account_call.xml", hold_ms=3000)
        )  # fmt: skip
        await eventually(counts, [1, 0], timeout=3, what="calls of caller, callee at the mailbox")
        result = await call
        assert (result.successful, result.failed) == (1, 0), result.output
        await eventually(counts, [0, 0], timeout=2, what="calls after BYE")
        assert (await asyncio.to_thread(mailbox.result)).successful == 1


async def test_parallel_ring_loser_is_released_when_another_branch_answers(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    rpc: KamailioRpc,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    """Two accounts ring in parallel; one answers: the other is not busy for the whole call
    (tm drops the loser's 487 without a reply route once a 2xx went out, so the release
    happens on the 2xx)."""
    caller, winner, loser = new_account(), new_account(), new_account()
    answer_late = {"ANSWER_MS": "600"}  # the loser rings first, so it is surely counted
    counts = busy_counts(rpc, caller, winner, loser)
    domain = stack_settings.kamailio.sip_domain
    with (
        sipp_server("uas_ring_then_answer.tmpl.xml", workdir=tmp_path, values=answer_late) as phone,
        sipp_server("uas_ring_until_cancel.xml", workdir=tmp_path) as other,
    ):
        register(stack_settings, winner, phone.port, tmp_path)
        register(stack_settings, loser, other.port, tmp_path)
        routing.add_routes(
            {"name": f"e2e: ring group {winner.name}", "priority": 100,
             "match": {"callee": f"^{winner.name}$"}, "action": "relay", "parallel": True,
             "destinations": [f"sip:{winner.name}@{domain}", f"sip:{loser.name}@{domain}"]}
        )  # fmt: skip
        call = asyncio.create_task(
            call_as(stack_settings, caller, winner.name, tmp_path,
                    scenario="uac_account_call.xml", hold_ms=3000)
        )  # fmt: skip
        await eventually(counts, [1, 1, 1], timeout=3, what="calls while both ring")
        await eventually(counts, [1, 1, 0], timeout=3, what="calls once the winner answered")
        result = await call
        assert (result.successful, result.failed) == (1, 0), result.output
        await eventually(counts, [0, 0, 0], timeout=2, what="calls after BYE")
        assert (await asyncio.to_thread(other.result)).received("CANCEL")


async def test_call_through_asterisk_counts_each_account_once(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    rpc: KamailioRpc,
    ari_app: AriTestApp,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    """An intercom panel's call that a Stasis app bridges to a device crosses Kamailio twice
    (panel -> Kamailio -> Asterisk, Asterisk -> Kamailio -> device) as two SIP calls, the
    second with the panel as caller ID: the panel counts once, the device once."""
    panel, device = new_account(), new_account()
    routing.add_routes(
        {"name": f"e2e: {device.name} via a Stasis app", "priority": 100,
         "match": {"callee": f"^{device.name}$"}, "action": "app", "app": ari_app.name}
    )  # fmt: skip
    counts = busy_counts(rpc, panel, device)
    with sipp_server("uas_no180.xml", workdir=tmp_path) as phone:
        register(stack_settings, device, phone.port, tmp_path)
        call = asyncio.create_task(
            call_as(stack_settings, panel, device.name, tmp_path,
                    scenario="uac_account_call.xml", hold_ms=4000)
        )  # fmt: skip
        incoming = (await ari_app.event("StasisStart", timeout=5))["channel"]["id"]
        await ari_app.answer(incoming)
        outgoing = await ari_app.originate(
            account_endpoint(stack_settings, device), caller_id=f"{panel.name} <{panel.name}>"
        )
        await ari_app.event("StasisStart", outgoing, timeout=5)  # the device answered
        await eventually(counts, [1, 1], timeout=2, what="calls of panel, device")
        result = await call  # the panel hangs up after its hold time
        assert (result.successful, result.failed) == (1, 0), result.output
        await ari_app.hangup(outgoing)
        await eventually(counts, [0, 0], timeout=3, what="calls after both hung up")
        invite = (await asyncio.to_thread(phone.result)).received("INVITE")[0]
        assert f"<sip:{panel.name}@" in invite.split("From:", 1)[1].split("\n", 1)[0]


# ---- push wait ----


async def test_push_wait_rings_the_account_as_soon_as_it_registers(
    stack_settings: Settings,
    rpc: KamailioRpc,
    ari_app: AriTestApp,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    app = new_account()
    with sipp_server("uas_no180.xml", workdir=tmp_path) as phone:
        started = time.monotonic()
        channel = await ari_app.originate(
            account_endpoint(stack_settings, app),
            variables={f"PJSIP_HEADER(add,{PUSH_WAIT_HEADER})": "10"},
        )
        await asyncio.sleep(1.5)  # the push notification wakes the app up
        assert await rpc.account_calls(app.name) == 1  # busy while it is being woken up
        await asyncio.to_thread(register, stack_settings, app, phone.port, tmp_path)
        await ari_app.event("StasisStart", channel, timeout=3)  # the app answered
        assert time.monotonic() - started < 5
        assert await rpc.account_calls(app.name) == 1
        await ari_app.hangup(channel)
        answered = await asyncio.to_thread(phone.result)
    assert (answered.successful, answered.failed) == (1, 0), answered.output
    (invite,) = answered.received("INVITE")
    assert "X-Softswitch-" not in invite  # our headers never leave
    await eventually(lambda: rpc.account_calls(app.name), 0, timeout=2, what="calls after BYE")


async def test_unregistered_account_without_push_wait_fails_at_once(
    stack_settings: Settings,
    rpc: KamailioRpc,
    ari_app: AriTestApp,
    new_account: Callable[[], Account],
) -> None:
    app = new_account()
    started = time.monotonic()
    channel = await ari_app.originate(account_endpoint(stack_settings, app))
    destroyed = await ari_app.event("ChannelDestroyed", channel, timeout=3)
    assert time.monotonic() - started < 2
    assert destroyed["cause"] == 1, destroyed  # unallocated number: Kamailio's 404
    assert await rpc.account_calls(app.name) == 0


async def test_push_wait_ends_with_480_when_the_account_does_not_register(
    stack_settings: Settings,
    rpc: KamailioRpc,
    ari_app: AriTestApp,
    new_account: Callable[[], Account],
) -> None:
    app = new_account()
    started = time.monotonic()
    channel = await ari_app.originate(
        account_endpoint(stack_settings, app),
        variables={f"PJSIP_HEADER(add,{PUSH_WAIT_HEADER})": "2"},
    )
    destroyed = await ari_app.event("ChannelDestroyed", channel, timeout=6)
    waited = time.monotonic() - started
    assert 1.8 < waited < 4, waited
    assert destroyed["cause"] == 19, destroyed  # Asterisk maps SIP 480 to "no answer"
    assert await rpc.account_calls(app.name) == 0


async def test_cancel_ends_the_push_wait_and_a_later_registration_rings_nothing(
    stack_settings: Settings,
    rpc: KamailioRpc,
    ari_app: AriTestApp,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    app = new_account()
    channel = await ari_app.originate(
        account_endpoint(stack_settings, app),
        variables={f"PJSIP_HEADER(add,{PUSH_WAIT_HEADER})": "20"},
    )
    await eventually(lambda: rpc.account_calls(app.name), 1, timeout=2, what="waiting calls")
    await ari_app.hangup(channel)  # Asterisk CANCELs the INVITE
    await ari_app.event("ChannelDestroyed", channel, timeout=3)
    # The dialog ends only with the INVITE's final reply: the CANCEL got its 487.
    await eventually(lambda: rpc.account_calls(app.name), 0, timeout=2, what="after CANCEL")
    with sipp_server("uas_no180.xml", workdir=tmp_path, timeout_s=3) as phone:
        await asyncio.to_thread(register, stack_settings, app, phone.port, tmp_path)
        late = await asyncio.to_thread(phone.result, 5)
    assert late.received("INVITE") == []


# ---- registrations, dialogs, errors ----


async def test_contacts_of_registered_and_unregistered_accounts(
    stack_settings: Settings,
    rpc: KamailioRpc,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    registered, unregistered = new_account(), new_account()
    register(stack_settings, registered, 5999, tmp_path)
    assert await rpc.contacts(registered.name) == [f"sip:{registered.name}@127.0.0.1:5999"]
    assert await rpc.contacts(unregistered.name) == []


async def test_dialogs_lists_a_call_in_progress(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    rpc: KamailioRpc,
    new_account: Callable[[], Account],
    tmp_path: Path,
) -> None:
    caller, callee = new_account(), new_account()
    route_to_account(routing, stack_settings, callee.name)

    async def states_of_this_call() -> list[DialogState]:
        return [d.state for d in await rpc.dialogs() if d.from_uri == from_uri]

    from_uri = f"sip:{caller.name}@{stack_settings.kamailio.sip_domain}"
    with sipp_server("uas_no180.xml", workdir=tmp_path) as phone:
        register(stack_settings, callee, phone.port, tmp_path)
        call = asyncio.create_task(
            call_as(stack_settings, caller, callee.name, tmp_path,
                    scenario="uac_account_call.xml", hold_ms=2000)
        )  # fmt: skip
        await eventually(
            states_of_this_call, [DialogState.CONFIRMED], timeout=3, what="dialog states"
        )
        (dialog,) = [d for d in await rpc.dialogs() if d.from_uri == from_uri]
        assert dialog.to_uri == f"sip:{callee.name}@{stack_settings.kamailio.sip_domain}"
        assert dialog.call_id
        assert (await call).successful == 1


async def test_wrong_token_and_unknown_profile_are_rpc_errors(stack_settings: Settings) -> None:
    wrong = stack_settings.kamailio.model_copy(update={"jsonrpc_token": SecretStr("wrong")})
    async with KamailioRpc(wrong) as rpc:
        with pytest.raises(KamailioRpcError, match="HTTP 401"):
            await rpc.account_calls("anyone")
        assert not await rpc.probe()
    async with KamailioRpc(stack_settings.kamailio) as rpc:
        assert await rpc.probe()
        with pytest.raises(KamailioRpcError, match="Profile not found") as error:
            await rpc.call("dlg.profile_get_size", "no_such_profile", "x")
        assert error.value.code == 404
        assert await rpc.call("dlg.profile_get_size", ACCOUNT_CALLS_PROFILE, "nobody") == 0
