"""112 pool benchmark: latency of ``lease_number`` with many emergency calls at once.

Every caller is a panel in a loop: lease a number, hold the call (``--hold-ms``), release it,
pause (``--pause-ms``), again, for ``--seconds``. The callers share ``--connections``
database connections (PostgreSQL here allows 100), as the call apps would share a pool, and
are spread over ``--processes`` client processes (one Python process cannot drive 200 callers
without becoming the bottleneck itself); latency is the caller's: waiting for a connection
included. Scenarios:

- 1 caller leasing back to back (the uncontended baseline) and ``--callers`` callers;
- one city holding the whole pool (every lease competes for the same LRU head) and
  ``--cities`` cities sharing it.

The pool is large enough that nobody is ever refused (fallbacks are counted and should be 0).

    .venv/bin/python bench/sos_lease.py [--seconds 5] [--callers 200] [--connections 50]

Uses the stack's PostgreSQL with a scratch database of its own; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import psycopg
import uvloop

from softswitch.db import temporary_database
from softswitch.settings import DatabaseSettings, load_settings
from softswitch.sos.store import lease_number, release_number

NUMBERS_PER_PANEL = 1.0 / 2  # more panels than numbers, as in life


@dataclass(frozen=True)
class Result:
    name: str
    callers: int
    cities: int
    leases: int
    fallbacks: int
    seconds: float
    latencies: list[float]

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def seed(database: DatabaseSettings, *, cities: int, numbers: int) -> list[str]:
    """``cities`` cities sharing ``numbers`` pool numbers, and twice as many panels; returns
    the panels' accounts."""
    panels = int(numbers / NUMBERS_PER_PANEL)
    with psycopg.connect(database.url) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO sos_city (city_id, name, fias_code, gateway_uri, fallback_number)"
            " VALUES (%s, %s, %s, 'sip:gw.example', '+70000000000')",
            [(f"c{c}", f"City {c}", f"00000000-0000-4000-8000-{c:012d}") for c in range(cities)],
        )
        cursor.executemany(
            "INSERT INTO sos_number (number, city_id) VALUES (%s, %s)",
            [(f"+7{n:010d}", f"c{n % cities}") for n in range(numbers)],
        )
        cursor.executemany(
            "INSERT INTO intercom_panel (panel_id, account, building, city_id)"
            " VALUES (%s, %s, 'b', %s)",
            [(f"p{p}", f"door-{p}", f"c{p % cities}") for p in range(panels)],
        )
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return [f"door-{p}" for p in range(panels)]


async def run(
    database: DatabaseSettings,
    accounts: list[str],
    *,
    callers: int,
    connections: int,
    seconds: float,
    hold_ms: float,
    pause_ms: float,
) -> tuple[list[float], int]:
    """Latencies of every lease of ``callers`` callers, and how many got a fallback."""
    free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    opened = [
        await psycopg.AsyncConnection.connect(database.url, autocommit=True)
        for _ in range(min(callers, connections))
    ]
    for conn in opened:
        free.put_nowait(conn)
    latencies: list[float] = []
    fallbacks = 0
    deadline = time.monotonic() + seconds
    # Each caller is its own panels (a slice of all), so no two callers share a panel.
    slices = [accounts[i::callers] for i in range(callers)]

    async def caller(index: int) -> None:
        nonlocal fallbacks
        rng = random.Random(index)
        await asyncio.sleep(rng.uniform(0, (hold_ms + pause_ms) / 1000))  # no lockstep start
        calls = 0
        while time.monotonic() < deadline:
            call_id = f"call-{index}-{calls}"
            calls += 1
            started = time.perf_counter()
            conn = await free.get()
            try:
                outcome = await lease_number(
                    conn, panel_account=rng.choice(slices[index]), call_id=call_id
                )
            finally:
                free.put_nowait(conn)
            latencies.append(time.perf_counter() - started)
            assert outcome.lease is not None
            if outcome.lease.how == "fallback":
                fallbacks += 1
            await asyncio.sleep(rng.uniform(0.5, 1.5) * hold_ms / 1000)
            conn = await free.get()
            try:
                await release_number(conn, number=outcome.lease.number, call_id=call_id)
            finally:
                free.put_nowait(conn)
            await asyncio.sleep(rng.uniform(0.5, 1.5) * pause_ms / 1000)

    await asyncio.gather(*(caller(i) for i in range(callers)))
    for conn in opened:
        await conn.close()
    return latencies, fallbacks


@dataclass(frozen=True)
class Share:
    """What one client process runs."""

    url: str
    accounts: list[str]
    callers: int
    connections: int
    seconds: float
    hold_ms: float
    pause_ms: float


def run_share(share: Share) -> tuple[list[float], int]:
    return uvloop.run(
        run(
            DatabaseSettings(url=share.url),
            share.accounts,
            callers=share.callers,
            connections=share.connections,
            seconds=share.seconds,
            hold_ms=share.hold_ms,
            pause_ms=share.pause_ms,
        )
    )


def scenario(
    database: DatabaseSettings,
    accounts: list[str],
    args: argparse.Namespace,
    *,
    callers: int,
    cities: int,
) -> Result:
    processes = min(args.processes, callers)
    shares = [
        Share(
            url=database.url,
            accounts=accounts[share::processes],
            callers=callers // processes,
            connections=max(1, args.connections // processes),
            seconds=args.seconds,
            hold_ms=args.hold_ms if callers > 1 else 0.0,
            pause_ms=args.pause_ms if callers > 1 else 0.0,
        )
        for share in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        done = pool.map(run_share, shares)
    latencies = [latency for share, _ in done for latency in share]
    name = f"{callers} caller(s), {cities} city(ies)"
    return Result(
        name, callers, cities, len(latencies), sum(f for _, f in done), args.seconds, latencies
    )


def idle_round_trips(database: DatabaseSettings, gap_ms: float, samples: int) -> list[float]:
    """Seconds of a bare ``SELECT 1`` sent ``gap_ms`` after the last one: the machine's cost
    of waking client and server from idle, which every lease at a low rate pays too."""
    latencies = []
    with psycopg.connect(database.url, autocommit=True) as conn:
        for _ in range(samples):
            time.sleep(gap_ms / 1000)
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            latencies.append(time.perf_counter() - started)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--connections", type=int, default=40)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--numbers", type=int, default=2000, help="pool size, all cities")
    parser.add_argument("--cities", type=int, default=8)
    parser.add_argument("--hold-ms", type=float, default=200.0)
    parser.add_argument("--pause-ms", type=float, default=200.0)
    parser.add_argument(
        "--idle-gap-ms", type=float, default=50.0, help="gap before each SELECT 1 of the baseline"
    )
    args = parser.parse_args()
    results = []
    for cities in (1, args.cities):
        with temporary_database(load_settings().database, prefix="softswitch_bench") as database:
            accounts = seed(database, cities=cities, numbers=args.numbers)
            for callers in (1, args.callers):
                results.append(scenario(database, accounts, args, callers=callers, cities=cities))
            if cities == 1:
                hot = idle_round_trips(database, 0, 500)
                idle = idle_round_trips(database, args.idle_gap_ms, 200)
    print(
        f"pool {args.numbers} numbers, {args.connections} connections in {args.processes}"
        f" processes, hold {args.hold_ms:g} ms, pause {args.pause_ms:g} ms,"
        f" {args.seconds:g} s a scenario"
    )
    for label, probe in (("back to back", hot), (f"{args.idle_gap_ms:g} ms apart", idle)):
        ordered = sorted(probe)
        print(
            f"SELECT 1 {label:<17} p50 {statistics.median(ordered) * 1000:.2f} ms"
            f" p99 {ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000:.2f} ms"
        )
    print(
        f"{'scenario':<28} {'leases':>7} {'leases/s':>9} {'fallback':>8}"
        f" {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'p99/base':>8}"
    )
    baseline: dict[int, float] = {}
    for result in results:
        p99 = result.percentile(0.99)
        base = baseline.setdefault(result.cities, p99)
        print(
            f"{result.name:<28} {result.leases:>7} {result.leases / result.seconds:>9.0f}"
            f" {result.fallbacks:>8} {statistics.median(result.latencies) * 1000:>7.2f}"
            f" {result.percentile(0.95):>7.2f} {p99:>7.2f} {p99 / base:>8.1f}"
        )


if __name__ == "__main__":
    main()
