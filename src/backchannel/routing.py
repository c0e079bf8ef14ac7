"""Event routing: which events go to which connection.

Each connection (one destination account of a property: :class:`~backchannel.store.base.
Connection`) keeps its routed events as a JSON list of event names; absent (NULL) means
*every* event. The dashboard's Connections page and ``backchannel route set|clear`` write the
same column, so either can change what the other shows. (Before properties, migration 0013,
this was the admin setting ``route.<destination>``.)

Why a per-connection allow-list rather than a per-event map: the common need is "send only
purchases to Meta" (a second platform that should not learn the whole funnel), and an absent
route must keep meaning "everything", so that an installation that never touches routing
behaves exactly as before. An event goes to EVERY active connection of its property that its
routes allow (two TikTok pixels of one shop each get it).

Why cached: ingest is the hot path. :class:`Routes` reloads the connections at most every
:data:`REFRESH` seconds (so a change made by another process, e.g. the CLI, is picked up
without a restart; one query whatever the number of properties) and answers
:meth:`Routes.connections_for` with one dict lookup per (property, event). A change made in
this process calls :meth:`Routes.invalidate` and applies at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from backchannel import destinations as registry
from backchannel.catalog import EVENTS, suggest
from backchannel.events import EVENT_NAME
from backchannel.store.base import (
    DEFAULT_PROPERTY,
    Connection,
    Store,
    is_active,
    qualified_name,
)

if TYPE_CHECKING:
    from backchannel.store.runner import AsyncStore

REFRESH = 5.0  # seconds routes read from the store are reused
MAX_EVENTS = 100  # names per destination: a route is a short allow-list, not a catalog
KNOWN_DESTINATIONS = registry.NAMES
#: answers memoized per Routes; custom event names are unbounded, the memo is not
MEMO_SIZE = 1024


class RouteError(ValueError):
    """A route that may not be stored; the message names the field and the reason."""


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


def active_connections(
    store: Store, always: Sequence[str], property_id: int | None = None
) -> list[Connection]:
    """The connections that get outbox rows now (every property's, or ``property_id``'s), by
    property then registry order: live ones, and those of ``always`` (the ``destinations``
    setting: TikTok and Meta by default, sandbox until a token is set). A destination
    connected later gets only what arrives from then on (``backchannel backfill`` queues the
    past on request)."""
    order = {name: i for i, name in enumerate(registry.NAMES)}
    found = [c for c in store.list_connections(property_id) if is_active(c, always)]
    return sorted(found, key=lambda c: (c.property_id, order.get(c.destination, 99), c.id or 0))


@dataclass(frozen=True, slots=True)
class Lane:
    """What a delivery worker needs to know of a connection it delivers for."""

    connection_id: int
    destination: str
    #: how logs and metrics name it: the label (default property) or ``property/label``
    name: str


def active_lanes(store: Store, always: Sequence[str]) -> list[Lane]:
    """The delivery lanes of :func:`active_connections`, named for logs and metrics."""
    names = {p.id: p.name for p in store.properties()}
    return [
        Lane(
            c.id,
            c.destination,
            qualified_name(c.property_id, names.get(c.property_id, "?"), c.name),
        )
        for c in active_connections(store, always)
        if c.id is not None
    ]


def active_destinations(
    store: Store, always: Sequence[str], property_id: int | None = None
) -> tuple[str, ...]:
    """The destinations (registry order) with an active connection in any property, or in
    ``property_id``."""
    names = {c.destination for c in active_connections(store, always, property_id)}
    return tuple(name for name in registry.NAMES if name in names)


def read(
    store: Store,
    destinations: Sequence[str] = KNOWN_DESTINATIONS,
    property_id: int = DEFAULT_PROPERTY,
) -> dict[str, list[str] | None]:
    """Per destination: its routed events (sorted) on the property's connection labelled with
    its name (its first), or None for all events."""
    found: dict[str, list[str] | None] = {}
    for name in destinations:
        connection = store.get_connection(name, property_id)
        events = parse(connection.routes if connection is not None else None)
        found[name] = None if events is None else sorted(events)
    return found


def store_route(
    store: Store,
    destination: str,
    events: Sequence[str] | None,
    now: float,
    *,
    property_id: int = DEFAULT_PROPERTY,
    label: str | None = None,
) -> None:
    """Write (validated) events for a connection; None = all events. Does not audit.

    The connection is the property's one labelled ``label`` (default: the destination's
    name). A destination not connected yet gets its connection row now (no credentials, so
    it stays off until connected, or delivers to the sandbox if it is on by default)."""
    check_destination(destination)
    value = None if events is None else check_events(events)
    name = label or destination
    existing = store.get_connection(name, property_id)
    if existing is None:
        if label not in (None, destination):
            raise RouteError(f"connection: no connection {name!r} in this property")
        store.ensure_connections([destination], now, property_id)
        existing = store.get_connection(name, property_id)
        if existing is None:
            raise RouteError(f"connection: {destination} has no connection named {name!r}")
    if existing.destination != destination:
        raise RouteError(f"connection: {name!r} is a {existing.destination} connection")
    assert existing.id is not None
    store.set_routes(existing.id, None if value is None else orjson.dumps(value).decode())


def describe(events: Sequence[str] | None) -> str:
    return "all events" if events is None else ", ".join(events)


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """A connection an event goes to: its id (what the outbox row names) and destination."""

    connection_id: int
    destination: str


class Routes:
    """The routes of one process, for ingest: :meth:`connections_for` is a dict lookup."""

    def __init__(
        self,
        destinations: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = REFRESH,
    ) -> None:
        #: the ``destinations`` setting: on whether connected or not
        self.always = tuple(destinations)
        self.clock = clock
        self.refresh = refresh
        #: per property, its active connections in registry order, with their allowed events
        self._connections: dict[int, list[tuple[RouteTarget, frozenset[str] | None]]] = {}
        self._memo: dict[tuple[int, str], tuple[RouteTarget, ...]] = {}
        self._loaded_at: float | None = None

    @property
    def destinations(self) -> tuple[str, ...]:
        """The destinations of the default property's active connections (registry order)."""
        names = {t.destination for t, _ in self._connections.get(DEFAULT_PROPERTY, [])}
        return tuple(name for name in registry.NAMES if name in names)

    def stale(self) -> bool:
        return self._loaded_at is None or self.clock() - self._loaded_at >= self.refresh

    def invalidate(self) -> None:
        """Reload on the next use (after a change made in this process)."""
        self._loaded_at = None

    def load(self, store: Store) -> None:
        """Read the connections now (synchronously: the CLI, pages, tests)."""
        self.apply(active_connections(store, self.always))

    async def ensure_fresh(self, runner: AsyncStore) -> None:
        """Reload through the store's runner when older than :attr:`refresh` (ingest)."""
        if self.stale():
            await runner.run(self.load, runner.store)

    def apply(self, connections: Sequence[Connection]) -> None:
        by_property: dict[int, list[tuple[RouteTarget, frozenset[str] | None]]] = {}
        for c in connections:
            assert c.id is not None
            by_property.setdefault(c.property_id, []).append(
                (RouteTarget(c.id, c.destination), parse(c.routes))
            )
        self._connections = by_property
        self._memo = {}
        self._loaded_at = self.clock()

    def connections_for(
        self, event: str, property_id: int = DEFAULT_PROPERTY
    ) -> tuple[RouteTarget, ...]:
        """The property's connections (registry order) that take ``event``."""
        key = (property_id, event)
        found = self._memo.get(key)
        if found is not None:
            return found
        found = tuple(
            target
            for target, allowed in self._connections.get(property_id, ())
            if allowed is None or event in allowed
        )
        if len(self._memo) < MEMO_SIZE:
            self._memo[key] = found
        return found

    def destinations_for(self, event: str, property_id: int = DEFAULT_PROPERTY) -> tuple[str, ...]:
        """The destinations that take ``event`` in the property (each once, registry order)."""
        names = {t.destination for t in self.connections_for(event, property_id)}
        return tuple(name for name in registry.NAMES if name in names)
