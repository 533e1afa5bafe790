"""The compiled, immutable route table and its candidate index.

Routes are ordered by (priority, id); a route's position in that order is its identity for
the engine. Each route is indexed once, by the first that applies:

1. the literal prefix of its callee mask (``^7495\\d{7}$`` -> ``7495``): a dict probe per
   prefix length of the dialled number;
2. the literal prefix of its caller mask;
3. its callee mask in an RE2 Set (one linear pass over the number finds every mask that
   matches, however many there are);
4. its caller mask in an RE2 Set;
5. otherwise (no masks on numbers) it is a candidate for every call.

Candidates are a superset of the matching routes, in decision order; the engine then checks
them fully. Decision cost follows the number of plausible routes, not the table size.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import re2

from routing.models import RE2_OPTIONS, RouteSpec, compile_mask

log = logging.getLogger("softswitch.routing.table")

_META = set(".^$|()[]{}*+?\\")
_OPTIONAL_AFTER = ("?", "*", "{")
ANY = compile_mask("")  # matches everything; gives rewrites of empty masks a match object


def literal_prefix(mask: str) -> str:
    """Literal text every match of ``mask`` must start with ('' when none can be proven)."""
    if not mask.startswith("^") or _has_top_level_alternation(mask):
        return ""
    prefix: list[str] = []
    i = 1
    while i < len(mask):
        char = mask[i]
        if char == "\\":
            escaped = mask[i + 1 : i + 2]
            if not escaped or escaped.isalnum():  # \d, \w, \1 ...: not a literal
                break
            literal, width = escaped, 2
        elif char in _META:
            break
        else:
            literal, width = char, 1
        follower = mask[i + width : i + width + 1]
        if follower in _OPTIONAL_AFTER:  # the literal may be absent
            break
        prefix.append(literal)
        if follower == "+":
            break
        i += width
    return "".join(prefix)


def _has_top_level_alternation(mask: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(mask):
        char = mask[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        i += 1
    return False


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    position: int
    route_id: int
    spec: RouteSpec
    caller: Any
    caller_host: Any
    callee: Any
    callee_host: Any

    def match(
        self, caller: str, caller_host: str, callee: str, callee_host: str, now: datetime
    ) -> tuple[Any, Any] | None:
        """(caller match, callee match) when every mask matches and the schedule is open."""
        if self.caller_host is not None and self.caller_host.search(caller_host) is None:
            return None
        if self.callee_host is not None and self.callee_host.search(callee_host) is None:
            return None
        callee_match = (self.callee or ANY).search(callee)
        if callee_match is None:
            return None
        caller_match = (self.caller or ANY).search(caller)
        if caller_match is None:
            return None
        if self.spec.schedule is not None and not self.spec.schedule.is_open(now):
            return None
        return caller_match, callee_match


def compile_route(position: int, route_id: int, spec: RouteSpec) -> CompiledRoute:
    masks = spec.match
    return CompiledRoute(
        position=position,
        route_id=route_id,
        spec=spec,
        caller=compile_mask(masks.caller) if masks.caller else None,
        caller_host=compile_mask(masks.caller_host) if masks.caller_host else None,
        callee=compile_mask(masks.callee) if masks.callee else None,
        callee_host=compile_mask(masks.callee_host) if masks.callee_host else None,
    )


@dataclass(frozen=True)
class PrefixIndex:
    """Positions of routes by literal number prefix; lookups cost one dict probe per length."""

    by_prefix: dict[str, tuple[int, ...]] = field(default_factory=dict)
    lengths: tuple[int, ...] = ()

    @classmethod
    def build(cls, entries: Sequence[tuple[str, int]]) -> PrefixIndex:
        grouped: dict[str, list[int]] = {}
        for prefix, position in entries:
            grouped.setdefault(prefix, []).append(position)
        return cls(
            {prefix: tuple(positions) for prefix, positions in grouped.items()},
            tuple(sorted({len(prefix) for prefix in grouped})),
        )

    def lookup(self, number: str) -> Iterator[tuple[int, ...]]:
        for length in self.lengths:
            if length > len(number):
                return
            hit = self.by_prefix.get(number[:length])
            if hit:
                yield hit


# Beyond this many patterns one RE2 Set could outgrow its memory budget at match time, and a
# DFA out of memory reads as "no match" through the Python binding; split into several sets.
MAX_SET_PATTERNS = 5000


class MaskSet:
    """Routes whose mask on one number has no literal prefix, matched in one RE2 pass."""

    def __init__(self, entries: Sequence[tuple[str, int]]) -> None:
        self._sets: list[tuple[Any, tuple[int, ...]]] = []
        for start in range(0, len(entries), MAX_SET_PATTERNS):
            chunk = entries[start : start + MAX_SET_PATTERNS]
            mask_set = re2.Set.SearchSet(RE2_OPTIONS)
            for mask, _ in chunk:
                mask_set.Add(mask)
            mask_set.Compile()
            self._sets.append((mask_set, tuple(position for _, position in chunk)))

    def lookup(self, number: str) -> Iterator[tuple[int, ...]]:
        for mask_set, positions in self._sets:
            hits = mask_set.Match(number)
            if hits:
                yield tuple(sorted(positions[i] for i in hits))


@dataclass(frozen=True)
class RouteTable:
    """Enabled routes in decision order, with their index. Build with :meth:`compile`."""

    routes: tuple[CompiledRoute, ...]
    version: int
    by_callee: PrefixIndex
    by_caller: PrefixIndex
    callee_masks: MaskSet
    caller_masks: MaskSet
    unindexed: tuple[int, ...]

    @classmethod
    def compile(cls, rows: Sequence[tuple[int, RouteSpec]], *, version: int = 0) -> RouteTable:
        """``rows`` are (route id, spec); disabled routes are left out."""
        ordered = sorted(
            ((route_id, spec) for route_id, spec in rows if spec.enabled),
            key=lambda row: (row[1].priority, row[0]),
        )
        routes = tuple(
            compile_route(position, route_id, spec)
            for position, (route_id, spec) in enumerate(ordered)
        )
        callee_prefixes, caller_prefixes, callee_masks, caller_masks, unindexed = [], [], [], [], []
        for route in routes:
            masks, position = route.spec.match, route.position
            if prefix := literal_prefix(masks.callee):
                callee_prefixes.append((prefix, position))
            elif prefix := literal_prefix(masks.caller):
                caller_prefixes.append((prefix, position))
            elif masks.callee:
                callee_masks.append((masks.callee, position))
            elif masks.caller:
                caller_masks.append((masks.caller, position))
            else:
                unindexed.append(position)
        return cls(
            routes,
            version,
            PrefixIndex.build(callee_prefixes),
            PrefixIndex.build(caller_prefixes),
            MaskSet(callee_masks),
            MaskSet(caller_masks),
            tuple(unindexed),
        )

    def candidates(self, caller: str, callee: str) -> Iterator[int]:
        """Positions that may match, in decision order (a superset of the real matches)."""
        return heapq.merge(
            *self.by_callee.lookup(callee),
            *self.by_caller.lookup(caller),
            *self.callee_masks.lookup(callee),
            *self.caller_masks.lookup(caller),
            self.unindexed,
        )
