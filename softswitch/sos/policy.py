"""Which pool number an emergency call gets: the rule, without I/O.

``softswitch.sos.store`` runs the same rule as one SQL statement (so concurrent calls never
get the same number); this function is its readable reference, and a property test holds the
two together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from softswitch.sos.models import ExhaustionPolicy, LeaseHow, PoolNumber


def choose_number(
    pool: Sequence[PoolNumber], *, panel_id: str, now: datetime, policy: ExhaustionPolicy
) -> tuple[PoolNumber | None, LeaseHow]:
    """The number a panel's emergency call uses from its city's ``pool``, and how it was chosen.

    1. reused: the panel's own number (leased by a call whose release never came, or free and
       still reserved for it), so the emergency service's callback keeps reaching it;
    2. lru: the free number used longest ago (never used first), ties by number;
    3. the pool is exhausted: ``take_oldest`` takes the free number with the oldest reservation
       (taken_over: its panel loses the callback), ``fallback`` gives up (None, "fallback").

    Blocked numbers and numbers leased by other panels are never chosen.
    """
    own = [n for n in pool if n.panel_id == panel_id and n.status(now) in ("leased", "reserved")]
    if own:
        return min(own, key=lambda n: n.number), "reused"
    free = [n for n in pool if n.status(now) == "free"]
    if free:
        return min(
            free, key=lambda n: (n.last_used_at is not None, n.last_used_at or now, n.number)
        ), "lru"
    reserved = [n for n in pool if n.status(now) == "reserved"]
    if policy == "take_oldest" and reserved:
        return min(reserved, key=lambda n: (n.reserved_until or now, n.number)), "taken_over"
    return None, "fallback"
