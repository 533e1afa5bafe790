"""SIP accounts in Kamailio's subscriber table: passwords are stored only as digest HA1."""

from __future__ import annotations

import hashlib

import psycopg


def ha1(username: str, domain: str, password: str) -> str:
    """Digest HA1 as Kamailio auth_db stores it: md5(user:realm:password)."""
    return hashlib.md5(f"{username}:{domain}:{password}".encode()).hexdigest()


def upsert_account(database_url: str, username: str, domain: str, password: str) -> None:
    """Create or re-key an account; raises psycopg CheckViolation for a refused name."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO subscriber (username, domain, ha1, ha1b) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (username, domain) DO UPDATE"
            " SET ha1 = EXCLUDED.ha1, ha1b = EXCLUDED.ha1b",
            (
                username,
                domain,
                ha1(username, domain, password),
                ha1(f"{username}@{domain}", domain, password),
            ),
        )


def accounts_with_contacts(database_url: str) -> list[tuple[str, str, str]]:
    """(username, domain, registered contacts or '-') for every account."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT s.username, s.domain, coalesce(string_agg(l.contact, ' '), '-')"
            " FROM subscriber s LEFT JOIN location l ON l.username = s.username"
            " GROUP BY s.username, s.domain ORDER BY s.domain, s.username"
        ).fetchall()
    return [(str(u), str(d), str(c)) for u, d, c in rows]
