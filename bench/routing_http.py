"""Routing HTTP service benchmark: latency at a fixed request rate, on loopback.

Starts the real service (`softswitch routing`) on a scratch database holding a realistic
table, and, as the same-run baseline, a trivial aiohttp server answering a fixed JSON (the
"trivial routing server" of PLATFORM.md). Each is driven at ``--rate`` requests/s over
``--connections`` keep-alive connections (as Kamailio's http_async_client workers hold them),
and client-side latency percentiles are reported.

    .venv/bin/python bench/routing_http.py [--rate 2000] [--seconds 10] [--routes 10000]

Needs the local stack's PostgreSQL (softswitch stack up). Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, database_with_routes
from routing_engine import calls_for, realistic_table

TRIVIAL_SERVER = """
import sys
from aiohttp import web
BODY = b'{"version":"1.0","routing":"serial","routes":[{"uri":"sip:1@127.0.0.1:5071"}],' \\
       b'"action":"relay","route":"r","caller":"1","callee":"1","reject_code":0,' \\
       b'"reject_reason":"","app":"","app_args":"","flags":","}'
async def route(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_post("/route", route)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def process(command: list[str], env: dict[str, str], ready_url: str) -> Iterator[int]:
    child = subprocess.Popen(command, env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(ready_url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield child.pid
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(10)


async def drive(url: str, bodies: list[bytes], rate: float, seconds: float, connections: int):
    """Open-loop load: each connection sends on its own schedule; latency per request."""
    parsed = urlsplit(url)
    latencies: list[float] = []
    errors = 0
    per_connection = rate / connections

    async def connection(index: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
        interval = 1 / per_connection
        start = time.perf_counter() + index * interval / connections
        n = 0
        while True:
            due = start + n * interval
            now = time.perf_counter()
            if due - start > seconds:
                break
            if due > now:
                await asyncio.sleep(due - now)
            body = bodies[(n * connections + index) % len(bodies)]
            writer.write(
                b"POST " + parsed.path.encode() + b" HTTP/1.1\r\nHost: r\r\n"
                b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            # Latency from when the request was due: queueing behind a slow answer counts.
            latencies.append(time.perf_counter() - due)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            n += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def measured(pid: int, url: str, bodies: list[bytes], args: argparse.Namespace) -> tuple:
    asyncio.run(drive(url, bodies, args.rate, 1, args.connections))  # warm up
    cpu_before = cpu_seconds(pid)
    latencies, errors, elapsed = asyncio.run(
        drive(url, bodies, args.rate, args.seconds, args.connections)
    )
    cpu_per_request = (cpu_seconds(pid) - cpu_before) / len(latencies)
    return latencies, errors, elapsed, cpu_per_request


def report(
    label: str, latencies: list[float], errors: int, elapsed: float, cpu_per_request: float
) -> tuple[float, float]:
    q = statistics.quantiles(latencies, n=1000)
    p50, p99, p999 = q[499] * 1000, q[989] * 1000, q[998] * 1000
    print(
        f"| {label} | {len(latencies) / elapsed:,.0f} | {p50:.2f} | {p99:.2f} | {p999:.2f}"
        f" | {cpu_per_request * 1e6:.0f} | {errors} |"
    )
    return p99, cpu_per_request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--routes", type=int, default=10000)
    args = parser.parse_args()
    rng = random.Random(11)
    _, dids = realistic_table(args.routes, random.Random(7))
    bodies = [
        json.dumps(
            {
                "call_id": f"bench-{i}",
                "caller": c.caller,
                "caller_host": "pbx.example",
                "callee": c.callee,
                "callee_host": "sbc.example",
                "trusted": True,
            }
        ).encode()
        for i, c in enumerate(calls_for(dids, 5000, rng))
    ]
    routing_port, trivial_port = free_port(), free_port()
    print(
        f"{args.rate:,.0f} requests/s for {args.seconds:.0f} s over {args.connections}"
        f" keep-alive connections; {args.routes:,} routes\n"
    )
    print(
        "| server | achieved req/s | p50 ms | p99 ms | p99.9 ms | server CPU us/request | errors |"
    )
    print("|---|---|---|---|---|---|---|")
    with database_with_routes(args.routes) as database:
        env = {
            "SOFTSWITCH_DATABASE_URL": database.url,
            "SOFTSWITCH_ROUTING_PORT": str(routing_port),
        }
        command = [sys.executable, "-m", "softswitch", "routing"]
        health = f"http://127.0.0.1:{routing_port}/health"
        with process(command, env, health) as pid:
            while httpx.get(health).json()["routes"] == 0:
                time.sleep(0.2)
            url = f"http://127.0.0.1:{routing_port}/route"
            ours = report("softswitch routing", *measured(pid, url, bodies, args))
    command = [sys.executable, "-c", TRIVIAL_SERVER, str(trivial_port)]
    with process(command, {}, f"http://127.0.0.1:{trivial_port}/") as pid:
        url = f"http://127.0.0.1:{trivial_port}/route"
        trivial = report("trivial aiohttp (fixed answer)", *measured(pid, url, bodies, args))
    print(
        f"\np99 ours / trivial: {ours[0] / trivial[0]:.2f};"
        f" server CPU per request ours / trivial: {ours[1] / trivial[1]:.2f}"
    )


if __name__ == "__main__":
    main()
