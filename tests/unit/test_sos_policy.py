"""Which pool number an emergency call gets: the pure rule, one case at a time."""

from datetime import UTC, datetime, timedelta

import pytest

from softswitch.sos.models import ExhaustionPolicy, PoolNumber
from softswitch.sos.policy import choose_number

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def free(number: str, *, used: timedelta | None = None) -> PoolNumber:
    """A free number, last used ``used`` ago (never when None)."""
    return PoolNumber(
        number=number, city_id="nsk", last_used_at=None if used is None else NOW - used
    )


def reserved(number: str, panel_id: str, *, left: timedelta) -> PoolNumber:
    """A free number reserved for ``panel_id`` for ``left`` more (expired when negative)."""
    return PoolNumber(
        number=number,
        city_id="nsk",
        panel_id=panel_id,
        reserved_until=NOW + left,
        last_used_at=NOW - 5 * MINUTE,
    )


def leased(number: str, panel_id: str) -> PoolNumber:
    return PoolNumber(
        number=number,
        city_id="nsk",
        state="leased",
        panel_id=panel_id,
        call_id=f"call-{panel_id}",
        leased_at=NOW - MINUTE,
        last_used_at=NOW - MINUTE,
    )


def blocked(number: str) -> PoolNumber:
    return PoolNumber(number=number, city_id="nsk", state="blocked", blocked_reason="revoked")


def choose(
    pool: list[PoolNumber], panel_id: str = "p-1", policy: ExhaustionPolicy = "take_oldest"
) -> tuple[str | None, str]:
    number, how = choose_number(pool, panel_id=panel_id, now=NOW, policy=policy)
    return (number.number if number else None), how


def test_the_same_panel_gets_its_reserved_number_again() -> None:
    pool = [free("+73830000001"), reserved("+73830000002", "p-1", left=10 * MINUTE)]
    assert choose(pool) == ("+73830000002", "reused")


def test_a_lease_whose_release_never_came_is_reused_by_its_panel() -> None:
    pool = [free("+73830000001"), leased("+73830000002", "p-1")]
    assert choose(pool) == ("+73830000002", "reused")


def test_the_least_recently_used_free_number_comes_first_never_used_before_all() -> None:
    pool = [
        free("+73830000001", used=MINUTE),
        free("+73830000002", used=3 * MINUTE),
        free("+73830000003", used=2 * MINUTE),
    ]
    assert choose(pool) == ("+73830000002", "lru")
    assert choose([*pool, free("+73830000009")]) == ("+73830000009", "lru")


def test_lru_ties_go_to_the_lower_number() -> None:
    pool = [free("+73830000003", used=MINUTE), free("+73830000002", used=MINUTE)]
    assert choose(pool) == ("+73830000002", "lru")


def test_an_expired_reservation_is_free_for_everyone_and_not_the_panels_own() -> None:
    expired = reserved("+73830000001", "p-2", left=-MINUTE)
    assert choose([expired, free("+73830000002", used=MINUTE)], panel_id="p-9") == (
        "+73830000001", "lru",
    )  # fmt: skip
    own_expired = reserved("+73830000001", "p-1", left=-MINUTE)
    # Its own expired number is just another free one: used 5 minutes ago, so LRU picks it.
    assert choose([own_expired, free("+73830000002", used=MINUTE)]) == ("+73830000001", "lru")


def test_another_panels_live_reservation_is_not_taken_while_a_free_number_exists() -> None:
    pool = [reserved("+73830000001", "p-2", left=MINUTE), free("+73830000002", used=MINUTE)]
    assert choose(pool) == ("+73830000002", "lru")


def test_an_exhausted_pool_takes_the_oldest_reservation_under_take_oldest() -> None:
    pool = [
        reserved("+73830000001", "p-2", left=30 * MINUTE),
        reserved("+73830000002", "p-3", left=5 * MINUTE),
        reserved("+73830000003", "p-4", left=50 * MINUTE),
        leased("+73830000004", "p-5"),
    ]
    assert choose(pool, policy="take_oldest") == ("+73830000002", "taken_over")


def test_an_exhausted_pool_gives_the_fallback_under_fallback() -> None:
    pool = [reserved("+73830000001", "p-2", left=MINUTE), leased("+73830000002", "p-3")]
    assert choose(pool, policy="fallback") == (None, "fallback")


def test_blocked_numbers_are_never_chosen() -> None:
    pool = [blocked("+73830000001"), blocked("+73830000002")]
    assert choose(pool, policy="take_oldest") == (None, "fallback")
    assert choose([*pool, free("+73830000003", used=MINUTE)]) == ("+73830000003", "lru")


def test_another_panels_lease_is_never_taken_even_when_nothing_else_is_left() -> None:
    pool = [leased("+73830000001", "p-2"), leased("+73830000002", "p-3")]
    assert choose(pool, policy="take_oldest") == (None, "fallback")


def test_an_empty_pool_gives_the_fallback() -> None:
    assert choose([]) == (None, "fallback")
