"""SIP accounts of phones, intercom panels and mobile apps (Kamailio's subscriber table).

A password is turned into digest HA1 hashes by ``softswitch.accounts`` and never stored nor
returned in clear; the hashes are never returned either.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from softswitch.accounts import accounts_with_contacts, upsert_account
from softswitch.admin.auth import ADMINISTER, READ
from softswitch.admin.context import Context, Db
from softswitch.admin.models import SIP_DOMAIN, SIP_USER, Account, Subscriber, SubscriberBody
from softswitch.admin.records import ERRORS, NOT_FOUND, WRITE_ERRORS, created_if, deleted
from softswitch.admin.store import delete_subscriber, subscriber_exists

router = APIRouter(tags=["subscribers"])
Username = Annotated[str, Path(pattern=SIP_USER, description="SIP user part, e.g. 1001")]
Domain = Annotated[
    str | None,
    Query(pattern=SIP_DOMAIN, description="default: the local SIP domain"),
]


@router.get("/subscribers", dependencies=[READ], responses=ERRORS)
def list_subscribers(context: Context) -> list[Subscriber]:
    """Every account with the contacts PostgreSQL has registered for it."""
    return [
        Subscriber(username=username, domain=domain, contacts=[] if found == "-" else found.split())
        for username, domain, found in accounts_with_contacts(context.settings.database.url)
    ]


@router.put("/subscribers/{username}", dependencies=[ADMINISTER], responses=WRITE_ERRORS)
def put_subscriber(
    username: Username, body: SubscriberBody, context: Context, conn: Db, response: Response
) -> Account:
    """Create an account or set its password (stored only as HA1)."""
    domain = body.domain or context.settings.kamailio.sip_domain
    existed = subscriber_exists(conn, username, domain)
    upsert_account(context.settings.database.url, username, domain, body.password)
    created_if(response, not existed)
    return Account(username=username, domain=domain)


@router.delete(
    "/subscribers/{username}",
    dependencies=[ADMINISTER],
    status_code=204,
    responses={**ERRORS, **NOT_FOUND},
)
def remove_subscriber(
    username: Username, context: Context, conn: Db, domain: Domain = None
) -> Response:
    """Delete an account: it can no longer register or call (devices registered now stay
    until their registration expires)."""
    domain = domain or context.settings.kamailio.sip_domain
    return deleted(delete_subscriber(conn, username, domain), f"account {username}@{domain}")
