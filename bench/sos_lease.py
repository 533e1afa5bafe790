"""112 pool benchmark: latency of ``lease_number`` with many emergency calls at once.

Every caller is a panel in a loop: lease a number, hold the call, release it, pause, again,
for ``--seconds``; hold and pause times are random (exponential, means ``--hold-ms`` and
``--pause-ms``), so calls start independently of each other, as real ones do. The callers
share database connections through the ARI app's own ``KeptConnection``, in one process
by default, as the app runs them; ``--processes 4 --connections 40 --hold-ms 200
--pause-ms 200`` is a saturation test. Latency is the caller's: waiting for a connection
included. Scenarios, each in one city holding the whole pool (every lease competes for the
same LRU head) and in ``--cities``:

- baselines: 1 caller leasing back to back (hot), and 1 caller leasing ``--idle-gap-ms``
  after its previous lease (the cost of waking client and server from idle, which every
  lease at a real call rate pays);
- ``--callers`` callers sharing one connection, then ``--connections`` (default: the app's
  setting ``SOFTSWITCH_SOS_DATABASE_CONNECTIONS``).

The pool is large enough that nobody is ever refused (fallbacks are counted and should be 0).

    .venv/bin/python bench/sos_lease.py [--seconds 90] [--callers 200] [--hold-ms 5000]

Uses the stack's PostgreSQL with a scratch database of its own; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import multiprocessing
import random
import statistics
import time
from dataclasses import dataclass

import psycopg
import uvloop

from softswitch.db import KeptConnection, temporary_database
from softswitch.settings import DatabaseSettings, load_settings
from softswitch.sos.store import lease_number, release_number

NUMBERS_PER_PANEL = 1.0 / 2  # more panels than numbers, as in life


@dataclass(frozen=True)
class Pacing:
    """How long a caller holds its call and pauses before the next: exactly these means, or
    exponential with them (independent callers)."""

    hold_ms: float
    pause_ms: float
    exponential: bool

    def wait(self, rng: random.Random, mean_ms: float) -> float:
        if not mean_ms:
            return 0.0
        return rng.expovariate(1000 / mean_ms) if self.exponential else mean_ms / 1000


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

    def percentile_interval(self, fraction: float) -> tuple[float, float]:
        """95% confidence interval of a percentile, in ms, free of any assumed distribution:
        the order statistics around ``n * fraction`` (normal approximation of the binomial).
        A p99 of a few hundred leases rests on its few slowest: this says whether it is
        really under a target."""
        ordered = sorted(self.latencies)
        count = len(ordered)
        spread = 1.96 * math.sqrt(count * fraction * (1 - fraction))
        low = max(0, math.floor(count * fraction - spread) - 1)
        high = min(count - 1, math.ceil(count * fraction + spread))
        return ordered[low] * 1000, ordered[high] * 1000


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
    pacing: Pacing,
) -> tuple[list[float], int]:
    """Latencies of every lease of ``callers`` callers, and how many got a fallback."""
    latencies: list[float] = []
    fallbacks = 0
    deadline = time.monotonic() + seconds
    # Each caller is its own panels (a slice of all), so no two callers share a panel.
    slices = [accounts[i::callers] for i in range(callers)]

    async def caller(index: int, pool: KeptConnection) -> None:
        nonlocal fallbacks
        rng = random.Random(index)
        # No lockstep start.
        await asyncio.sleep(rng.uniform(0, (pacing.hold_ms + pacing.pause_ms) / 1000))
        calls = 0
        while time.monotonic() < deadline:
            call_id = f"call-{index}-{calls}"
            panel = rng.choice(slices[index])
            calls += 1
            started = time.perf_counter()
            outcome = await pool.run(
                functools.partial(lease_number, panel_account=panel, call_id=call_id)
            )
            latencies.append(time.perf_counter() - started)
            assert outcome.lease is not None
            if outcome.lease.how == "fallback":
                fallbacks += 1
            await asyncio.sleep(pacing.wait(rng, pacing.hold_ms))
            await pool.run(
                functools.partial(release_number, number=outcome.lease.number, call_id=call_id)
            )
            await asyncio.sleep(pacing.wait(rng, pacing.pause_ms))

    # The ARI app's own connection handling (softswitch.db.KeptConnection).
    async with KeptConnection(database.url, connections=connections) as pool:
        await asyncio.gather(*(caller(i, pool) for i in range(callers)))
    return latencies, fallbacks


@dataclass(frozen=True)
class Share:
    """What one client process runs."""

    url: str
    accounts: list[str]
    callers: int
    connections: int
    seconds: float
    pacing: Pacing


def run_share(share: Share) -> tuple[list[float], int]:
    return uvloop.run(
        run(
            DatabaseSettings(url=share.url),
            share.accounts,
            callers=share.callers,
            connections=share.connections,
            seconds=share.seconds,
            pacing=share.pacing,
        )
    )


def scenario(
    database: DatabaseSettings,
    accounts: list[str],
    args: argparse.Namespace,
    *,
    name: str,
    callers: int,
    connections: int,
    cities: int,
    pacing: Pacing,
) -> Result:
    processes = min(args.processes, callers)
    shares = [
        Share(
            url=database.url,
            accounts=accounts[share::processes],
            callers=callers // processes,
            connections=max(1, connections // processes),
            seconds=args.seconds,
            pacing=pacing,
        )
        for share in range(processes)
    ]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        done = pool.map(run_share, shares)
    latencies = [latency for share, _ in done for latency in share]
    return Result(
        f"{name}, {cities} city(ies)",
        callers,
        cities,
        len(latencies),
        sum(f for _, f in done),
        args.seconds,
        latencies,
    )


def vacuum(database: DatabaseSettings) -> None:
    """Start a scenario from clean tables: the back-to-back one leaves tens of thousands of
    dead pool rows that autovacuum (a minute's nap) clears at a moment of its choosing, so
    the next scenario would pay for them, or not, by chance."""
    with psycopg.connect(database.url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE sos_number, sos_lease")


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
    # 90 s: ~1,900 leases a scenario, enough for a p99 whose 95% interval ends below the
    # slowest few (at 30 s, ~650 leases, it reaches the single slowest).
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument(
        "--connections",
        type=int,
        default=load_settings().sos.database_connections,
        help="of the callers (default: the app's, SOFTSWITCH_SOS_DATABASE_CONNECTIONS)",
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--numbers", type=int, default=2000, help="pool size, all cities")
    parser.add_argument("--cities", type=int, default=8)
    parser.add_argument("--hold-ms", type=float, default=5000.0, help="mean call time")
    parser.add_argument("--pause-ms", type=float, default=5000.0, help="mean time between calls")
    parser.add_argument(
        "--idle-gap-ms", type=float, default=50.0, help="gap before each lease of the idle baseline"
    )
    args = parser.parse_args()
    pacing = Pacing(args.hold_ms, args.pause_ms, exponential=True)
    scenarios = (
        ("1 caller, back to back", 1, 1, Pacing(0, 0, exponential=False)),
        (f"1 caller, {args.idle_gap_ms:g} ms apart", 1, 1, Pacing(0, args.idle_gap_ms, False)),
        (f"{args.callers} callers, 1 connection", args.callers, 1, pacing),
        (
            f"{args.callers} callers, {args.connections} conn.",
            args.callers,
            args.connections,
            pacing,
        ),
    )
    # Per city count, the results in the order of ``scenarios``; the second is the idle baseline.
    results: dict[int, list[Result]] = {}
    for cities in (1, args.cities):
        with temporary_database(load_settings().database, prefix="softswitch_bench") as database:
            accounts = seed(database, cities=cities, numbers=args.numbers)
            for name, callers, connections, scenario_pacing in scenarios:
                vacuum(database)
                results.setdefault(cities, []).append(
                    scenario(
                        database,
                        accounts,
                        args,
                        name=name,
                        callers=callers,
                        connections=connections,
                        cities=cities,
                        pacing=scenario_pacing,
                    )
                )
            if cities == 1:
                hot = idle_round_trips(database, 0, 500)
                idle = idle_round_trips(database, args.idle_gap_ms, 200)
    print(
        f"pool {args.numbers} numbers, {args.connections} connection(s) in {args.processes}"
        f" process(es), mean hold {args.hold_ms:g} ms, mean pause {args.pause_ms:g} ms,"
        f" {args.seconds:g} s a scenario"
    )
    for label, probe in (("back to back", hot), (f"{args.idle_gap_ms:g} ms apart", idle)):
        ordered = sorted(probe)
        print(
            f"SELECT 1 {label:<17} p50 {statistics.median(ordered) * 1000:.2f} ms"
            f" p99 {ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000:.2f} ms"
        )
    print(
        f"{'scenario':<38} {'leases':>7} {'leases/s':>9} {'fallback':>8}"
        f" {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'p99 95% CI':>12} {'p99/idle 1':>10}"
    )
    for of_cities in results.values():
        idle_p99 = of_cities[1].percentile(0.99)
        for result in of_cities:
            p99 = result.percentile(0.99)
            low, high = result.percentile_interval(0.99)
            print(
                f"{result.name:<38} {result.leases:>7} {result.leases / result.seconds:>9.0f}"
                f" {result.fallbacks:>8} {statistics.median(result.latencies) * 1000:>7.2f}"
                f" {result.percentile(0.95):>7.2f} {p99:>7.2f} {f'{low:.2f}-{high:.2f}':>12}"
                f" {p99 / idle_p99:>10.2f}"
            )


if __name__ == "__main__":
    main()
