"""Event routing: which events go to which destination.

Stored in ``admin_settings`` as ``route.<destination>`` = a JSON list of event names; absent
(or JSON ``null``) means *every* event. The dashboard's Connections page and ``backchannel
route set|clear`` write the same setting, so either can change what the other shows.

Why a per-destination allow-list rather than a per-event map: the common need is "send only
purchases to Meta" (a second platform that should not learn the whole funnel), and an absent
setting must keep meaning "everything", so that an installation that never touches routing
behaves exactly as before.

Why cached: ingest is the hot path. :class:`Routes` reloads the settings at most every
:data:`REFRESH` seconds (so a change made by another process, e.g. the CLI, is picked up
without a restart) and answers :meth:`Routes.destinations_for` with one dict lookup per
event. A change made in this process calls :meth:`Routes.invalidate` and applies at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import orjson

from backchannel import destinations as registry
from backchannel.catalog import EVENTS, suggest
from backchannel.events import EVENT_NAME
from backchannel.store.base import Store

if TYPE_CHECKING:
    from backchannel.store.runner import AsyncStore

REFRESH = 5.0  # seconds routes read from the store are reused
PREFIX = "route."
MAX_EVENTS = 100  # names per destination: a route is a short allow-list, not a catalog
KNOWN_DESTINATIONS = registry.NAMES
#: answers memoized per Routes; custom event names are unbounded, the memo is not
MEMO_SIZE = 1024


class RouteError(ValueError):
    """A route that may not be stored; the message names the field and the reason."""


def setting_name(destination: str) -> str:
    return PREFIX + destination


def check_destination(destination: str) -> str:
    if destination not in registry.DESTINATIONS:  # the registry as it is now, not at import
        raise RouteError(
            f"destination: unknown destination {destination!r} (known: {', '.join(registry.NAMES)})"
        )
    return destination


def check_events(names: Iterable[str]) -> list[str]:
    """Validated, de-duplicated event names, in the order given.

    Standard catalog names are taken as they are; custom names too (ingest accepts them, so a
    route must be able to name them), as long as they are valid event names. A mis-cased
    standard name (``purchase``) is refused with the right spelling: TikTok's names are
    case-sensitive and a route for ``purchase`` would silently match nothing.
    """
    seen: dict[str, None] = {}
    for raw in names:
        name = raw.strip()
        if not name:
            raise RouteError("events: an event name is empty")
        if name not in EVENTS:
            hint = suggest(name)
            if hint is not None:
                raise RouteError(f"events: {name!r} is not a standard name; did you mean {hint!r}?")
            if EVENT_NAME.match(name) is None:
                raise RouteError(
                    f"events: {name!r} is not a valid event name (a letter, then letters,"
                    " digits, '_' or spaces; at most 100 characters)"
                )
        seen[name] = None
    if not seen:
        raise RouteError("events: name at least one event (or clear the route for all events)")
    if len(seen) > MAX_EVENTS:
        raise RouteError(f"events: at most {MAX_EVENTS} names per destination, got {len(seen)}")
    return list(seen)


def parse(raw: str | None) -> frozenset[str] | None:
    """A stored setting as a set of names; None (all events) when absent, null or unreadable.

    Unreadable falls back to "all events" rather than "none": a damaged setting must not
    silently stop delivery. (Only this module writes it, always valid JSON.)
    """
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list):
        return None
    return frozenset(v for v in value if isinstance(v, str))


def active_destinations(store: Store, always: Sequence[str]) -> tuple[str, ...]:
    """The destinations that get outbox rows now, in registry order: ``always`` (the
    ``destinations`` setting: TikTok and Meta by default, sandbox until a token is set) and
    every other destination once it is connected. A destination connected later gets only
    what arrives from then on (``backchannel backfill`` queues the past on request)."""
    return tuple(
        name for name in registry.NAMES if name in always or store.get_connection(name) is not None
    )


def read(
    store: Store, destinations: Sequence[str] = KNOWN_DESTINATIONS
) -> dict[str, list[str] | None]:
    """Per destination: its routed events (sorted), or None for all events."""
    found: dict[str, list[str] | None] = {}
    for name in destinations:
        events = parse(store.get_admin_setting(setting_name(name)))
        found[name] = None if events is None else sorted(events)
    return found


def store_route(store: Store, destination: str, events: Sequence[str] | None, now: float) -> None:
    """Write (validated) events for a destination; None = all events. Does not audit."""
    check_destination(destination)
    value = None if events is None else check_events(events)
    store.set_admin_setting(setting_name(destination), orjson.dumps(value).decode(), now)


def describe(events: Sequence[str] | None) -> str:
    return "all events" if events is None else ", ".join(events)


class Routes:
    """The routes of one process, for ingest: ``destinations_for(event)`` is a dict lookup."""

    def __init__(
        self,
        destinations: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH,
    ) -> None:
        #: the ``destinations`` setting: on whether connected or not
        self.always = tuple(destinations)
        #: what gets rows now: ``always`` plus the connected destinations (refreshed)
        self.destinations = self.always
        self.clock = clock
        self.refresh = refresh
        self._allowed: dict[str, frozenset[str] | None] = dict.fromkeys(self.destinations)
        self._memo: dict[str, tuple[str, ...]] = {}
        self._loaded_at: float | None = None

    def stale(self) -> bool:
        return self._loaded_at is None or self.clock() - self._loaded_at >= self.refresh

    def invalidate(self) -> None:
        """Reload on the next use (after a change made in this process)."""
        self._loaded_at = None

    def load(self, store: Store) -> None:
        """Read the settings now (synchronously: the CLI, pages, tests)."""
        self.destinations = active_destinations(store, self.always)
        self.apply({d: parse(store.get_admin_setting(setting_name(d))) for d in self.destinations})

    async def ensure_fresh(self, runner: AsyncStore) -> None:
        """Reload through the store's runner when older than :attr:`refresh` (ingest)."""
        if self.stale():
            await runner.run(self.load, runner.store)

    def apply(self, allowed: Mapping[str, frozenset[str] | None]) -> None:
        self._allowed = {d: allowed.get(d) for d in self.destinations}
        self._memo = {}
        self._loaded_at = self.clock()

    def destinations_for(self, event: str) -> tuple[str, ...]:
        """The destinations (in configured order) that take ``event``."""
        found = self._memo.get(event)
        if found is not None:
            return found
        found = tuple(
            d
            for d in self.destinations
            if (allowed := self._allowed[d]) is None or event in allowed
        )
        if len(self._memo) < MEMO_SIZE:
            self._memo[event] = found
        return found
