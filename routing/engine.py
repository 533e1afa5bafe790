"""Deciding one call: a pure function of the call, the compiled table and the time.

Routes are tried in (priority, id) order; the first whose masks all match (and whose schedule
is open) decides. Rewrites apply with the groups of the matching masks. A ``next`` route
applies its rewrites and flags and matching goes on with the routes after it, using the
rewritten numbers; positions only grow, so a chain cannot loop, and ``max_chain`` bounds
its length. A ``callback`` route sends a call to an emergency-pool number to the panel that
holds its reservation; with no reservation it acts like ``next`` (the routes after it say
where such calls go: an operator queue, a recording).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from routing.models import CALLBACK_APP, CallRequest, Decision, Reject, RouteSpec
from routing.table import CallNumbers, CompiledRoute, RouteTable

NOT_FOUND = Reject(code=404, reason="Not Found")
CHAIN_TOO_LONG = Reject(code=482, reason="Route Chain Too Long")
RELAYING_DENIED = Reject(code=403, reason="Relaying Denied")
PUBLIC_FLAG = "public"
"""A route with this flag relays callers Kamailio does not vouch for to any destination."""

Candidates = Callable[[RouteTable, str, str], Iterable[int]]


def indexed_candidates(table: RouteTable, caller: str, callee: str) -> Iterable[int]:
    return table.candidates(caller, callee)


def every_route(table: RouteTable, caller: str, callee: str) -> Iterable[int]:
    """The naive reference: every route in order. Same decisions, linear cost."""
    return range(len(table.routes))


def _first_match(
    table: RouteTable,
    call: CallRequest,
    caller: str,
    callee: str,
    now: datetime,
    after: int,
    candidates: Candidates,
) -> CompiledRoute | None:
    numbers = CallNumbers(
        caller.encode(), call.caller_host.encode(), callee.encode(), call.callee_host.encode()
    )
    tried = after
    for position in candidates(table, caller, callee):
        if position > tried:  # candidates are sorted; skips repeats and routes before ``after``
            tried = position
            if table.routes[position].matches(numbers, now):
                return table.routes[position]
    return None


def decide(
    call: CallRequest,
    table: RouteTable,
    now: datetime,
    *,
    max_chain: int = 10,
    local_hosts: frozenset[str] = frozenset(),
    candidates: Candidates = indexed_candidates,
) -> Decision:
    """``local_hosts``: our SIP domain and addresses; a relay elsewhere needs a trusted caller
    or a ``public`` route (see ``CallRequest.trusted``)."""
    caller, callee = call.caller, call.callee
    chain: list[str] = []
    flags: dict[str, None] = {}
    after = -1
    while True:
        hit = _first_match(table, call, caller, callee, now, after, candidates)
        if hit is None:
            return _reject(chain, caller, callee, flags, NOT_FOUND, route=None)
        spec: RouteSpec = hit.spec
        chain.append(spec.name)
        flags.update(dict.fromkeys(spec.flags))
        caller, callee = hit.rewrite(caller, callee)
        if spec.action == "callback":
            target = table.callback_target(callee, now)
            if target is not None:
                return Decision(
                    route=spec.name,
                    chain=chain,
                    action="app",
                    caller=caller,
                    callee=callee,
                    app=spec.app or CALLBACK_APP,
                    app_args=[target.panel_account, "sos", target.city_id],
                    flags=list(flags),
                )
        elif spec.action != "next":
            break
        if len(chain) >= max_chain:
            return _reject(chain, caller, callee, flags, CHAIN_TOO_LONG, route=spec.name)
        after = hit.position

    if spec.action == "reject":
        assert spec.reject is not None  # guaranteed by RouteSpec validation
        return _reject(chain, caller, callee, flags, spec.reject, route=spec.name)
    destinations = [destination_uri(uri, callee) for uri in spec.destinations]
    if (
        spec.action == "relay"
        and not call.trusted
        and PUBLIC_FLAG not in flags
        and any(uri_host(uri) not in local_hosts for uri in destinations)
    ):
        return _reject(chain, caller, callee, flags, RELAYING_DENIED, route=spec.name)
    return Decision(
        route=spec.name,
        chain=chain,
        action=spec.action,
        caller=caller,
        callee=callee,
        destinations=destinations,
        parallel=spec.parallel,
        app=spec.app if spec.action == "app" else None,
        app_args=list(spec.app_args),
        flags=list(flags),
    )


def _reject(
    chain: list[str],
    caller: str,
    callee: str,
    flags: dict[str, None],
    reject: Reject,
    *,
    route: str | None,
) -> Decision:
    return Decision(
        route=route,
        chain=chain,
        action="reject",
        caller=caller,
        callee=callee,
        reject=reject,
        flags=list(flags),
    )


def destination_uri(uri: str, callee: str) -> str:
    """A destination without a user part (``sip:gw:5060``) carries the (rewritten) callee."""
    scheme, _, rest = uri.partition(":")
    if "@" in rest.split(";", 1)[0]:
        return uri
    return f"{scheme}:{callee}@{rest}"


def uri_host(uri: str) -> str:
    """The host of a SIP URI, lower-cased, without user, port or parameters."""
    rest = uri.partition(":")[2].split(";", 1)[0]
    host = rest.rpartition("@")[2]
    if host.startswith("["):  # IPv6 reference
        return host[1:].partition("]")[0].lower()
    return host.partition(":")[0].lower()
