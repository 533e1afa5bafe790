"""112 from a door panel end to end: pool number out, callback in, busy wait, expiry.

A sipp panel dials 112; a sipp "gateway" must get the INVITE to the city's emergency number
with a pool number as caller ID and the panel's location headers. The gateway then calls the
pool number back: the call reaches the same sipp panel (waiting while the panel is still in
its 112 call); after the reservation expires the callback goes to the next route.

The ARI process and the routing service share one scratch database here (routes, pool,
panels): the lease the app writes is the reservation the routing service routes by.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from softswitch.accounts import upsert_account
from softswitch.settings import Settings
from tests.e2e.conftest import RoutingServiceHandle, ServiceProcess, ari_apps
from tests.e2e.sipp import free_udp_port, run_sipp, sipp_server

pytestmark = pytest.mark.e2e

FIAS = "0c5b2444-70a0-4932-980c-b4dc0d3f02b5"


@dataclass
class Pool:
    settings: Settings
    database_url: str
    panel: str
    password: str
    numbers: list[str]

    @property
    def kamailio(self) -> str:
        return f"{self.settings.kamailio.sip_ip}:{self.settings.kamailio.sip_port}"

    def holder(self, number: str) -> tuple[str, str | None]:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT state, panel_id FROM sos_number WHERE number = %s", (number,)
            ).fetchone()
        assert row is not None
        return row[0], row[1]


@pytest.fixture
def pool(
    stack_settings: Settings, routing: RoutingServiceHandle, tmp_path: Path
) -> Iterator[tuple[Pool, int]]:
    """A city whose gateway is a sipp port, two pool numbers, a panel of that city."""
    tag = secrets.token_hex(3)
    panel, password = f"sos{tag}", secrets.token_hex(6)
    city = f"city{tag}"
    numbers = [f"+7495{secrets.randbelow(10**6):06d}{n}" for n in range(2)]
    gateway_port = free_udp_port()
    upsert_account(stack_settings.database.url, panel, stack_settings.kamailio.sip_domain, password)
    with psycopg.connect(routing.database_url) as conn:
        conn.execute(
            "INSERT INTO sos_city (city_id, name, fias_code, emergency_number, gateway_uri,"
            " time_zone, fallback_number) VALUES (%s, 'Testgrad', %s, '112', %s,"
            " 'Europe/Moscow', '+74950000000')",
            (city, FIAS, f"sip:127.0.0.1:{gateway_port}"),
        )
        for number in numbers:
            conn.execute("INSERT INTO sos_number (number, city_id) VALUES (%s, %s)", (number, city))
        conn.execute(
            "INSERT INTO intercom_panel (panel_id, account, building, address, city_id)"
            " VALUES (%s, %s, %s, 'Lenina 5, entrance 2', %s)",
            (f"door-{tag}", panel, f"b-{tag}", city),
        )
    routing.add_routes(
        {"name": f"e2e: {panel} dials 112", "priority": 40,
         "match": {"caller": f"^{panel}$", "callee": "^112$"}, "action": "app", "app": "sos"},
        {"name": f"e2e: callbacks to {city}", "priority": 41,
         "match": {"callee": r"^\+7495\d{7}$"}, "action": "callback"},
        {"name": f"e2e: expired callbacks of {city}", "priority": 42,
         "match": {"callee": r"^\+7495\d{7}$"}, "action": "reject",
         "reject": {"code": 410, "reason": "Reservation Expired"}},
    )  # fmt: skip
    yield Pool(stack_settings, routing.database_url, panel, password, numbers), gateway_port
    with psycopg.connect(stack_settings.database.url) as conn:
        conn.execute("DELETE FROM subscriber WHERE username = %s", (panel,))
        conn.execute("DELETE FROM location WHERE username = %s", (panel,))


@pytest.fixture
def sos_apps(routing: RoutingServiceHandle, tmp_path: Path) -> Iterator[ServiceProcess]:
    with ari_apps(
        ["sos", "panel"],
        tmp_path / "ari.log",
        SOFTSWITCH_DATABASE_URL=routing.database_url,
        SOFTSWITCH_PANEL_WAIT_SECONDS="20",
        SOFTSWITCH_PANEL_RETRY_SECONDS="0.5",
    ) as service:
        yield service


def test_112_leaves_with_a_pool_number_and_the_callback_reaches_the_same_panel(
    pool: tuple[Pool, int], sos_apps: ServiceProcess, tmp_path: Path
) -> None:
    sos, gateway_port = pool
    with (
        sipp_server("uas_no180.xml", workdir=tmp_path, port=gateway_port) as gateway,
        sipp_server("uas_no180.xml", workdir=tmp_path) as panel_device,
        ThreadPoolExecutor(2) as threads,
    ):
        registration = run_sipp(
            "register_auth.xml", sos.kamailio, service=sos.panel, workdir=tmp_path,
            extra=("-au", sos.panel, "-ap", sos.password, "-key", "contact_port",
                   str(panel_device.port)),
        )  # fmt: skip
        assert registration.successful == 1, registration.output
        emergency = threads.submit(
            run_sipp, "uac_panel.xml", sos.kamailio, service="112", workdir=tmp_path,
            extra=("-key", "caller", sos.panel, "-d", "3000"),
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while sos.holder(sos.numbers[0])[0] != "leased" and sos.holder(sos.numbers[1])[0] != (
            "leased"
        ):
            assert time.monotonic() < deadline, "no number was leased"
            time.sleep(0.05)
        number = next(n for n in sos.numbers if sos.holder(n)[0] == "leased")
        # The emergency service calls back while the panel is still in its 112 call:
        # the callback waits for the panel instead of a second call locking its keypad.
        started = time.monotonic()
        callback = threads.submit(
            run_sipp, "builtin:uac", sos.kamailio, service=number, workdir=tmp_path,
            extra=("-d", "500"),
        )  # fmt: skip
        call = emergency.result()
        assert (call.successful, call.failed) == (1, 0), call.output
        called_back = callback.result()
        assert (called_back.successful, called_back.failed) == (1, 0), called_back.output
        assert time.monotonic() - started > 1.5, "the callback did not wait for the panel"
        out = gateway.result()
        served = panel_device.result()
    (invite,) = out.received("INVITE")
    assert invite.startswith("INVITE sip:112@")
    from_line = next(line for line in invite.splitlines() if line.lower().startswith("from:"))
    assert number in from_line
    assert "X-Location-Address: Lenina 5, entrance 2" in invite
    assert "X-Location-City: Testgrad" in invite
    assert f"X-Location-FIAS: {FIAS}" in invite
    assert "X-Softswitch-" not in invite  # our own headers never leave
    assert (served.successful, served.failed) == (1, 0), served.output
    assert sos.holder(number) == ("free", sos.holder(number)[1])

    # The reservation runs out: the next callback goes to the route after the callback route.
    with psycopg.connect(sos.database_url) as conn:
        conn.execute(
            "UPDATE sos_number SET reserved_until = now() - interval '1 second' WHERE number = %s",
            (number,),
        )
    expired = run_sipp(
        "uac_expect.tmpl.xml", sos.kamailio, service=number, workdir=tmp_path,
        values={"CODE": "410"}, extra=("-key", "caller", "112"),
    )  # fmt: skip
    assert (expired.successful, expired.failed) == (1, 0), expired.output
