"""Demo data for the local stack: SIP accounts and routes a person can try with a softphone."""

from __future__ import annotations

import hmac

import psycopg

from routing.models import RouteSpec
from routing.store import apply_import
from softswitch.accounts import upsert_account
from softswitch.settings import Settings

DEMO_ACCOUNTS = ("1001", "1002", "1003")
DEMO_PANEL = "2001"
"""A door intercom: dialling 1 rings every demo phone at once (flat 1 of building demo)."""


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
        {"name": "Demo: 8 to 7", "priority": 20, "match": {"callee": r"^8(\d{10})$"},
         "rewrite": {"callee": r"7\1"}, "action": "next"},
        {"name": "Demo: busy", "priority": 30, "match": {"callee": "^486$"},
         "action": "reject", "reject": {"code": 486, "reason": "Busy Here"}},
        {"name": "Demo: everything else to the Stasis app", "priority": 1000,
         "action": "app", "app": app},
    ]  # fmt: skip
    return [RouteSpec.model_validate({"group": "Demo", **route}) for route in routes]


def seed(settings: Settings) -> list[tuple[str, str]]:
    """Create the demo accounts and routes (idempotent); returns (user, password) pairs."""
    accounts = [(user, demo_password(settings, user)) for user in (*DEMO_ACCOUNTS, DEMO_PANEL)]
    for username, password in accounts:
        upsert_account(settings.database.url, username, settings.kamailio.sip_domain, password)
    with psycopg.connect(settings.database.url) as conn:
        apply_import(conn, demo_routes(settings), replace=False)
        conn.execute(
            "INSERT INTO intercom_panel (panel_id, account, building, address)"
            " VALUES ('demo-door', %s, 'demo', 'Demo street 1') ON CONFLICT DO NOTHING",
            (DEMO_PANEL,),
        )
        conn.execute(
            "INSERT INTO flat (building, number) VALUES ('demo', '1') ON CONFLICT DO NOTHING"
        )
        for position, account in enumerate(DEMO_ACCOUNTS):
            conn.execute(
                "INSERT INTO flat_device (building, number, kind, target, position)"
                " VALUES ('demo', '1', 'sip', %s, %s) ON CONFLICT DO NOTHING",
                (account, position),
            )
    return accounts
