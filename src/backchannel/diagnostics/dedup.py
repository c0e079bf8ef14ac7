"""Does each order reach each platform once? Per platform: its Pixel's leg, its server leg, and
the id they share.

A platform counts an order once when its Pixel (the browser leg) and its server API (the
server leg) send it with the same id, in the platform's own key: our ``event_id`` for most
(TikTok's event_id, Meta's eventID, Snap's client_dedup_id, Pinterest's event_id, Reddit's
conversionId), the order id for Google's tag (its transaction_id, which GA4 and Google Ads
dedup on). Each destination declares which (``DEDUP_ID``) and under which name bc.js records
its Pixel's calls (``PIXEL_MIRROR``: Google's tag is one mirror, ``google``, for two
destinations). This report answers, per order and per destination, from Backchannel's own
records:

- **browser leg**: a mirror row of the destination's Pixel (``browser_events.platform`` =
  its ``PIXEL_MIRROR``) carries the order's id in that key;
- **server leg delivered**: the order's outbox row for the destination is ``delivered``;
- **mismatch**: the order's landing session holds a mirror row of that Pixel, under a name
  the Pixel fires this order's event under (``pixel_events``; compared without case, ``_`` or
  spaces), whose id is different (or missing) and is no stored conversion's own id in that
  key. The platform then sees two events it cannot pair and counts the order twice once both
  legs arrive — the bug users hunt for in their Events Manager, so it is flagged first.

Every order gets exactly one verdict per destination, so each destination's five counts add
up to the base: ``mismatch`` first, then ``both`` (same id and delivered), ``browser_only``,
``server_only``, ``neither``.

The orders are production conversions (``test_event_code IS NULL``) with an ``order_id``,
received in the range (every one of them). One with no outbox row at all (opted out, or no
destination takes its event) goes to no platform: it is counted apart (``unsent``), not in the
base. The destinations reported are those the orders show any sign of: an outbox row, or a
leg of their Pixel. An order's verdicts are its own (its outbox rows, the mirror rows carrying
its ids, its session's mirror rows, the stored ids of its property), so they are computed per
(property, UTC day of ``received_at``): the summary is merged from one partial per day
(:func:`day_partial`, through :func:`backchannel.rollups.partials`, which keeps a day's
partial until a write changes that day) — per destination its five counts, how many orders
have each verdict somewhere, the destinations the day covers. A destination a day does not
cover has no sign on any of its orders, so each of them is ``neither`` there.

The table's page is read live, newest first: the partials say how many orders of each day
match the filter, so the days before the page are skipped, and the page's day is read in
small batches (``ORDER BY received_at DESC, id DESC LIMIT``) until the page is full.
``dedup_report(..., scan=True)`` reads every order of the range at once instead (four
portable queries: the orders, their outbox rows, the mirror rows carrying their ids, the
mirror rows of their sessions; and one lookup of the other ids those sessions hold): the
reference the tests hold the merged summary and the batched pages equal to, on both backends.
(Until the rollups the report read the latest 50,000 orders of the range.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from backchannel import rollups
from backchannel.destinations import DESTINATIONS, display_name
from backchannel.diagnostics import percent, property_term
from backchannel.report import time_range
from backchannel.store.base import DELIVERED, Store

#: the per-(property, day) partial's name and shape version (see :func:`day_partial`)
PARTIAL = "dedup/1"
PAGE_SIZE = 50
#: orders read per query when a page is walked (doubling up to BATCH_MAX)
BATCH, BATCH_MAX = 100, 6400
MAX_PAGE = 100_000
#: ids looked up per query (well under SQLite's and PostgreSQL's parameter limits)
LOOKUP_CHUNK = 500

BOTH, BROWSER_ONLY, SERVER_ONLY, NEITHER, MISMATCH = (
    "both",
    "browser_only",
    "server_only",
    "neither",
    "mismatch",
)
#: every verdict, in the order the summary shows them
VERDICTS = (BOTH, BROWSER_ONLY, SERVER_ONLY, NEITHER, MISMATCH)
LABELS = {
    BOTH: "both legs, same id",
    BROWSER_ONLY: "browser leg only",
    SERVER_ONLY: "server leg only",
    NEITHER: "neither leg",
    MISMATCH: "id mismatch",
}
#: the verdict in the few words of a table cell
SHORT = {
    BOTH: "both legs",
    BROWSER_ONLY: "browser only",
    SERVER_ONLY: "server only",
    NEITHER: "neither",
    MISMATCH: "MISMATCH",
}

#: the orders of the report: the same text for both backends (``?`` placeholders); the
#: other queries select from it as a subquery, so they read exactly these rows. Filled in by
#: :func:`_orders_sql`: ``{scope}`` "" or one property's (" AND c.property_id = ?"),
#: ``{before}`` "" or a keyset condition (the rows after a page's last one), ``{order}`` the
#: ORDER BY and LIMIT of a batch, or "" (a day's or a range's rows, every one).
ORDERS_SQL = """
SELECT c.id, c.order_id, c.event, c.event_id, c.received_at, c.session_id, c.property_id
FROM conversions c
WHERE c.test_event_code IS NULL AND c.order_id IS NOT NULL
  AND c.received_at >= ? AND c.received_at < ?{scope}{before}{order}
"""
#: the keyset: older than the previous batch's last row; its first term bounds the index
#: range (the second alone is a filter both databases apply row by row, from the range's end)
_BEFORE = " AND c.received_at <= ? AND (c.received_at < ? OR c.id < ?)"
_ORDER = "\nORDER BY c.received_at DESC, c.id DESC\nLIMIT ?"
#: every outbox row of those orders: (conversion id, destination, status); a destination
#: with two connections (two pixels of one property) has two rows
OUTBOX_SQL = """
SELECT x.conversion_id, x.destination, x.status
FROM outbox x
WHERE x.conversion_id IN (SELECT o.id FROM ({orders}) o)
"""
#: mirror rows carrying one of those orders' ids, event_id or order_id: (property, platform,
#: id); a row pairs only with an order of its own property (matched in Python). One IN over
#: a UNION: PostgreSQL answers ``IN (…) OR IN (…)`` with a scan of every mirror row (hashed
#: subplans), a single IN with probes of browser_events_event_id
SAME_ID_SQL = """
SELECT DISTINCT b.property_id, b.platform, b.event_id
FROM browser_events b
WHERE b.event_id IN (
    SELECT o.event_id FROM ({orders}) o UNION SELECT o.order_id FROM ({orders}) o
)
"""
#: mirror rows of those orders' landing sessions: (session, platform, event, id, property)
SESSION_SQL = """
SELECT b.session_id, b.platform, b.event, b.event_id, b.property_id
FROM browser_events b
WHERE b.session_id IN (
    SELECT o.session_id FROM ({orders}) o WHERE o.session_id IS NOT NULL
)
"""


def _orders_sql(dialect: str, property_id: int | None, *, before: bool, batch: bool) -> str:
    """:data:`ORDERS_SQL` for every property's orders or one's, after a keyset or not, a
    batch (newest first, LIMIT) or every row."""
    return ORDERS_SQL.format(
        scope="" if property_id is None else property_term(dialect, "c.property_id"),
        before=_BEFORE if before else "",
        order=_ORDER if batch else "",
    )


_SEPARATORS = re.compile(r"[^0-9a-z]")


def same_name(name: str) -> str:
    """An event name without case, ``_`` or spaces: how a Pixel's name is compared with the
    names its platform fires an event under (Reddit's Pixel ``AddToCart`` is its API's
    ``ADD_TO_CART``; Pinterest's Tag ``pagevisit`` its API's ``page_visit``)."""
    return _SEPARATORS.sub("", name.lower())


@dataclass(frozen=True, slots=True)
class Leg:
    """One order at one destination: plain facts from the store, and their verdict."""

    destination: str
    #: the order's id in the destination's dedup key (``event_id`` or ``order_id``)
    dedup_id: str
    #: its outbox status there; None when the order has no row there (not routed there)
    status: str | None
    #: a mirror row of the destination's Pixel carries ``dedup_id``
    same_id: bool
    #: the landing session holds a call of that Pixel for this event with another (or no)
    #: id, not another stored conversion's: see the module docstring
    mismatch: bool
    #: the smallest such other id (None: the Pixel sent none)
    browser_id: str | None

    @property
    def server_delivered(self) -> bool:
        return self.status == DELIVERED

    @property
    def browser_seen(self) -> bool:
        return self.same_id or self.mismatch

    @property
    def verdict(self) -> str:
        if self.mismatch:
            return MISMATCH
        if self.same_id:
            return BOTH if self.server_delivered else BROWSER_ONLY
        return SERVER_ONLY if self.server_delivered else NEITHER

    @property
    def browser_leg(self) -> str:
        """What the browser leg did, in words (the different id is named: users search it)."""
        other = f"different id: {self.browser_id or '(none sent)'}"
        if self.mismatch:
            return f"same id, and {other}" if self.same_id else other
        if self.same_id:
            return "same id"
        return "not seen"

    @property
    def server_leg(self) -> str:
        return self.status or "not sent"

    @property
    def advice(self) -> str:
        """The verdict as a person needs it: what the platform does with this order."""
        name = display_name(self.destination)
        if self.verdict == MISMATCH:
            if self.server_delivered:
                return f"counted twice by {name}: the Pixel and the server sent different ids"
            return "different ids: the legs cannot pair (counted twice once both arrive)"
        if self.verdict == BROWSER_ONLY:
            if self.status is None:
                return f"browser leg only: no server leg goes to {name} (not routed there)"
            return "browser leg only: the server leg is not delivered (yet)"
        return {
            BOTH: "deduplicated: counted once",
            SERVER_ONLY: "server leg only: recovered what the Pixel missed",
            NEITHER: f"neither leg reached {name}",
        }[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dedup_id": self.dedup_id,
            "status": self.status,
            "same_id": self.same_id,
            "mismatch": self.mismatch,
            "browser_id": self.browser_id,
            "browser_leg": self.browser_leg,
            "server_delivered": self.server_delivered,
            "verdict": self.verdict,
            "advice": self.advice,
        }


@dataclass(frozen=True, slots=True)
class DedupRow:
    """One order, and its leg at each destination reported."""

    conversion_id: int
    order_id: str
    event: str
    event_id: str
    received_at: float
    session_id: str | None
    #: every destination's outbox status (destination -> status); empty: unsent
    statuses: dict[str, str]
    #: destination -> its leg, for the destinations the report covers
    legs: dict[str, Leg] = field(default_factory=dict)

    @property
    def sent(self) -> bool:
        """It has an outbox row: some platform is meant to receive it."""
        return bool(self.statuses)

    def verdict(self, destination: str) -> str:
        return self.legs[destination].verdict

    @property
    def verdicts(self) -> dict[str, str]:
        return {d: leg.verdict for d, leg in self.legs.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "event": self.event,
            "event_id": self.event_id,
            "received_at": self.received_at,
            "session_id": self.session_id,
            "destinations": dict(self.statuses),
            "verdicts": self.verdicts,
            "legs": {d: leg.to_dict() for d, leg in self.legs.items()},
        }


@dataclass(slots=True)
class DedupReport:
    """Per destination, the summary of every order read; and one page of orders."""

    start: date
    end: date
    #: the base: orders of the range that go to a platform (an outbox row somewhere)
    orders: int
    #: orders of the range that go to no platform (opted out, or routed nowhere): not in
    #: the base
    unsent: int
    #: the destinations covered, in registry order
    destinations: tuple[str, ...]
    #: destination -> verdict -> orders
    counts: dict[str, dict[str, int]]
    #: the table's filter: orders whose verdict is ``status`` at ``destination`` (at any
    #: destination covered when None); no status: every order
    status: str | None
    destination: str | None
    page: int
    #: orders the filter keeps (the table's base), and pages of PAGE_SIZE they make
    matching: int
    pages: int
    rows: list[DedupRow]
    #: None: the summary is exact as read; else the oldest computation of a day's partial
    #: shown although the day changed since (``max_stale`` allowed it)
    as_of: float | None = None

    def share(self, destination: str, verdict: str) -> float | None:
        return percent(self.counts[destination][verdict], self.orders)

    @property
    def mismatches(self) -> dict[str, int]:
        """Destination -> orders it would count twice (only those with any)."""
        return {d: c[MISMATCH] for d, c in self.counts.items() if c[MISMATCH]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "orders": self.orders,
            "unsent": self.unsent,
            "destinations": list(self.destinations),
            "summary": {
                d: {v: {"count": self.counts[d][v], "percent": self.share(d, v)} for v in VERDICTS}
                for d in self.destinations
            },
            "status": self.status,
            "destination": self.destination,
            "page": self.page,
            "pages": self.pages,
            "page_size": PAGE_SIZE,
            "matching": self.matching,
            "rows": [r.to_dict() for r in self.rows],
        }


#: (conversion id, order id, event, event_id, received at, session id, property id)
Order = tuple[int, str, str, str, float, str | None, int]


@dataclass(slots=True)
class _Read:
    """What the queries returned, before any judgement."""

    orders: list[Order]
    statuses: dict[int, dict[str, str]]
    #: (property, platform, id) of every mirror row carrying an order's event_id or order_id
    same: set[tuple[int, str, str]]
    #: (property, session) -> its mirror rows (platform, event, id)
    sessions: dict[tuple[int, str], list[tuple[str, str, str | None]]]


def _read(
    store: Store,
    low: int,
    high: int,
    property_id: int | None,
    *,
    limit: int | None = None,
    before: tuple[float, int] | None = None,
) -> _Read:
    """The orders received in [low, high) (of one property, or all) and what they pair with:
    every one, or (``limit``) the newest ``limit`` of them older than ``before`` (the
    (received_at, id) of the last order of the previous batch)."""
    orders_sql = _orders_sql(
        store.dialect, property_id, before=before is not None, batch=limit is not None
    )
    window: list[Any] = [low, high]
    if property_id is not None:
        window.append(property_id)
    if before is not None:
        window.extend((before[0], before[0], before[1]))
    if limit is not None:
        window.append(limit)
    orders = [
        (int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]), r[5], int(r[6]))
        for r in store.read(orders_sql, window)
    ]
    kept = {o[0] for o in orders}
    statuses: dict[int, dict[str, str]] = {}
    for conversion_id, destination, status in store.read(
        OUTBOX_SQL.format(orders=orders_sql), window
    ):
        if int(conversion_id) not in kept:  # inserted between the two queries
            continue
        mine = statuses.setdefault(int(conversion_id), {})
        known = mine.get(str(destination))
        # two connections of one destination: delivered when either delivered it, else the
        # first status in text order (stable whatever order the rows come in)
        if known is None or (known != DELIVERED and (status == DELIVERED or status < known)):
            mine[str(destination)] = str(status)
    same = {
        (int(prop), str(platform), str(i))
        for prop, platform, i in store.read(SAME_ID_SQL.format(orders=orders_sql), window + window)
    }
    sessions: dict[tuple[int, str], list[tuple[str, str, str | None]]] = {}
    for session_id, platform, event, event_id, prop in store.read(
        SESSION_SQL.format(orders=orders_sql), window
    ):
        key = (int(prop), str(session_id))
        sessions.setdefault(key, []).append((str(platform), str(event), event_id))
    return _Read(orders, statuses, same, sessions)


def _stored_ids(store: Store, column: str, ids: Iterable[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which of ``(property, id)`` are a stored conversion's ``column`` (``event_id`` or
    ``order_id``) in that same property (index probes: conversions_event_id, on
    (property_id, event_id), and conversions_order)."""
    by_property: dict[int, list[str]] = {}
    for prop, value in sorted(set(ids)):
        by_property.setdefault(prop, []).append(value)
    found: set[tuple[int, str]] = set()
    for prop, values in by_property.items():
        for start in range(0, len(values), LOOKUP_CHUNK):
            chunk = values[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = store.read(
                f"SELECT DISTINCT {column} FROM conversions"  # noqa: S608 - column is ours
                f" WHERE property_id = ? AND {column} IN ({marks})",
                [prop, *chunk],
            )
            found.update((prop, str(r[0])) for r in rows)
    return found


def _judged(read: _Read, asked: str | None) -> tuple[str, ...]:
    """The destinations the orders read can concern (an outbox row for some order, or a
    mirror row of their Pixel), and ``asked`` (the one a filter names): only these are
    judged — for 50,000 orders that is the difference between a second and a few, with seven
    destinations registered and two in use. Any other is ``neither`` for every order."""
    mirrored = {p for _, p, _ in read.same}
    mirrored.update(p for calls in read.sessions.values() for p, _, _ in calls)
    routed = {d for statuses in read.statuses.values() for d in statuses}
    return tuple(
        name
        for name, d in DESTINATIONS.items()
        if name in routed or d.PIXEL_MIRROR in mirrored or name == asked
    )


def _legs(store: Store, read: _Read, judged: Sequence[str]) -> dict[int, dict[str, Leg]]:
    """Every order's leg at each of the ``judged`` destinations."""
    specs = [
        (name, DESTINATIONS[name].PIXEL_MIRROR, DESTINATIONS[name].DEDUP_ID == "event_id")
        for name in judged
    ]
    # the candidates: per order and destination, the session's calls of its Pixel under a
    # name it fires the order's event under, with another id (or none)
    names: dict[tuple[str, str], frozenset[str]] = {}
    candidates: dict[tuple[int, str], list[str | None]] = {}
    others: dict[bool, set[tuple[int, str]]] = {True: set(), False: set()}
    for conversion_id, order_id, event, event_id, _, session_id, prop in read.orders:
        calls = read.sessions.get((prop, session_id or ""))
        if not calls:
            continue
        for name, platform, by_event_id in specs:
            wanted = names.get((name, event))
            if wanted is None:
                events = DESTINATIONS[name].pixel_events(event)
                wanted = frozenset(same_name(n) for n in events)
                names[(name, event)] = wanted
            own = event_id if by_event_id else order_id
            found = [
                call_id
                for call_platform, call_event, call_id in calls
                if call_platform == platform and call_id != own and same_name(call_event) in wanted
            ]
            if found:
                candidates[(conversion_id, name)] = found
                others[by_event_id].update((prop, i) for i in found if i is not None)
    stored = {
        True: _stored_ids(store, "event_id", others[True]),
        False: _stored_ids(store, "order_id", others[False]),
    }
    legs: dict[int, dict[str, Leg]] = {}
    same = read.same
    for conversion_id, order_id, _, event_id, _, _, prop in read.orders:
        statuses = read.statuses.get(conversion_id, {})
        mine: dict[str, Leg] = {}
        for name, platform, by_event_id in specs:
            own = event_id if by_event_id else order_id
            seen = candidates.get((conversion_id, name), [])
            # another stored conversion's id is that order's leg, not a mismatch of this one
            other = [i for i in seen if i is None or (prop, i) not in stored[by_event_id]]
            mine[name] = Leg(
                destination=name,
                dedup_id=own,
                status=statuses.get(name),
                same_id=(prop, platform, own) in same,
                mismatch=bool(other),
                browser_id=min((i for i in other if i is not None), default=None)
                if other
                else None,
            )
        legs[conversion_id] = mine
    return legs


def _covered(read: _Read, legs: dict[int, dict[str, Leg]]) -> set[str]:
    """The destinations with a sign on an order that goes to a platform: its outbox row
    there, or its Pixel's leg."""
    covered: set[str] = set()
    for conversion_id, *_ in read.orders:
        if read.statuses.get(conversion_id):
            for name, leg in legs[conversion_id].items():
                if leg.status is not None or leg.same_id or leg.mismatch:
                    covered.add(name)
    return covered


def _rows(read: _Read, legs: dict[int, dict[str, Leg]], covered: Sequence[str]) -> list[DedupRow]:
    """Every order read, with its legs at the ``covered`` destinations."""
    return [
        DedupRow(
            conversion_id=cid,
            order_id=order_id,
            event=event,
            event_id=event_id,
            received_at=received_at,
            session_id=session_id,
            statuses=read.statuses.get(cid, {}),
            legs={d: legs[cid][d] for d in covered},
        )
        for cid, order_id, event, event_id, received_at, session_id, _ in read.orders
    ]


def day_partial(store: Store, property_id: int, low: int, high: int) -> rollups.Partial:
    """One property's orders received in one UTC day [low, high), JSON-able: ``orders``
    (those going to a platform) and ``unsent``; ``covered``: the destinations the day's
    orders show a sign of; ``counts``: per covered destination, orders per verdict; ``any``:
    per verdict, the orders with that verdict at one covered destination at least."""
    read = _read(store, low, high, property_id)
    judged = _judged(read, None)
    legs = _legs(store, read, judged)
    # one pass: per order that goes to a platform, its verdict at each judged destination
    # and whether it shows a sign there; the same verdicts counted once per combination
    combinations: dict[tuple[str, ...], int] = {}
    signs: set[str] = set()
    for conversion_id, *_ in read.orders:
        if not read.statuses.get(conversion_id):
            continue
        mine = legs[conversion_id]
        for name, leg in mine.items():
            if leg.status is not None or leg.same_id or leg.mismatch:
                signs.add(name)
        key = tuple(mine[name].verdict for name in judged)
        combinations[key] = combinations.get(key, 0) + 1
    covered = [d for d in DESTINATIONS if d in signs]
    at = [judged.index(d) for d in covered]
    counts = {d: dict.fromkeys(VERDICTS, 0) for d in covered}
    somewhere = dict.fromkeys(VERDICTS, 0)
    for verdicts, n in combinations.items():
        for d, i in zip(covered, at, strict=True):
            counts[d][verdicts[i]] += n
        for verdict in {verdicts[i] for i in at}:
            somewhere[verdict] += n
    orders = sum(combinations.values())
    return {
        "orders": orders,
        "unsent": len(read.orders) - orders,
        "covered": covered,
        "counts": counts,
        "any": somewhere,
    }


def _day_matching(
    data: rollups.Partial, covered: Sequence[str], status: str | None, destination: str | None
) -> int:
    """How many of a day partial's orders the table's filter keeps (see :func:`_filtered`),
    when the report covers ``covered``: a destination the day does not cover is ``neither``
    for each of its orders."""
    if status is None:
        return int(data["orders"])
    mine = set(data["covered"])
    if destination is not None:
        if destination in mine:
            return int(data["counts"][destination][status])
        return int(data["orders"]) if status == NEITHER else 0
    if status == NEITHER and not mine.issuperset(covered):
        return int(data["orders"])
    return int(data["any"][status])


def _merge(
    parts: Sequence[rollups.DayPartial], asked: str | None
) -> tuple[int, int, tuple[str, ...], dict[str, dict[str, int]]]:
    """(orders, unsent, destinations covered, their counts) of the day partials."""
    found = {d for part in parts for d in part.data["covered"]}
    if asked is not None:
        found.add(asked)
    covered = tuple(n for n in DESTINATIONS if n in found)
    counts = {d: dict.fromkeys(VERDICTS, 0) for d in covered}
    for part in parts:
        data = part.data
        for d in covered:
            if d in data["counts"]:
                for verdict, n in data["counts"][d].items():
                    counts[d][verdict] += n
            else:
                counts[d][NEITHER] += data["orders"]
    orders = sum(int(part.data["orders"]) for part in parts)
    unsent = sum(int(part.data["unsent"]) for part in parts)
    return orders, unsent, covered, counts


def _page(
    store: Store,
    parts: Sequence[rollups.DayPartial],
    covered: tuple[str, ...],
    property_id: int | None,
    status: str | None,
    destination: str | None,
    page: int,
) -> list[DedupRow]:
    """Page ``page`` of the orders the filter keeps, newest first: the days before it are
    skipped by their partials' counts; its days are read in batches, newest first, each
    stopped once its matching orders are all found."""
    per_day: dict[date, int] = {}
    for part in parts:
        n = _day_matching(part.data, covered, status, destination)
        per_day[part.day] = per_day.get(part.day, 0) + n
    skip = (page - 1) * PAGE_SIZE
    rows: list[DedupRow] = []
    for day in sorted(per_day, reverse=True):
        matching = per_day[day]
        if matching == 0:
            continue
        if skip >= matching:
            skip -= matching
            continue
        low, high = rollups.day_bounds(day)
        before: tuple[float, int] | None = None
        batch, seen = BATCH, 0
        while seen < matching:
            read = _read(store, low, high, property_id, limit=batch, before=before)
            legs = _legs(store, read, covered)
            for row in _filtered(
                [r for r in _rows(read, legs, covered) if r.sent], status, destination
            ):
                seen += 1
                if skip:
                    skip -= 1
                    continue
                rows.append(row)
                if len(rows) == PAGE_SIZE:
                    return rows
            if len(read.orders) < batch:
                break  # the day's orders are all read (its count was taken earlier)
            last = read.orders[-1]
            before = (last[4], last[0])
            batch = min(batch * 2, BATCH_MAX)
    return rows


def dedup_report(
    store: Store,
    start: date,
    end: date,
    *,
    status: str | None = None,
    destination: str | None = None,
    page: int = 1,
    property_id: int | None = None,
    scan: bool = False,
    max_stale: float = 0.0,
) -> DedupReport:
    """Every order received in ``[start, end]`` (UTC days), summarised per destination, and
    page ``page`` of those whose verdict is ``status`` at ``destination`` (at any destination
    covered when None; every order when ``status`` is None); ``property_id``: one property's
    orders only (None: every property's). Everything an order is paired with (its outbox
    rows, mirror rows, session, other orders' ids) is its own property's.

    The summary is merged from the day partials (``max_stale``: see
    :func:`backchannel.rollups.partials`) and the page read in batches; ``scan=True`` reads
    every order of the range at once instead (the reference the tests compare)."""
    if status is not None and status not in VERDICTS:
        raise ValueError(f"status: one of {', '.join(VERDICTS)}")
    if destination is not None and destination not in DESTINATIONS:
        raise ValueError(f"destination: one of {', '.join(DESTINATIONS)}")
    if page < 1:
        raise ValueError("page: must be 1 or more")
    if scan:
        return _scan(store, start, end, status, destination, page, property_id)
    parts = rollups.partials(
        store, PARTIAL, day_partial, start, end, property_id, max_stale=max_stale
    )
    orders, unsent, covered, counts = _merge(parts, destination)
    matching = sum(_day_matching(p.data, covered, status, destination) for p in parts)
    return DedupReport(
        start=start,
        end=end,
        orders=orders,
        unsent=unsent,
        destinations=covered,
        counts=counts,
        status=status,
        destination=destination,
        page=page,
        matching=matching,
        pages=max(1, math.ceil(matching / PAGE_SIZE)),
        rows=_page(store, parts, covered, property_id, status, destination, page),
        as_of=min((part.computed_at for part in parts if part.stale), default=None),
    )


def _scan(
    store: Store,
    start: date,
    end: date,
    status: str | None,
    destination: str | None,
    page: int,
    property_id: int | None,
) -> DedupReport:
    """The report from every order of the range read at once (the reference)."""
    low, high = time_range(start, end)
    read = _read(store, low, high, property_id)
    legs = _legs(store, read, _judged(read, destination))
    found = _covered(read, legs) | ({destination} if destination else set())
    covered = tuple(n for n in DESTINATIONS if n in found)
    # newest first, as a page is read (the query itself leaves the order to the database)
    every = sorted(_rows(read, legs, covered), key=lambda r: (r.received_at, r.conversion_id))
    every.reverse()
    rows = [r for r in every if r.sent]
    counts = {d: dict.fromkeys(VERDICTS, 0) for d in covered}
    for row in rows:
        for d, leg in row.legs.items():
            counts[d][leg.verdict] += 1
    kept = _filtered(rows, status, destination)
    first = (page - 1) * PAGE_SIZE
    return DedupReport(
        start=start,
        end=end,
        orders=len(rows),
        unsent=len(every) - len(rows),
        destinations=covered,
        counts=counts,
        status=status,
        destination=destination,
        page=page,
        matching=len(kept),
        pages=max(1, math.ceil(len(kept) / PAGE_SIZE)),
        rows=kept[first : first + PAGE_SIZE],
    )


def _filtered(
    rows: Sequence[DedupRow], status: str | None, destination: str | None
) -> list[DedupRow]:
    if status is None:
        return list(rows)
    if destination is not None:
        return [r for r in rows if r.verdict(destination) == status]
    return [r for r in rows if status in r.verdicts.values()]


rollups.register(PARTIAL, day_partial)
