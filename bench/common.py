"""What the benchmarks share: CPU time of a process and a scratch database of routes."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from routing_engine import realistic_table

from routing.models import RouteSpec
from routing.store import apply_import
from softswitch.db import temporary_database
from softswitch.settings import DatabaseSettings, load_settings


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def database_with_routes(routes: int, *first: RouteSpec) -> Iterator[DatabaseSettings]:
    """A temporary database holding ``first`` and a realistic table of ``routes`` routes."""
    with temporary_database(load_settings().database, prefix="softswitch_bench") as database:
        rows, _ = realistic_table(routes, random.Random(7))
        with psycopg.connect(database.url) as conn:
            apply_import(conn, [*first, *(spec for _, spec in rows)], replace=False)
        yield database
