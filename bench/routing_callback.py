"""Callback-routing decision cost: a ``callback`` route over 100k reserved pool numbers, next
to an ordinary route of a 10k-route table, in the same process and run.

    .venv/bin/python bench/routing_callback.py
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from routing.engine import decide
from routing.models import CallbackTarget, CallRequest, RouteSpec
from routing.table import RouteTable

ROUTES = 10_000
RESERVED = 100_000
DECISIONS = 20_000


def build_table() -> RouteTable:
    specs = [
        RouteSpec.model_validate(
            {"name": f"r{i}", "match": {"callee": f"^7{i:05d}\\d{{5}}$"}, "action": "relay",
             "destinations": ["sip:gw:5060"]}
        )
        for i in range(ROUTES)
    ]  # fmt: skip
    specs.insert(
        0,
        RouteSpec.model_validate(
            {"name": "112 callbacks", "priority": 1,
             "match": {"callee": r"^\+7383\d{7}$"}, "action": "callback"}
        ),
    )  # fmt: skip
    table = RouteTable.compile(list(enumerate(specs)))
    return table.with_callbacks(
        {
            f"+7383{n:07d}": CallbackTarget(panel_account=f"door{n}", panel_id=f"p{n}", city_id="c")
            for n in range(RESERVED)
        }
    )


def percentiles_us(table: RouteTable, callee: str, now: datetime) -> tuple[float, float]:
    call = CallRequest(caller="112", callee=callee)
    samples = []
    for _ in range(DECISIONS):
        started = time.perf_counter_ns()
        decide(call, table, now)
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def main() -> None:
    table, now = build_table(), datetime.now(UTC)
    print(f"{ROUTES} routes, {RESERVED} reserved numbers, {DECISIONS} decisions each")
    for label, callee in (
        ("ordinary route (baseline)", "70123412345"),
        ("callback, reserved number", "+73830004242"),
        ("callback, no reservation -> next route", "+73839999999"),
    ):
        p50, p99 = percentiles_us(table, callee, now)
        print(f"{label:40} p50 {p50:6.1f} us  p99 {p99:6.1f} us")


if __name__ == "__main__":
    main()
