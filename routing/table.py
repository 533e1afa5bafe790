"""The compiled, immutable route table and its candidate index.

Routes are ordered by (priority, id); a route's position in that order is its identity for
the engine. Each route is indexed once, by the first that applies:

1. the literal prefixes of its callee or its caller mask (``^7495\\d{7}$`` -> ``7495``;
   ``^7(495|499)`` -> ``7495``, ``7499``), whichever are longer, so more selective: a dict
   probe per prefix length of the number;
2. the literal suffix of its callee mask (``5555$``), probed the same way from the end;
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
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import chain
from types import MappingProxyType
from typing import Any

import re2

from routing.models import RE2_OPTIONS, CallbackTarget, RouteSpec, compile_mask, rewrite_parts

log = logging.getLogger("softswitch.routing.table")

_META = set(".^$|()[]{}*+?\\")
_OPTIONAL_AFTER = ("?", "*", "{")
ANY = compile_mask("")  # matches everything; gives rewrites of empty masks a match object


def literal_prefix(mask: str) -> str:
    """Literal text every match of ``mask`` must start with ('' when none can be proven)."""
    if not mask.startswith("^") or _has_top_level_alternation(mask):
        return ""
    prefix, _ = _read_literal(mask, 1)
    return prefix


def literal_prefixes(mask: str) -> tuple[str, ...]:
    """Literal starts of every match: ``^7(495|499)\\d{7}$`` -> ('7495', '7499').

    Without such a group, the one :func:`literal_prefix`; () when nothing can be proven.
    """
    if not mask.startswith("^") or _has_top_level_alternation(mask):
        return ()
    prefix, raw = _read_literal(mask, 1)
    alternatives = _literal_alternatives(mask, 1 + len(raw))
    if alternatives and all(alternatives):
        return tuple(prefix + alternative for alternative in alternatives)
    return (prefix,) if prefix else ()


def literal_suffix(mask: str) -> str:
    """Literal text every match of ``mask`` must end with: ``5555$`` -> ``5555``.

    Only plain letters and digits right before an unescaped final ``$`` count, and not one
    that a quantifier follows; '' when nothing can be proven.
    """
    if not mask.endswith("$") or mask.endswith("\\$") or _has_top_level_alternation(mask):
        return ""
    end = len(mask) - 1
    start = end
    while start > 0 and mask[start - 1].isalnum():
        start -= 1
    if start > 0 and mask[start - 1] == "\\":  # \d, \w: the first char is an escape's
        start += 1
    return mask[start:end]


def _read_literal(mask: str, start: int) -> tuple[str, str]:
    """The literal text from ``start`` and the raw mask text it spans."""
    literal: list[str] = []
    i = start
    while i < len(mask):
        char = mask[i]
        if char == "\\":
            escaped = mask[i + 1 : i + 2]
            if not escaped or escaped.isalnum():  # \d, \w, \1 ...: not a literal
                break
            text, width = escaped, 2
        elif char in _META:
            break
        else:
            text, width = char, 1
        follower = mask[i + width : i + width + 1]
        if follower in _OPTIONAL_AFTER:  # the literal may be absent
            break
        literal.append(text)
        i += width
        if follower == "+":
            break
    return "".join(literal), mask[start:i]


def _literal_alternatives(mask: str, start: int) -> list[str]:
    """``(a|b|c)`` or ``(?:a|b)`` of pure literals at ``start``, not optional; else []."""
    if mask.startswith("(?:", start):
        body_start = start + 3
    elif mask.startswith("(", start) and not mask.startswith("(?", start):
        body_start = start + 1
    else:
        return []
    end = mask.find(")", body_start)
    if end < 0 or mask[end + 1 : end + 2] in _OPTIONAL_AFTER:
        return []
    alternatives = []
    for alternative in mask[body_start:end].split("|"):
        literal, raw = _read_literal(alternative, 0)
        if raw != alternative or "(" in alternative:
            return []
        alternatives.append(literal)
    return alternatives


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


_UNANCHORED = re2._Anchor.UNANCHORED
_NO_MATCH = re2._NULL_SPAN


# ^literal, then optionally \d{n} \d{n,} \d{n,m} \d+ \d*, then optionally $.
_SIMPLE_MASK = re.compile(
    r"\^((?:[^\\.^$|()\[\]{}*+?]|\\[^A-Za-z0-9])*)"
    r"(?:\\d(?:\{(\d+)(?:(,)(\d*))?\}|(\+)|(\*)))?(\$?)\Z"
)


@dataclass(frozen=True, slots=True)
class DigitsMask:
    """``^literal\\d{min,max}$`` and its simpler forms, matched without a regex engine.

    Most admin masks have this shape (DIDs, number ranges). Checking them with bytes
    operations costs a fraction of an RE2 call and, unlike RE2's lazily built DFA, costs the
    same on a route's first call as on its thousandth.
    """

    literal: bytes
    min_digits: int
    max_digits: int | None  # None: unbounded
    to_end: bool  # the mask ends with $

    @classmethod
    def parse(cls, pattern: str) -> DigitsMask | None:
        found = _SIMPLE_MASK.match(pattern)
        if found is None:
            return None
        literal, exact, comma, upper, plus, star, dollar = found.groups()
        if exact is not None:
            low, high = int(exact), (int(upper) if upper else None) if comma else int(exact)
        elif plus:
            low, high = 1, None
        elif star:
            low, high = 0, None
        else:
            low, high = 0, 0
        if high is not None and high < low:
            return None  # RE2 refuses it anyway; keep its error
        text = re.sub(r"\\(.)", r"\1", literal)
        return cls(text.encode(), low, high, bool(dollar))

    def hits(self, text: bytes) -> bool:
        if not text.startswith(self.literal):
            return False
        rest = text[len(self.literal) :]
        required = rest[: self.min_digits]
        if len(required) < self.min_digits or (required and not required.isdigit()):
            return False
        if not self.to_end:
            return True
        return (self.max_digits is None or len(rest) <= self.max_digits) and (
            not rest or rest.isdigit()
        )


class Mask:
    """One compiled mask: a yes/no on bytes for the hot path, groups only for rewrites.

    The yes/no uses :class:`DigitsMask` where the mask allows, else RE2's native Match: the
    Python wrapper's ``search`` maps byte offsets back to characters on every call, which
    costs 7x more and is only needed for the groups of the one route that decides.
    """

    __slots__ = ("_digits", "_native", "regexp")

    def __init__(self, pattern: str) -> None:
        self.regexp = compile_mask(pattern)  # also validates, and serves rewrites
        self._native = self.regexp._regexp
        self._digits = DigitsMask.parse(pattern)

    def hits(self, text: bytes) -> bool:
        if self._digits is not None:
            return self._digits.hits(text)
        return bool(self._native.Match(_UNANCHORED, text, 0, len(text))[0] != _NO_MATCH)


def _mask(pattern: str) -> Mask | None:
    return Mask(pattern) if pattern else None


@dataclass(frozen=True, slots=True)
class NumberRewrite:
    """A rewrite template split once into literal pieces and group numbers, filled from the
    byte spans of RE2's native match.

    The Python wrapper's ``search(...).expand(...)`` splits the template again and maps byte
    offsets to characters on every call: 6 of the 25 us a ``next`` decision took.
    """

    native: Any
    pieces: tuple[str, ...]
    groups: tuple[int, ...]

    @classmethod
    def compile(cls, template: str, mask: Mask | None) -> NumberRewrite:
        """``mask`` None stands for an empty mask: its only group, 0, is empty."""
        regexp = mask.regexp if mask else ANY
        pieces, references = rewrite_parts(template)
        groups = tuple(regexp.groupindex[r] if isinstance(r, str) else r for r in references)
        return cls(regexp._regexp, pieces, groups)

    def apply(self, number: str) -> str:
        # Spans are byte offsets; RE2 matches whole UTF-8 characters, so slices decode.
        data = number.encode()
        spans = self.native.Match(_UNANCHORED, data, 0, len(data))
        parts = [self.pieces[0]]
        for group, piece in zip(self.groups, self.pieces[1:], strict=True):
            start, end = spans[group]
            parts.append(data[start:end].decode() if start >= 0 else "")
            parts.append(piece)
        return "".join(parts)


def _rewrite(template: str, mask: Mask | None) -> NumberRewrite | None:
    return NumberRewrite.compile(template, mask) if template else None


@dataclass(frozen=True, slots=True)
class CallNumbers:
    """The four matched fields of a call, encoded once for RE2."""

    caller: bytes
    caller_host: bytes
    callee: bytes
    callee_host: bytes


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    position: int
    route_id: int
    spec: RouteSpec
    caller: Mask | None
    caller_host: Mask | None
    callee: Mask | None
    callee_host: Mask | None
    caller_rewrite: NumberRewrite | None
    callee_rewrite: NumberRewrite | None

    def matches(self, call: CallNumbers, now: datetime) -> bool:
        """Every mask matches and the schedule is open."""
        return (
            (self.callee is None or self.callee.hits(call.callee))
            and (self.caller is None or self.caller.hits(call.caller))
            and (self.callee_host is None or self.callee_host.hits(call.callee_host))
            and (self.caller_host is None or self.caller_host.hits(call.caller_host))
            and (self.spec.schedule is None or self.spec.schedule.is_open(now))
        )

    def rewrite(self, caller: str, callee: str) -> tuple[str, str]:
        """(caller, callee) after this route's rewrites, with the groups of its masks."""
        if self.caller_rewrite is not None:
            caller = self.caller_rewrite.apply(caller)
        if self.callee_rewrite is not None:
            callee = self.callee_rewrite.apply(callee)
        return caller, callee


def compile_route(position: int, route_id: int, spec: RouteSpec) -> CompiledRoute:
    masks, rewrite = spec.match, spec.rewrite
    caller, callee = _mask(masks.caller), _mask(masks.callee)
    return CompiledRoute(
        position=position,
        route_id=route_id,
        spec=spec,
        caller=caller,
        caller_host=_mask(masks.caller_host),
        callee=callee,
        callee_host=_mask(masks.callee_host),
        caller_rewrite=_rewrite(rewrite.caller, caller),
        callee_rewrite=_rewrite(rewrite.callee, callee),
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
            {prefix: tuple(sorted(set(positions))) for prefix, positions in grouped.items()},
            tuple(sorted({len(prefix) for prefix in grouped})),
        )

    def lookup(self, number: str) -> Iterator[tuple[int, ...]]:
        for length in self.lengths:
            if length > len(number):
                return
            hit = self.by_prefix.get(number[:length])
            if hit:
                yield hit

    def lookup_suffixes(self, number: str) -> Iterator[tuple[int, ...]]:
        """For an index built from reversed suffixes."""
        return self.lookup(number[::-1])


# Up to this many candidate positions a call's candidates are sorted at once, else merged lazily.
SORTED_CANDIDATES = 64

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
    by_callee_suffix: PrefixIndex
    callee_masks: MaskSet
    caller_masks: MaskSet
    unindexed: tuple[int, ...]
    callbacks: Mapping[str, CallbackTarget] = field(default_factory=lambda: MappingProxyType({}))
    """Emergency-pool numbers reserved for a panel (E.164), for ``callback`` routes."""

    def with_callbacks(self, callbacks: Mapping[str, CallbackTarget]) -> RouteTable:
        """The same routes with a new reservation snapshot (reservations change per call)."""
        return replace(self, callbacks=MappingProxyType(dict(callbacks)))

    def callback_target(self, callee: str, now: datetime) -> CallbackTarget | None:
        """The live reservation of ``callee``, written with or without the leading +.

        A reservation ends by time, without a database change to reload on: checked here.
        """
        target = self.callbacks.get(callee) or self.callbacks.get(f"+{callee}")
        if target is None or (target.valid_until is not None and target.valid_until <= now):
            return None
        return target

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
        callee_prefixes: list[tuple[str, int]] = []
        caller_prefixes: list[tuple[str, int]] = []
        callee_suffixes: list[tuple[str, int]] = []
        callee_masks: list[tuple[str, int]] = []
        caller_masks: list[tuple[str, int]] = []
        unindexed: list[int] = []
        for route in routes:
            masks, position = route.spec.match, route.position
            by_callee, by_caller = literal_prefixes(masks.callee), literal_prefixes(masks.caller)
            if by_callee and min(map(len, by_callee)) >= min(map(len, by_caller), default=0):
                callee_prefixes.extend((prefix, position) for prefix in by_callee)
            elif by_caller:
                caller_prefixes.extend((prefix, position) for prefix in by_caller)
            elif suffix := literal_suffix(masks.callee):
                callee_suffixes.append((suffix[::-1], position))
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
            PrefixIndex.build(callee_suffixes),
            MaskSet(callee_masks),
            MaskSet(caller_masks),
            tuple(unindexed),
        )

    def candidates(self, caller: str, callee: str) -> Iterable[int]:
        """Positions that may match, in decision order (a superset of the real matches).

        A route indexed under two prefixes of one number (``^(7|749)``) comes twice; the
        engine skips what it has already tried. A call usually hits a handful of routes:
        sorting them at once is cheaper than a lazy ``heapq.merge`` (p50 and p99 of a
        decision -15-18% in bench/routing_engine.py's tables); many hits are merged lazily,
        as the first of them usually decides.
        """
        hits = [
            *self.by_callee.lookup(callee),
            *self.by_caller.lookup(caller),
            *self.by_callee_suffix.lookup_suffixes(callee),
            *self.callee_masks.lookup(callee),
            *self.caller_masks.lookup(caller),
            self.unindexed,
        ]
        if sum(map(len, hits)) <= SORTED_CANDIDATES:
            return sorted(chain.from_iterable(hits))
        return heapq.merge(*hits)
