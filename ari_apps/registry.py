"""Every Stasis app this project ships, by its ARI name.

Each app's package has an ``app.py`` whose ``build(settings, resources)`` makes its spec; it
is imported only when the app is selected, so a process pays only for the apps it runs.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, cast

from ari_apps.machine import StasisAppSpec
from softswitch.settings import Settings

AppBuilder = Callable[[Settings, AsyncExitStack], Awaitable[StasisAppSpec[Any]]]

APPS = ("smoke", "multiring", "panel", "sos", "acd")


def select_apps(names: Iterable[str]) -> list[AppBuilder]:
    unknown = sorted(set(names) - set(APPS))
    if unknown:
        raise KeyError(f"unknown Stasis app(s) {unknown}; known: {sorted(APPS)}")
    return [
        cast(AppBuilder, importlib.import_module(f"ari_apps.{name}.app").build)
        for name in dict.fromkeys(names)
    ]
