"""The admin API's access rules, without I/O: the failed-authentication window, roles, tokens,
and which permission every endpoint of the built app asks for."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr

from softswitch.admin.app import PREFIX, RESOURCES, service
from softswitch.admin.auth import (
    ROLES,
    FailureWindow,
    Permission,
    Role,
    new_token,
    permits,
    token_digest,
)
from softswitch.settings import (
    AdminSettings,
    AmiSettings,
    AmqpSettings,
    AriSettings,
    KamailioSettings,
    Settings,
)

pytestmark = pytest.mark.unit


def test_a_client_may_fail_up_to_the_limit_then_waits_until_the_oldest_failure_expires() -> None:
    window = FailureWindow(limit=3, window_seconds=60)
    for second in (0.0, 10.0, 20.0):
        assert window.retry_after("10.0.0.1", second) is None
        window.record_failure("10.0.0.1", second)
    assert window.retry_after("10.0.0.1", 20.0) == 40.0  # the failure at 0 leaves at 60
    assert window.retry_after("10.0.0.1", 59.5) == 0.5
    assert window.retry_after("10.0.0.1", 60.0) is None  # two failures left in the window
    window.record_failure("10.0.0.1", 60.0)
    assert window.retry_after("10.0.0.1", 60.0) == 10.0  # now the failure at 10 is the oldest


def test_the_window_slides_failures_older_than_a_minute_do_not_count() -> None:
    window = FailureWindow(limit=2, window_seconds=60)
    window.record_failure("a", 0.0)
    window.record_failure("a", 61.0)
    assert window.retry_after("a", 61.0) is None
    window.record_failure("a", 62.0)
    assert window.retry_after("a", 62.0) == 59.0


def test_clients_are_counted_apart() -> None:
    window = FailureWindow(limit=1)
    window.record_failure("10.0.0.1", 0.0)
    assert window.retry_after("10.0.0.1", 1.0) == 59.0
    assert window.retry_after("10.0.0.2", 1.0) is None


def test_while_blocked_the_wait_does_not_grow_by_asking() -> None:
    window = FailureWindow(limit=2, window_seconds=60)
    window.record_failure("a", 0.0)
    window.record_failure("a", 1.0)
    waits = [window.retry_after("a", float(second)) for second in range(2, 60, 7)]
    assert waits == [60.0 - second for second in range(2, 60, 7)]
    assert window.retry_after("a", 60.0) is None


def test_idle_clients_are_forgotten_and_only_the_last_failures_are_kept() -> None:
    window = FailureWindow(limit=3, window_seconds=60)
    for second in range(100):
        window.record_failure("scanner", float(second) / 10)
    window.record_failure("other", 50.0)
    # Only the failures at 9.7, 9.8 and 9.9 are kept: 9.7 leaves the window at 69.7.
    assert window.retry_after("scanner", 9.9) == pytest.approx(69.7 - 9.9)
    window.forget_idle(75.0)
    assert window.clients() == 1
    window.forget_idle(111.0)
    assert window.clients() == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FailureWindow(limit=0)


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("read_only", {"read"}),
        ("supervisor", {"read", "supervise"}),
        ("admin", {"read", "supervise", "administer"}),
    ],
)
def test_roles_are_nested_permission_sets(role: Role, allowed: set[str]) -> None:
    assert role in ROLES
    permissions: tuple[Permission, ...] = ("read", "supervise", "administer")
    assert {p for p in permissions if permits(role, p)} == allowed


def test_tokens_are_random_32_bytes_and_stored_as_their_sha256() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(token) == 43 for token in tokens)
    token = next(iter(tokens))
    assert token_digest(token) == hashlib.sha256(token.encode()).digest()
    assert len(token_digest(token)) == 32


SUPERVISOR_ACTIONS = {
    ("POST", "/api/v1/acd/waiters/{waiter_id}/priority"),
    ("POST", "/api/v1/acd/waiters/{waiter_id}/move"),
    ("POST", "/api/v1/acd/waiters/{waiter_id}/send"),
    ("POST", "/api/v1/acd/waiters/{waiter_id}/remove"),
    ("DELETE", "/api/v1/acd/waiters/{waiter_id}"),
    ("POST", "/api/v1/acd/agents/{agent_id}/status"),
}


def test_every_endpoint_asks_the_permission_its_method_and_kind_need() -> None:
    """GET reads, the ACD supervisor actions supervise, every other change administers;
    only /health asks nothing."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    asked: dict[tuple[str, str], set[str]] = {}
    for prefix, router in [(PREFIX, m.router) for m in RESOURCES] + [("", service(settings))]:
        for route in router.routes:
            assert isinstance(route, APIRoute), route
            names = {getattr(d.dependency, "__name__", "") for d in route.dependencies}
            for method in route.methods or ():
                asked[method, prefix + route.path] = {n for n in names if n.startswith("require_")}
    assert asked.pop(("GET", "/health")) == set()
    assert asked.keys() >= SUPERVISOR_ACTIONS
    assert len(asked) > 50
    for (method, path), permissions in asked.items():
        if method == "GET":
            expected = {"require_read"}
        elif (method, path) in SUPERVISOR_ACTIONS:
            expected = {"require_supervise"}
        else:
            expected = {"require_administer"}
        assert permissions == expected, (method, path)


def test_production_refuses_an_admin_api_on_a_public_address() -> None:
    secret = SecretStr("s" * 16)
    with pytest.raises(ValueError, match="SOFTSWITCH_ADMIN_HOST"):
        Settings(  # type: ignore[call-arg]
            _env_file=None,
            environment="production",
            ari=AriSettings(password=secret),
            ami=AmiSettings(password=secret),
            kamailio=KamailioSettings(jsonrpc_token=secret),
            amqp=AmqpSettings(url=SecretStr("amqp://softswitch:secret@127.0.0.1:5672/")),
            admin=AdminSettings(host="0.0.0.0"),
        )
