"""Phones register with digest auth against PostgreSQL and are reached by account name."""

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from softswitch.settings import Settings
from tests.e2e.conftest import RoutingServiceHandle
from tests.e2e.sipp import run_sipp, sipp_server

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def account(stack_settings: Settings) -> Iterator[tuple[str, str]]:
    """A fresh SIP account made with the CLI; it and its registrations are removed after."""
    username, password = f"9{secrets.randbelow(10**6):06d}", secrets.token_hex(6)
    subprocess.run(
        [sys.executable, "-m", "softswitch", "accounts", "add", username, "--password", password],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    yield username, password
    with psycopg.connect(stack_settings.database.url) as conn:
        conn.execute("DELETE FROM subscriber WHERE username = %s", (username,))
        conn.execute("DELETE FROM location WHERE username = %s", (username,))


def registered_contacts(settings: Settings, username: str) -> list[str]:
    with psycopg.connect(settings.database.url) as conn:
        rows = conn.execute("SELECT contact FROM location WHERE username = %s", (username,))
        return [contact for (contact,) in rows]


def test_registered_account_is_stored_in_postgres_and_reached_by_name(
    stack_settings: Settings,
    routing: RoutingServiceHandle,
    account: tuple[str, str],
    tmp_path: Path,
) -> None:
    kamailio = f"{stack_settings.kamailio.sip_ip}:{stack_settings.kamailio.sip_port}"
    username, password = account
    # The route names the account: sip:<account>@<local domain> reaches its devices.
    routing.add_routes(
        {"name": f"e2e: account {username}", "priority": 100,
         "match": {"callee": f"^{username}$"}, "action": "relay",
         "destinations": [f"sip:{username}@{stack_settings.kamailio.sip_domain}"]}
    )  # fmt: skip
    with sipp_server("uas_no180.xml", workdir=tmp_path) as phone:
        registration = run_sipp(
            "register_auth.xml",
            kamailio,
            service=username,
            workdir=tmp_path,
            extra=("-au", username, "-ap", password, "-key", "contact_port", str(phone.port)),
        )
        assert (registration.successful, registration.failed) == (1, 0), registration.output
        assert registered_contacts(stack_settings, username) == [
            f"sip:{username}@127.0.0.1:{phone.port}"
        ]

        call = run_sipp(
            "builtin:uac", kamailio, service=username, workdir=tmp_path, extra=("-d", "200")
        )
        assert (call.successful, call.failed) == (1, 0), call.output
        answered = phone.result()
    assert (answered.successful, answered.failed) == (1, 0), answered.output


def test_wrong_password_is_challenged_again_and_not_registered(
    stack_settings: Settings, account: tuple[str, str], tmp_path: Path
) -> None:
    kamailio = f"{stack_settings.kamailio.sip_ip}:{stack_settings.kamailio.sip_port}"
    username, _ = account
    registration = run_sipp(
        "register_auth.xml",
        kamailio,
        service=username,
        workdir=tmp_path,
        timeout_s=5,
        extra=("-au", username, "-ap", "wrong", "-key", "contact_port", "5999"),
    )
    assert registration.failed == 1
    assert "401" in registration.output
    assert registered_contacts(stack_settings, username) == []
