"""Routing engine benchmark: decision latency for tables of 1k, 10k and 100k routes.

Realistic masks: exact DIDs (``^74951234567$``), number ranges (``^7916123\\d{4}$``),
caller-keyed routes, alternations and unanchored masks (RE2 Set path), ``next`` rewrites at
the top, a catch-all at the bottom, schedules on some routes. Calls mix hits and misses.
The naive in-order scan runs in the same process as the baseline.

Decisions back to back run with hot CPU caches. In a loaded softswitch they do not: between
two calls the same core runs Kamailio, sipp and everything else, so ``--cold-calls``
decisions are also measured after flushing the CPU's private caches (writing a buffer twice
the L2 size, not timed): what a decision costs on a busy machine.

    .venv/bin/python bench/routing_engine.py [--calls 20000] [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from routing.engine import decide, every_route
from routing.models import CallRequest, RouteSpec
from routing.table import RouteTable

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def realistic_table(size: int, rng: random.Random) -> tuple[list[tuple[int, RouteSpec]], list[str]]:
    specs: list[dict[str, Any]] = [
        {
            "name": "8 to 7",
            "priority": 0,
            "match": {"callee": r"^8(\d{10})$"},
            "rewrite": {"callee": r"7\1"},
            "action": "next",
        },
        {
            "name": "+7 to 7",
            "priority": 0,
            "match": {"callee": r"^\+7(\d{10})$"},
            "rewrite": {"callee": r"7\1"},
            "action": "next",
        },
    ]
    dids: list[str] = []
    for i in range(size - 3):
        kind = rng.random()
        priority = rng.randint(10, 1000)
        if kind < 0.60:
            did = f"7{rng.choice(['495', '499', '812', '343'])}{rng.randrange(10**7):07d}"
            dids.append(did)
            spec: dict[str, Any] = {
                "match": {"callee": f"^{did}$"},
                "action": "app",
                "app": "acd",
                "app_args": [str(i % 50)],
            }
            if rng.random() < 0.1:
                spec["schedule"] = {
                    "timezone": "Europe/Moscow",
                    "windows": [
                        {
                            "days": ["mon", "tue", "wed", "thu", "fri"],
                            "start": "09:00",
                            "end": "18:00",
                        }
                    ],
                }
        elif kind < 0.85:
            prefix = f"79{rng.randrange(10**5):05d}"
            dids.append(prefix + f"{rng.randrange(10**4):04d}")
            spec = {
                "match": {"callee": f"^{prefix}\\d{{4}}$"},
                "action": "relay",
                "destinations": [f"sip:gw{i % 8}.example:5060", "sip:backup.example:5060"],
            }
        elif kind < 0.95:
            spec = {
                "match": {
                    "caller": f"^7{rng.randrange(10**4):04d}\\d{{6}}$",
                    "callee": r"^7\d{10}$",
                },
                "action": "relay",
                "destinations": ["sip:trunk.example"],
                "flags": ["nat"],
            }
        elif kind < 0.99:
            a, b = rng.randrange(100, 1000), rng.randrange(100, 1000)
            spec = {
                "match": {"callee": f"^(7{a}|7{b})\\d{{7}}$"},
                "action": "reject",
                "reject": {"code": 403, "reason": "Barred"},
            }
        else:
            spec = {
                "match": {"callee": f"{rng.randrange(1000, 10000)}$"},
                "action": "relay",
                "destinations": ["sip:special.example"],
            }
        specs.append({"name": f"r{i}", "priority": priority, **spec})
    specs.append(
        {
            "name": "catch-all",
            "priority": 10**6,
            "match": {"callee": r"^\d+$"},
            "action": "reject",
            "reject": {"code": 404, "reason": "No Route"},
        }
    )
    rows = [(i + 1, RouteSpec.model_validate(s)) for i, s in enumerate(specs)]
    return rows, dids


def calls_for(dids: list[str], count: int, rng: random.Random) -> list[CallRequest]:
    calls = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:
            callee = rng.choice(dids)
        elif kind < 0.7:
            callee = "8" + rng.choice(dids)[1:]
        else:
            callee = f"7{rng.randrange(10**10):010d}"
        # From a trusted SBC, as Kamailio says of most calls: relays are decided, not refused.
        calls.append(
            CallRequest(caller=f"7{rng.randrange(10**10):010d}", callee=callee, trusted=True)
        )
    return calls


def measure(
    table: RouteTable, calls: list[CallRequest], *, flush_bytes: int = 0, **options: Any
) -> list[float]:
    """Microseconds per decision; with ``flush_bytes``, each after the L1/L2 caches were
    overwritten by writing that many bytes (not timed)."""
    flush, line = bytearray(flush_bytes), b"\x01" * (flush_bytes // 64)
    samples = []
    for call in calls:
        if flush_bytes:
            flush[::64] = line
        started = time.perf_counter_ns()
        decide(call, table, NOW, **options)
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000)[int(q * 10) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--naive-calls", type=int, default=300)
    parser.add_argument("--cold-calls", type=int, default=2000)
    parser.add_argument(
        "--flush-mib", type=int, default=8, help="cache flush buffer (twice the L2 size)"
    )
    args = parser.parse_args()
    rng = random.Random(7)
    print(
        "| routes | build s | decisions/s | p50 us | p99 us | p99.9 us | naive p50 | naive/fast"
        " | cold caches p50 us | cold p99 us |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in (int(s) for s in args.sizes.split(",")):
        rows, dids = realistic_table(size, rng)
        started = time.perf_counter()
        table = RouteTable.compile(rows)
        build = time.perf_counter() - started
        gc.freeze()  # as the service does after each load
        calls = calls_for(dids, args.calls, rng)
        measure(table, calls[:1000])  # warm RE2 DFAs and caches
        samples = measure(table, calls)
        cold = measure(table, calls[: args.cold_calls], flush_bytes=args.flush_mib * 1024 * 1024)
        naive = measure(table, calls[: args.naive_calls], candidates=every_route)
        for call in calls[: args.naive_calls]:
            assert decide(call, table, NOW) == decide(call, table, NOW, candidates=every_route)
        p50 = percentile(samples, 50)
        print(
            f"| {size:,} | {build:.2f} | {1e6 / statistics.fmean(samples):,.0f} | {p50:.1f}"
            f" | {percentile(samples, 99):.1f} | {percentile(samples, 99.9):.1f}"
            f" | {statistics.median(naive):,.0f} | {statistics.median(naive) / p50:,.0f}x"
            f" | {percentile(cold, 50):.1f} | {percentile(cold, 99):.1f} |"
        )


if __name__ == "__main__":
    main()
