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
received in the range. One with no outbox row at all (opted out, or no destination takes
its event) goes to no platform: it is counted apart (``unsent``), not in the base. The
destinations reported are those the orders read show any sign of: an outbox row, or a leg of
their Pixel. Four portable queries over the latest :data:`CAP` orders (the orders, their
outbox rows, the mirror rows carrying their ids, the mirror rows of their sessions), and one
lookup of the other ids those sessions hold; the summary and the pages come from that one
snapshot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from backchannel.destinations import DESTINATIONS, display_name
from backchannel.diagnostics import percent
from backchannel.report import time_range
from backchannel.store.base import DELIVERED, Store

#: at most this many conversions (the latest of the range) are read per report
CAP = 50_000
PAGE_SIZE = 50
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
#: other queries select from it as a subquery, so they read exactly these rows.
#: ``{scope}``: "" or one property's (" AND c.property_id = ?"), filled in by :func:`_sql`
ORDERS_SQL = """
SELECT c.id, c.order_id, c.event, c.event_id, c.received_at, c.session_id, c.property_id
FROM conversions c
WHERE c.test_event_code IS NULL AND c.order_id IS NOT NULL
  AND c.received_at >= ? AND c.received_at < ?{scope}
ORDER BY c.received_at DESC, c.id DESC
LIMIT ?
"""
#: every outbox row of those orders: (conversion id, destination, status); a destination
#: with two connections (two pixels of one property) has two rows
OUTBOX_SQL = f"""
SELECT x.conversion_id, x.destination, x.status
FROM outbox x
WHERE x.conversion_id IN (SELECT o.id FROM ({ORDERS_SQL}) o)
"""  # noqa: S608 - the only interpolation is the constant ORDERS_SQL
#: mirror rows carrying one of those orders' ids, event_id or order_id: (property, platform,
#: id); a row pairs only with an order of its own property (matched in Python)
SAME_ID_SQL = f"""
SELECT DISTINCT b.property_id, b.platform, b.event_id
FROM browser_events b
WHERE b.event_id IN (SELECT o.event_id FROM ({ORDERS_SQL}) o)
   OR b.event_id IN (SELECT o.order_id FROM ({ORDERS_SQL}) o)
"""  # noqa: S608 - the only interpolation is the constant ORDERS_SQL
#: mirror rows of those orders' landing sessions: (session, platform, event, id, property)
SESSION_SQL = f"""
SELECT b.session_id, b.platform, b.event, b.event_id, b.property_id
FROM browser_events b
WHERE b.session_id IN (
    SELECT o.session_id FROM ({ORDERS_SQL}) o WHERE o.session_id IS NOT NULL
)
"""  # noqa: S608 - the only interpolation is the constant ORDERS_SQL
_SCOPE = " AND c.property_id = ?"


def _sql(query: str, property_id: int | None) -> str:
    """A query of this module over every property's orders, or one property's."""
    return query.replace("{scope}", "" if property_id is None else _SCOPE)


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
    #: the base: orders read that go to a platform (an outbox row somewhere)
    orders: int
    #: orders read that go to no platform (opted out, or routed nowhere): not in the base
    unsent: int
    #: the destinations covered, in registry order
    destinations: tuple[str, ...]
    #: destination -> verdict -> orders
    counts: dict[str, dict[str, int]]
    capped: bool
    cap: int
    #: the table's filter: orders whose verdict is ``status`` at ``destination`` (at any
    #: destination covered when None); no status: every order
    status: str | None
    destination: str | None
    page: int
    #: orders the filter keeps (the table's base), and pages of PAGE_SIZE they make
    matching: int
    pages: int
    rows: list[DedupRow]

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
            "capped": self.capped,
            "cap": self.cap,
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
    capped: bool
    statuses: dict[int, dict[str, str]]
    #: (property, platform, id) of every mirror row carrying an order's event_id or order_id
    same: set[tuple[int, str, str]]
    #: (property, session) -> its mirror rows (platform, event, id)
    sessions: dict[tuple[int, str], list[tuple[str, str, str | None]]]


def _read(store: Store, low: int, high: int, cap: int, property_id: int | None) -> _Read:
    window: tuple[Any, ...] = (low, high, cap + 1)
    if property_id is not None:
        window = (low, high, property_id, cap + 1)
    raw = store.read(_sql(ORDERS_SQL, property_id), window)
    orders = [
        (int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]), r[5], int(r[6]))
        for r in raw[:cap]
    ]
    kept = {o[0] for o in orders}
    statuses: dict[int, dict[str, str]] = {}
    for conversion_id, destination, status in store.read(_sql(OUTBOX_SQL, property_id), window):
        if int(conversion_id) not in kept:  # the cap's extra row is not an order of the report
            continue
        mine = statuses.setdefault(int(conversion_id), {})
        known = mine.get(str(destination))
        # two connections of one destination: delivered when either delivered it, else the
        # first status in text order (stable whatever order the rows come in)
        if known is None or (known != DELIVERED and (status == DELIVERED or status < known)):
            mine[str(destination)] = str(status)
    same = {
        (int(prop), str(platform), str(i))
        for prop, platform, i in store.read(_sql(SAME_ID_SQL, property_id), window + window)
    }
    sessions: dict[tuple[int, str], list[tuple[str, str, str | None]]] = {}
    for session_id, platform, event, event_id, prop in store.read(
        _sql(SESSION_SQL, property_id), window
    ):
        key = (int(prop), str(session_id))
        sessions.setdefault(key, []).append((str(platform), str(event), event_id))
    return _Read(orders, len(raw) > cap, statuses, same, sessions)


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


def _legs(
    store: Store, read: _Read, asked: str | None
) -> tuple[tuple[str, ...], dict[int, dict[str, Leg]]]:
    """Every order's leg at each destination that may be covered, then those covered.

    Only the destinations the rows read can concern are judged (an outbox row for some
    order, or a mirror row of their Pixel): for 50,000 orders that is the difference between
    a second and a few, with seven destinations registered and two in use. ``asked``: a
    destination to judge (and cover) whatever the rows say: the one a filter names."""
    mirrored = {p for _, p, _ in read.same}
    mirrored.update(p for calls in read.sessions.values() for p, _, _ in calls)
    routed = {d for statuses in read.statuses.values() for d in statuses}
    judged = [
        (name, d.PIXEL_MIRROR, d.DEDUP_ID == "event_id", d)
        for name, d in DESTINATIONS.items()
        if name in routed or d.PIXEL_MIRROR in mirrored or name == asked
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
        for name, platform, by_event_id, d in judged:
            wanted = names.get((name, event))
            if wanted is None:
                wanted = frozenset(same_name(n) for n in d.pixel_events(event))
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
    covered: set[str] = set()
    same = read.same
    for conversion_id, order_id, _, event_id, _, _, prop in read.orders:
        statuses = read.statuses.get(conversion_id, {})
        mine: dict[str, Leg] = {}
        for name, platform, by_event_id, _ in judged:
            own = event_id if by_event_id else order_id
            seen = candidates.get((conversion_id, name), [])
            # another stored conversion's id is that order's leg, not a mismatch of this one
            other = [i for i in seen if i is None or (prop, i) not in stored[by_event_id]]
            leg = Leg(
                destination=name,
                dedup_id=own,
                status=statuses.get(name),
                same_id=(prop, platform, own) in same,
                mismatch=bool(other),
                browser_id=min((i for i in other if i is not None), default=None)
                if other
                else None,
            )
            mine[name] = leg
            if statuses and (leg.status is not None or leg.same_id or leg.mismatch):
                covered.add(name)
        legs[conversion_id] = mine
    if asked is not None:
        covered.add(asked)
    return tuple(n for n in DESTINATIONS if n in covered), legs


def dedup_report(
    store: Store,
    start: date,
    end: date,
    *,
    status: str | None = None,
    destination: str | None = None,
    page: int = 1,
    cap: int | None = None,
    property_id: int | None = None,
) -> DedupReport:
    """Read the latest ``cap`` (default :data:`CAP`) orders received in ``[start, end]`` (UTC
    days) and page ``page`` of those whose verdict is ``status`` at ``destination`` (at any
    destination covered when None; every order when ``status`` is None); ``property_id``:
    one property's orders only (None: every property's). Everything an order is paired with
    (its outbox rows, mirror rows, session, other orders' ids) is its own property's."""
    cap = CAP if cap is None else cap
    if status is not None and status not in VERDICTS:
        raise ValueError(f"status: one of {', '.join(VERDICTS)}")
    if destination is not None and destination not in DESTINATIONS:
        raise ValueError(f"destination: one of {', '.join(DESTINATIONS)}")
    if page < 1:
        raise ValueError("page: must be 1 or more")
    low, high = time_range(start, end)
    read = _read(store, low, high, cap, property_id)
    covered, legs = _legs(store, read, destination)
    every = [
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
        capped=read.capped,
        cap=cap,
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
