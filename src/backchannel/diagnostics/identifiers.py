"""Which identifiers each event name carries, and the match quality they earn.

Why from the stored payloads: the payload is exactly what the destinations read (hashed
identifiers in ``user``), so a share computed from it is what TikTok and Meta receive, not what
a shop believes it sends. Only production conversions count (a test event is a check, not
traffic), and an opted-out conversion is counted apart: it is never sent, so its identifiers
match nothing.

Every production conversion received in the range counts (by ``conversions.received_at``).
The report is merged from one partial per (property, UTC day) (:func:`day_partial`, through
:func:`backchannel.rollups.partials`, which keeps a day's partial until a write changes that
day): per event name, its conversions, opted-out ones, stitched ones, and how many carried
each *combination* of identifier fields (a handful per shop). Every figure of the page is a
sum over combinations — the shares per identifier and each destination's tallies for the
quality estimate alike — so the merge is exact. ``identifiers_report(..., scan=True)`` reads
the rows of the whole range instead: the reference the tests hold the merge equal to, on both
backends. (Until the rollups the report read the latest 50,000 conversions of the range.)
The payloads are parsed here with orjson, because JSON inside the database is read
differently by SQLite and PostgreSQL and a portable query must not depend on either.

The match-quality estimate and its advice are :func:`backchannel.quality.estimate` (its
docstring documents the weights), run on the same conversions
(:func:`backchannel.quality.from_counts` on the merged counts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import orjson

from backchannel import destinations as registry
from backchannel import quality, rollups
from backchannel.diagnostics import percent, property_term
from backchannel.identifiers import value as platform_id
from backchannel.report import time_range
from backchannel.store.base import Store

#: the per-(property, day) partial's name and shape version (see :func:`day_partial`)
PARTIAL = "identifiers/1"
#: what the report estimates unless told: the destinations on with no connection
DESTINATIONS = registry.ON_BY_DEFAULT


@dataclass(frozen=True, slots=True)
class Identifier:
    """One column of the identifiers table: its key, how a person reads it, who uses it."""

    key: str
    label: str
    #: "all", or the destination that matches on it
    platforms: str
    #: the ``user`` fields that count (any one): the identifier's own key by default
    fields: tuple[str, ...] = ()


def _identifiers() -> tuple[Identifier, ...]:
    """The common identifiers, then each destination's click id and browser id as it
    declares them (keyed by the first field; a field two destinations share, once)."""
    found: dict[str, Identifier] = {
        "email": Identifier("email", "hashed email", "all"),
        "phone": Identifier("phone", "hashed phone", "all"),
        "external_id": Identifier("external_id", "external_id", "all"),
        "ip_user_agent": Identifier("ip_user_agent", "ip + user agent (both)", "all"),
    }
    for name, spec in registry.DESTINATIONS.items():
        for fields, label in (
            (spec.CLICK_IDS, spec.CLICK_ID_LABEL),
            (spec.BROWSER_IDS, spec.BROWSER_ID_LABEL),
        ):
            if fields and fields[0] not in found:
                found[fields[0]] = Identifier(fields[0], label, name, fields)
    return tuple(found.values())


IDENTIFIERS: tuple[Identifier, ...] = _identifiers()

_KEYS: tuple[str, ...] = tuple(i.key for i in IDENTIFIERS)

#: the report's SQL, one query for both backends (``?`` placeholders): a range of
#: conversions_received, every row of it
ROWS_SQL = """
SELECT event, payload, stitched FROM conversions
WHERE test_event_code IS NULL AND received_at >= ? AND received_at < ?{scope}
"""

#: the ``user`` facts a combination records (see :func:`features`): the common identifiers,
#: then every field a destination declares as its click id or browser id
_COMMON = ("email", "phone", "external_id", "ip_user_agent")
_PLATFORM_FIELDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        f for spec in registry.DESTINATIONS.values() for f in (*spec.CLICK_IDS, *spec.BROWSER_IDS)
    )
)


def carried(user: Mapping[str, Any]) -> set[str]:
    """The :data:`IDENTIFIERS` keys a stored ``user`` dict carries (a value, not an empty one).

    IP and user agent count only together: either alone does not identify a browser.
    """
    found = {k for k in ("email", "phone", "external_id") if user.get(k)}
    if user.get("ip") and user.get("user_agent"):
        found.add("ip_user_agent")
    for identifier in IDENTIFIERS:
        if identifier.fields and any(platform_id(user, f) for f in identifier.fields):
            found.add(identifier.key)
    return found


def stitched_from_session(stitched: str | bytes | None) -> bool:
    """True when stitching filled at least one identifier from the landing session.

    ``conversions.stitched`` is :class:`backchannel.stitch.Provenance` as JSON; the page URL
    is not an identifier, so it alone does not count.
    """
    if not stitched:
        return False
    try:
        provenance = orjson.loads(stitched)
    except orjson.JSONDecodeError:
        return False
    fields = provenance.get("fields") if isinstance(provenance, dict) else None
    if not isinstance(fields, dict):
        return False
    # every identifier (the named ones and the other platforms' ids); the page URL is not one
    return any(origin == "session" for name, origin in fields.items() if name != "page_url")


@dataclass(slots=True)
class EventIdentifiers:
    """One event name: its base, how many carried each identifier, its quality per platform."""

    event: str
    #: production, opted-in conversions: the base of every share
    conversions: int = 0
    #: opted-out conversions of this name (never sent; not in the base)
    opted_out: int = 0
    #: identifier key -> conversions carrying it
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_KEYS, 0))
    #: conversions with at least one identifier filled from the landing session
    stitched: int = 0
    #: destination -> the estimate (absent when the base is 0)
    quality: dict[str, quality.EventQuality] = field(default_factory=dict)

    def share(self, key: str) -> float | None:
        return percent(self.counts[key], self.conversions)

    def share_stitched(self) -> float | None:
        return percent(self.stitched, self.conversions)

    def to_dict(self, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """``keys``: the identifiers shown (the report's columns; all when None)."""
        return {
            "event": self.event,
            "conversions": self.conversions,
            "opted_out": self.opted_out,
            "identifiers": {
                k: {"count": n, "percent": percent(n, self.conversions)}
                for k, n in self.counts.items()
                if keys is None or k in keys
            },
            "stitched": {"count": self.stitched, "percent": self.share_stitched()},
            "quality": {
                destination: {
                    "score": q.score,
                    "advice": [
                        {
                            "identifier": a.identifier,
                            "label": a.label,
                            "gain": a.gain,
                            "missing_percent": round(100.0 * a.missing, 1),
                            "text": str(a),
                        }
                        for a in q.advice
                    ],
                }
                for destination, q in self.quality.items()
            },
        }


@dataclass(slots=True)
class IdentifiersReport:
    """The identifiers page for a day range: per event name, most frequent first."""

    start: date
    end: date
    #: the base: production, opted-in conversions received in the range
    conversions: int
    opted_out: int
    events: list[EventIdentifiers]
    #: the destinations estimated (the active ones, in registry order)
    destinations: tuple[str, ...] = DESTINATIONS
    #: None: exact as read; else the oldest computation of a day's partial shown although
    #: the day changed since (``max_stale`` allowed it)
    as_of: float | None = None

    @property
    def identifiers(self) -> tuple[Identifier, ...]:
        """The columns: the common identifiers and those of the destinations shown."""
        return tuple(
            i for i in IDENTIFIERS if i.platforms == "all" or i.platforms in self.destinations
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "conversions": self.conversions,
            "opted_out": self.opted_out,
            "destinations": list(self.destinations),
            "identifiers": [
                {"key": i.key, "label": i.label, "platforms": i.platforms} for i in self.identifiers
            ],
            "weights": {d: quality.WEIGHTS[d] for d in self.destinations},
            "events": [e.to_dict(tuple(i.key for i in self.identifiers)) for e in self.events],
        }


def _parse(payload: bytes | str) -> dict[str, Any]:
    """The stored payload as a dict; an unreadable one carries nothing (and still counts)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def features(user: Mapping[str, Any]) -> list[str]:
    """The facts of a stored ``user`` the report and the estimate read, in a fixed order: the
    :data:`_COMMON` identifiers it carries (as :func:`carried` counts them), then each
    destination's click-id and browser-id fields it holds a value for."""
    found = [k for k in ("email", "phone", "external_id") if user.get(k)]
    if user.get("ip") and user.get("user_agent"):
        found.append("ip_user_agent")
    # backchannel.identifiers.value inlined (a string on the user, else a string in its
    # "ids"; a non-empty one counts): called 14 times a conversion it was most of a day's
    # partial. The equality tests hold this to carried(), which calls it.
    ids = user.get("ids")
    nested = ids if isinstance(ids, dict) else None
    for f in _PLATFORM_FIELDS:
        value = user.get(f)
        if not isinstance(value, str):
            value = nested.get(f) if nested is not None else None
            if not isinstance(value, str):
                continue
        if value:
            found.append(f)
    return found


def _rows(store: Store, low: int, high: int, property_id: int | None) -> list[tuple[Any, ...]]:
    """(event, payload, stitched) of every production conversion received in [low, high)."""
    if property_id is None:
        return store.read(ROWS_SQL.format(scope=""), (low, high))
    scope = property_term(store.dialect, "property_id")
    return store.read(ROWS_SQL.format(scope=scope), (low, high, property_id))


def day_partial(store: Store, property_id: int, low: int, high: int) -> rollups.Partial:
    """One property's conversions received in one UTC day [low, high), JSON-able: per event
    name, ``conversions`` (opted in), ``opted_out``, ``stitched`` (opted in, an identifier
    filled from the landing session) and ``carried``: combination -> opted-in conversions
    carrying exactly those :func:`features` (joined with commas; "" for none)."""
    events: dict[str, dict[str, Any]] = {}
    for event, payload, stitched in _rows(store, low, high, property_id):
        entry = events.setdefault(
            str(event), {"conversions": 0, "opted_out": 0, "stitched": 0, "carried": {}}
        )
        data = _parse(payload)
        if data.get("opt_out"):
            entry["opted_out"] += 1
            continue
        user = data.get("user")
        entry["conversions"] += 1
        entry["stitched"] += int(stitched_from_session(stitched))
        combination = ",".join(features(user if isinstance(user, dict) else {}))
        entry["carried"][combination] = entry["carried"].get(combination, 0) + 1
    return {"events": events}


def _merge(
    parts: Iterable[rollups.DayPartial], destinations: tuple[str, ...]
) -> list[EventIdentifiers]:
    """The report's events from day partials: every count a sum over the combinations."""
    totals: dict[str, dict[str, Any]] = {}
    for part in parts:
        for event, entry in part.data["events"].items():
            total = totals.setdefault(
                event, {"conversions": 0, "opted_out": 0, "stitched": 0, "carried": {}}
            )
            for key in ("conversions", "opted_out", "stitched"):
                total[key] += entry[key]
            for combination, n in entry["carried"].items():
                total["carried"][combination] = total["carried"].get(combination, 0) + n
    per_event: dict[str, EventIdentifiers] = {}
    sent: dict[str, int] = {}
    tallies: dict[str, dict[str, dict[str, int]]] = {d: {} for d in destinations}
    for event, total in totals.items():
        entry = per_event[event] = EventIdentifiers(event)
        entry.conversions = total["conversions"]
        entry.opted_out = total["opted_out"]
        entry.stitched = total["stitched"]
        if entry.conversions:
            sent[event] = entry.conversions
        for combination, n in total["carried"].items():
            facts = set(combination.split(",")) if combination else set()
            for identifier in IDENTIFIERS:
                fields = identifier.fields or (identifier.key,)
                if facts.intersection(fields):
                    entry.counts[identifier.key] += n
            for destination in destinations:
                tally = tallies[destination].setdefault(event, {})
                for key in _weighed(facts, destination):
                    tally[key] = tally.get(key, 0) + n
    for destination in destinations:
        for estimate in quality.from_counts(sent, tallies[destination], destination):
            per_event[estimate.event].quality[destination] = estimate
    return list(per_event.values())


def _weighed(facts: set[str], destination: str) -> set[str]:
    """What :func:`backchannel.quality.identifiers` finds for ``destination`` in a user
    with these :func:`features`."""
    spec = registry.DESTINATIONS[destination]
    found = facts.intersection(("email", "phone", "external_id", "ip_user_agent"))
    if facts.intersection(spec.CLICK_IDS):
        found.add("click_id")
    if facts.intersection(spec.BROWSER_IDS):
        found.add("browser_id")
    return found


def _scan(
    store: Store, start: date, end: date, destinations: tuple[str, ...], property_id: int | None
) -> list[EventIdentifiers]:
    """The report's events from the rows of the whole range (the reference)."""
    low, high = time_range(start, end)
    per_event: dict[str, EventIdentifiers] = {}
    sent: list[dict[str, Any]] = []  # what quality.estimate reads: event name and user
    for event, payload, stitched in _rows(store, low, high, property_id):
        entry = per_event.setdefault(event, EventIdentifiers(event))
        data = _parse(payload)
        if data.get("opt_out"):
            entry.opted_out += 1
            continue
        user = data.get("user")
        user = user if isinstance(user, dict) else {}
        entry.conversions += 1
        for key in carried(user):
            entry.counts[key] += 1
        entry.stitched += stitched_from_session(stitched)
        sent.append({"event": event, "user": user})
    for destination in destinations:
        for estimate in quality.estimate(sent, destination):
            per_event[estimate.event].quality[destination] = estimate
    return list(per_event.values())


def identifiers_report(
    store: Store,
    start: date,
    end: date,
    *,
    destinations: tuple[str, ...] = DESTINATIONS,
    property_id: int | None = None,
    scan: bool = False,
    max_stale: float = 0.0,
) -> IdentifiersReport:
    """Every production conversion received in ``[start, end]`` (UTC days), of one property
    (None: every property's): merged from the day partials (``max_stale``: see
    :func:`backchannel.rollups.partials`), or with ``scan=True`` read from the rows of the
    whole range (the reference the tests compare)."""
    as_of = None
    if scan:
        found = _scan(store, start, end, destinations, property_id)
    else:
        parts = rollups.partials(
            store, PARTIAL, day_partial, start, end, property_id, max_stale=max_stale
        )
        found = _merge(parts, destinations)
        as_of = min((part.computed_at for part in parts if part.stale), default=None)
    events = sorted(found, key=lambda e: (-e.conversions, -e.opted_out, e.event))
    return IdentifiersReport(
        start=start,
        end=end,
        conversions=sum(e.conversions for e in events),
        opted_out=sum(e.opted_out for e in events),
        events=events,
        destinations=destinations,
        as_of=as_of,
    )


rollups.register(PARTIAL, day_partial)
