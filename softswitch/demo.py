"""Demo data for the local stack: SIP accounts and routes a person can try with a softphone."""

from __future__ import annotations

import hmac

import psycopg

from acd.store import AcdFile, AgentRecord, MembershipRecord, QueueRecord, apply_acd_import
from routing.models import RouteSpec
from routing.store import apply_import
from softswitch.accounts import upsert_account
from softswitch.directory.models import Flat, FlatDevice, Panel
from softswitch.directory.store import DirectoryFile, apply_directory_import
from softswitch.settings import Settings

DEMO_ACCOUNTS = ("1001", "1002", "1003")
DEMO_PANEL = "2001"
"""A door intercom: dialling 1 rings every demo phone at once (flat 1 of building demo)."""
DEMO_QUEUE_NUMBER = "5000"
"""A call-centre queue: 1002 and 1003 are its agents (logged in), callbacks on key 1."""


def demo_password(settings: Settings, username: str) -> str:
    """Stable per installation (derived from a stack secret), so a configured phone keeps
    working across demo runs, yet not guessable from the source."""
    token = settings.asterisk.peer_token
    if token is None:
        raise ValueError("no stack credentials: run `softswitch stack up` first")
    digest = hmac.new(token.get_secret_value().encode(), username.encode(), "sha256")
    return digest.hexdigest()[:12]


def demo_routes(settings: Settings) -> list[RouteSpec]:
    app = settings.ari.apps[0] if settings.ari.apps else "smoke"
    routes = [
        # A destination without user part gets the callee: sip:1002@<local domain>.
        {"name": "Demo: accounts", "priority": 10, "match": {"callee": "^(100[1-3])$"},
         "action": "relay", "destinations": [f"sip:{settings.kamailio.sip_domain}"]},
        {"name": "Demo: intercom calls flat", "priority": 5,
         "match": {"caller": f"^{DEMO_PANEL}$", "callee": r"^\d{1,3}$"},
         "action": "app", "app": "multiring"},
        {"name": "Demo: calls to the intercom", "priority": 6,
         "match": {"callee": f"^{DEMO_PANEL}$"}, "action": "app", "app": "panel"},
        {"name": "Demo: support queue", "priority": 7,
         "match": {"callee": f"^{DEMO_QUEUE_NUMBER}$"}, "action": "app", "app": "acd",
         "app_args": ["demo-support"]},
        {"name": "Demo: 8 to 7", "priority": 20, "match": {"callee": r"^8(\d{10})$"},
         "rewrite": {"callee": r"7\1"}, "action": "next"},
        {"name": "Demo: busy", "priority": 30, "match": {"callee": "^486$"},
         "action": "reject", "reject": {"code": 486, "reason": "Busy Here"}},
        {"name": "Demo: everything else to the Stasis app", "priority": 1000,
         "action": "app", "app": app},
    ]  # fmt: skip
    return [RouteSpec.model_validate({"group": "Demo", **route}) for route in routes]


def demo_directory() -> DirectoryFile:
    """The demo intercom: its keypad's 1 is flat 1 of building demo, rung on every demo phone."""
    return DirectoryFile(
        panels=(
            Panel(panel_id="demo-door", account=DEMO_PANEL, building="demo",
                  address="Demo street 1", flat_first=1, flat_last=9),
        ),
        flats=(
            Flat(building="demo", number="1",
                 devices=tuple(FlatDevice(kind="sip", target=user) for user in DEMO_ACCOUNTS)),
        ),
    )  # fmt: skip


def demo_queue() -> AcdFile:
    """The demo queue: longest-idle agent first, position announcements, callbacks on 1."""
    return AcdFile(
        queues=(
            QueueRecord(queue_id="demo-support", name="Demo support", strategy="least_recent",
                        ring_timeout_seconds=15, announce_seconds=30, callback_enabled=True,
                        max_wait_seconds=600),
        ),
        agents=tuple(
            AgentRecord(agent_id=f"agent-{user}", account=user, name=f"Demo agent {user}",
                        queues=(MembershipRecord(queue_id="demo-support"),))
            for user in DEMO_ACCOUNTS[1:]
        ),
    )  # fmt: skip


def seed(settings: Settings) -> list[tuple[str, str]]:
    """Create the demo accounts and routes (idempotent); returns (user, password) pairs."""
    accounts = [(user, demo_password(settings, user)) for user in (*DEMO_ACCOUNTS, DEMO_PANEL)]
    for username, password in accounts:
        upsert_account(settings.database.url, username, settings.kamailio.sip_domain, password)
    with psycopg.connect(settings.database.url) as conn:
        apply_import(conn, demo_routes(settings), replace=False)
        apply_directory_import(conn, demo_directory(), replace=False)
        queue = demo_queue()
        apply_acd_import(conn, queue, replace=False)
        # Logged in the first time only: a demo run never undoes an agent's own logout.
        conn.execute(
            "UPDATE acd_agent SET status = 'free', status_since = now()"
            " WHERE agent_id = ANY(%s) AND status = 'offline' AND calls_taken = 0",
            ([agent.agent_id for agent in queue.agents],),
        )
    return accounts
