"""Intercom calls end to end: a sipp panel calls a flat of registered sipp devices.

Real Kamailio, Asterisk, PostgreSQL and our `softswitch ari` process; the directory rows and
SIP accounts are the test's own and removed after. The ARI process is given a CRM URL where
nothing listens, so every lookup here also proves the PostgreSQL fallback.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from softswitch.accounts import upsert_account
from softswitch.settings import Settings
from tests.e2e.conftest import RoutingServiceHandle, ServiceProcess, ari_apps
from tests.e2e.sipp import SippServer, free_udp_port, run_sipp, sipp_server

pytestmark = pytest.mark.e2e

RING_SECONDS = 6


@dataclass
class FlatFixture:
    settings: Settings
    panel: str
    building: str
    flat: str
    devices: list[tuple[str, str]]  # (account, password)
    offline: str

    @property
    def kamailio(self) -> str:
        return f"{self.settings.kamailio.sip_ip}:{self.settings.kamailio.sip_port}"

    def register(self, account: str, password: str, port: int, workdir: Path) -> None:
        registration = run_sipp(
            "register_auth.xml",
            self.kamailio,
            service=account,
            workdir=workdir,
            timeout_s=10,
            extra=("-au", account, "-ap", password, "-key", "contact_port", str(port)),
        )
        assert (registration.successful, registration.failed) == (1, 0), registration.output


@pytest.fixture
def flat(stack_settings: Settings, routing: RoutingServiceHandle) -> Iterator[FlatFixture]:
    """A panel, a flat with three SIP devices and one that is never registered."""
    tag = secrets.token_hex(3)
    panel, building, number = f"panel{tag}", f"e2e-{tag}", "15"
    devices = [(f"res{tag}{n}", secrets.token_hex(6)) for n in range(3)]
    offline = f"off{tag}"
    url, domain = stack_settings.database.url, stack_settings.kamailio.sip_domain
    for account, password in [*devices, (panel, "x" * 12), (offline, "y" * 12)]:
        upsert_account(url, account, domain, password)
    accounts = [panel, offline, *(a for a, _ in devices)]
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO intercom_panel (panel_id, account, building, address)"
            " VALUES (%s, %s, %s, 'Lenina 1, entrance 2')",
            (f"door-{tag}", panel, building),
        )
        conn.execute("INSERT INTO flat (building, number) VALUES (%s, %s)", (building, number))
        for position, account in enumerate([*(a for a, _ in devices), offline]):
            conn.execute(
                "INSERT INTO flat_device (building, number, kind, target, position)"
                " VALUES (%s, %s, 'sip', %s, %s)",
                (building, number, account, position),
            )
    routing.add_routes(
        {"name": f"e2e: panel {panel} calls flats", "priority": 50,
         "match": {"caller": f"^{panel}$", "callee": r"^\d{1,4}$"},
         "action": "app", "app": "multiring"},
        {"name": f"e2e: calls to panel {panel}", "priority": 51,
         "match": {"callee": f"^{panel}$"}, "action": "app", "app": "panel"},
    )  # fmt: skip
    yield FlatFixture(stack_settings, panel, building, number, devices, offline)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM flat WHERE building = %s", (building,))
        conn.execute("DELETE FROM intercom_panel WHERE building = %s", (building,))
        conn.execute("DELETE FROM subscriber WHERE username = ANY(%s)", (accounts,))
        conn.execute("DELETE FROM location WHERE username = ANY(%s)", (accounts,))


class PushGateway(ThreadingHTTPServer):
    """A push gateway on loopback: records every push and calls ``on_push`` with its body
    (the test's stand-in for a phone waking up and registering)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _PushHandler)
        self.pushes: list[dict[str, Any]] = []
        self.on_push: Callable[[dict[str, Any]], None] = lambda _: None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/push"


class _PushHandler(BaseHTTPRequestHandler):
    server: PushGateway

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.pushes.append(body)
        self.send_response(202)
        self.end_headers()
        threading.Thread(target=self.server.on_push, args=(body,), daemon=True).start()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def push_gateway() -> Iterator[PushGateway]:
    gateway = PushGateway()
    serving = threading.Thread(target=gateway.serve_forever, daemon=True)
    serving.start()
    yield gateway
    gateway.shutdown()
    gateway.server_close()


@pytest.fixture
def intercom_apps(
    stack_settings: Settings, push_gateway: PushGateway, tmp_path: Path
) -> Iterator[ServiceProcess]:
    """`softswitch ari` serving multiring and panel, its CRM unreachable, pushes to a stub."""
    with ari_apps(
        ["multiring", "panel"],
        tmp_path / "ari.log",
        SOFTSWITCH_MULTIRING_RING_SECONDS=str(RING_SECONDS),
        SOFTSWITCH_DIRECTORY_CRM_URL=f"http://127.0.0.1:{free_udp_port()}",
        SOFTSWITCH_DIRECTORY_PUSH_URL=push_gateway.url,
        SOFTSWITCH_PANEL_WAIT_SECONDS="15",
        SOFTSWITCH_PANEL_RETRY_SECONDS="0.5",
    ) as service:
        yield service


def outbox_events(settings: Settings, sip_call_id: str) -> list[dict[str, Any]]:
    """The call's events, found by the panel's SIP Call-ID, in the order they were written."""
    deadline = time.monotonic() + 5
    while True:
        with psycopg.connect(settings.database.url) as conn:
            rows = conn.execute(
                "SELECT payload FROM event_outbox WHERE payload->>'call_id' IN"
                " (SELECT payload->>'call_id' FROM event_outbox"
                "   WHERE payload->>'sip_call_id' = %s) ORDER BY id",
                (sip_call_id,),
            ).fetchall()
        events = [row[0] if isinstance(row[0], dict) else json.loads(row[0]) for row in rows]
        if any(e["type"] == "call.ended" for e in events) or time.monotonic() > deadline:
            return events


def registered_devices(
    flat: FlatFixture, scenarios: list[tuple[str, dict[str, str] | None]], tmp_path: Path
) -> tuple[ExitStack, list[SippServer]]:
    stack = ExitStack()
    servers = []
    for (account, password), (scenario, values) in zip(flat.devices, scenarios, strict=True):
        server = stack.enter_context(
            sipp_server(scenario, workdir=tmp_path, values=values, timeout_s=30)
        )
        flat.register(account, password, server.port, tmp_path)
        servers.append(server)
    return stack, servers


def test_first_device_to_answer_is_bridged_and_the_others_are_cancelled(
    flat: FlatFixture, intercom_apps: ServiceProcess, tmp_path: Path
) -> None:
    scenarios: list[tuple[str, dict[str, str] | None]] = [
        ("uas_ring_until_cancel.xml", None),
        ("uas_ring_then_answer.tmpl.xml", {"ANSWER_MS": "1500"}),
        ("uas_ring_until_cancel.xml", None),
    ]
    devices, (loser1, winner, loser2) = registered_devices(flat, scenarios, tmp_path)
    with devices:
        panel = run_sipp(
            "uac_panel.xml",
            flat.kamailio,
            service=flat.flat,
            workdir=tmp_path,
            extra=("-key", "caller", flat.panel, "-d", "1000"),
        )
        assert (panel.successful, panel.failed) == (1, 0), panel.output
        assert panel.received("SIP/2.0 180"), "the panel must hear ringing at once"
        answered = winner.result()
        assert (answered.successful, answered.failed) == (1, 0), answered.output
        assert answered.received("BYE"), "the panel's hangup reaches the winner"
        for loser in (loser1, loser2):
            cancelled = loser.result()
            assert cancelled.successful == 1, cancelled.output
            assert cancelled.received("CANCEL")

    events = outbox_events(flat.settings, panel.call_id(1))
    types = [e["type"] for e in events]
    assert types[0] == "call.started"
    assert types.count("multiring.won") == 1
    won = next(e for e in events if e["type"] == "multiring.won")
    assert won["leg"] == flat.devices[1][0]
    started = next(e for e in events if e["type"] == "multiring.started")
    assert sorted(started["legs"]) == sorted([*(a for a, _ in flat.devices), flat.offline])
    leg_outcomes = {e["leg"]: e["outcome"] for e in events if e["type"] == "multiring.leg_ended"}
    assert leg_outcomes[flat.offline] == "failed"  # never registered: 404 at once
    assert leg_outcomes[flat.devices[0][0]] == "answered_elsewhere"
    ended = next(e for e in events if e["type"] == "call.ended")
    assert ended["disposition"] == "answered"
    assert ended["talk_seconds"] >= 0.9
    # The CRM was down: PostgreSQL answered.
    assert any(r["msg"].startswith("directory lookup falls back") for r in intercom_apps.records())


def test_nobody_answers_within_the_ring_time(
    flat: FlatFixture, intercom_apps: ServiceProcess, tmp_path: Path
) -> None:
    scenarios: list[tuple[str, dict[str, str] | None]] = [("uas_ring_until_cancel.xml", None)] * 3
    devices, servers = registered_devices(flat, scenarios, tmp_path)
    with devices:
        started = time.monotonic()
        panel = run_sipp(
            "uac_expect.tmpl.xml",
            flat.kamailio,
            service=flat.flat,
            workdir=tmp_path,
            values={"CODE": "480"},
            extra=("-key", "caller", flat.panel),
        )
        elapsed = time.monotonic() - started
        assert (panel.successful, panel.failed) == (1, 0), panel.output
        assert RING_SECONDS - 0.5 < elapsed < RING_SECONDS + 5
        for device in servers:
            result = device.result()
            assert result.received("CANCEL"), result.output
    types = [e["type"] for e in outbox_events(flat.settings, panel.call_id(1))]
    assert "multiring.timeout" in types and "multiring.won" not in types


def test_asterisk_restart_while_ringing_leaves_nothing_ringing(
    flat: FlatFixture,
    intercom_apps: ServiceProcess,
    stack_settings: Settings,
    tmp_path: Path,
) -> None:
    from softswitch.stack import services

    scenarios: list[tuple[str, dict[str, str] | None]] = [("uas_ring_until_cancel.xml", None)] * 3
    devices, servers = registered_devices(flat, scenarios, tmp_path)
    state_dir = stack_settings.stack.state_dir

    def connections() -> int:
        return sum(r["msg"] == "ARI connected" for r in intercom_apps.records())

    before = connections()
    with devices, ThreadPoolExecutor(1) as pool:
        panel = pool.submit(
            run_sipp,
            "uac_expect.tmpl.xml",
            flat.kamailio,
            service=flat.flat,
            workdir=tmp_path,
            values={"CODE": "503"},
            extra=("-key", "caller", flat.panel),
            timeout_s=15,
        )
        intercom_apps.wait_for(lambda r: r["msg"] == "StasisStart" and r.get("app") == "multiring")
        time.sleep(1.0)  # the legs ring
        services.stop(services.ASTERISK, state_dir)
        for device in servers:
            result = device.result()
            assert result.received("CANCEL"), "a device was left ringing: " + result.output
        panel.result()  # whatever the panel heard, it is not left waiting (bounded run)
        services.start(services.ASTERISK, stack_settings.stack.chroot_dir, state_dir)
        services.wait_ready(services.ASTERISK, stack_settings)
        intercom_apps.wait_for(lambda r: connections() > before, timeout=20)
    # The app is serving again: a new call to the flat reaches the devices.
    scenarios = [("uas_ring_then_answer.tmpl.xml", {"ANSWER_MS": "200"})] + [
        ("uas_ring_until_cancel.xml", None)
    ] * 2
    devices, _ = registered_devices(flat, scenarios, tmp_path)
    with devices:
        again = run_sipp(
            "uac_panel.xml",
            flat.kamailio,
            service=flat.flat,
            workdir=tmp_path,
            extra=("-key", "caller", flat.panel, "-d", "500"),
        )
        assert (again.successful, again.failed) == (1, 0), again.output


def test_a_second_call_to_a_busy_panel_waits_until_the_first_ends(
    flat: FlatFixture, intercom_apps: ServiceProcess, tmp_path: Path
) -> None:
    with sipp_server("uas_no180.xml", workdir=tmp_path, calls=2) as panel_device:
        flat.register(flat.panel, "x" * 12, panel_device.port, tmp_path)
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                run_sipp, "builtin:uac", flat.kamailio, service=flat.panel,
                workdir=tmp_path, extra=("-d", "3000"),
            )  # fmt: skip
            time.sleep(1.0)
            second = pool.submit(
                run_sipp, "builtin:uac", flat.kamailio, service=flat.panel,
                workdir=tmp_path, extra=("-d", "500"),
            )  # fmt: skip
            assert first.result().successful == 1, first.result().output
            assert second.result().successful == 1, second.result().output
        served = panel_device.result()
    assert (served.successful, served.failed) == (2, 0), served.output
    # One call at a time: the second INVITE reached the panel only after the first BYE.
    order = [m.split(" ", 1)[0] for m in served.received("") if not m.startswith("SIP/")]
    assert order.index("BYE") < len(order) - 1 - order[::-1].index("INVITE"), order
    assert order.count("INVITE") == 2
    first_bye = order.index("BYE")
    assert order[:first_bye].count("INVITE") == 1, order


def test_a_mobile_app_woken_by_its_push_registers_and_answers(
    flat: FlatFixture,
    intercom_apps: ServiceProcess,
    push_gateway: PushGateway,
    tmp_path: Path,
) -> None:
    """The flat's mobile account is not registered when the panel calls: the app gets a push,
    registers a moment later, and Kamailio rings it at once (the leg waited for it)."""
    mobile, password = f"app{secrets.token_hex(3)}", secrets.token_hex(6)
    url = flat.settings.database.url
    upsert_account(url, mobile, flat.settings.kamailio.sip_domain, password)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO flat_device (building, number, kind, target, position)"
            " VALUES (%s, %s, 'mobile', %s, 10)",
            (flat.building, flat.flat, mobile),
        )
    try:
        with (
            sipp_server("uas_ring_until_cancel.xml", workdir=tmp_path) as phone,
            sipp_server(
                "uas_ring_then_answer.tmpl.xml", workdir=tmp_path, values={"ANSWER_MS": "300"}
            ) as app,
        ):
            flat.register(*flat.devices[0], phone.port, tmp_path)

            def wake_up(_: dict[str, Any]) -> None:
                time.sleep(0.5)  # the app starts half a second after its push, then registers
                flat.register(mobile, password, app.port, tmp_path)

            push_gateway.on_push = wake_up
            panel = run_sipp(
                "uac_panel.xml",
                flat.kamailio,
                service=flat.flat,
                workdir=tmp_path,
                extra=("-key", "caller", flat.panel, "-d", "500"),
            )
            assert (panel.successful, panel.failed) == (1, 0), panel.output
            answered = app.result()
            assert (answered.successful, answered.failed) == (1, 0), answered.output
            assert phone.result().received("CANCEL")
        (push,) = push_gateway.pushes
        assert push["account"] == mobile
        assert push["flat"] == {"building": flat.building, "number": flat.flat}
        events = outbox_events(flat.settings, panel.call_id(1))
        won = next(e for e in events if e["type"] == "multiring.won")
        assert won["leg"] == mobile
        assert any(e["type"] == "push.requested" and e["account"] == mobile for e in events)
    finally:
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM subscriber WHERE username = %s", (mobile,))
            conn.execute("DELETE FROM location WHERE username = %s", (mobile,))
