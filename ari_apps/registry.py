"""Every Stasis app this project ships, by its ARI name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ari_apps.machine import StasisAppSpec
from ari_apps.smoke.machine import SMOKE_APP

APPS: dict[str, StasisAppSpec[Any]] = {spec.name: spec for spec in (SMOKE_APP,)}


def select_apps(names: Iterable[str]) -> list[StasisAppSpec[Any]]:
    unknown = sorted(set(names) - APPS.keys())
    if unknown:
        raise KeyError(f"unknown Stasis app(s) {unknown}; known: {sorted(APPS)}")
    return [APPS[name] for name in dict.fromkeys(names)]
