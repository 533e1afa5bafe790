#!/usr/bin/env python3
"""`softswitch-healthcheck`: the Docker health checks of the softswitch image (stdlib only).

    softswitch-healthcheck url URL      GET URL answers 2xx (e.g. the routing /health)
    softswitch-healthcheck metrics      GET http://$SOFTSWITCH_METRICS_HOST:$SOFTSWITCH_METRICS_PORT/metrics
    softswitch-healthcheck tcp HOST PORT   something accepts TCP connections there
    softswitch-healthcheck address IP   IP is an address of this network namespace

Exit status 0 healthy, 1 unhealthy (what Docker expects).
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from collections.abc import Sequence

TIMEOUT_SECONDS = 3.0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return 200 <= int(response.status) < 300
    except OSError:  # URLError, HTTPError (non-2xx), timeouts, refused connections
        return False


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


def address_present(ip: str) -> bool:
    """Binding to an address succeeds only when an interface of the namespace has it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
            return True
    except OSError:
        return False


def check(argv: Sequence[str]) -> bool:
    match list(argv):
        case ["url", url]:
            return http_ok(url)
        case ["metrics"]:
            host = os.environ.get("SOFTSWITCH_METRICS_HOST", "127.0.0.1")
            port = os.environ.get("SOFTSWITCH_METRICS_PORT", "0")
            return port != "0" and http_ok(f"http://{host}:{port}/metrics")
        case ["tcp", host, port]:
            return tcp_open(host, int(port))
        case ["address", ip]:
            return address_present(ip)
    raise SystemExit(f"usage: {__doc__}")


if __name__ == "__main__":
    sys.exit(0 if check(sys.argv[1:]) else 1)
