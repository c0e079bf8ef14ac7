"""Does each order reach the platform once? Browser leg, server leg and their shared event_id.

TikTok counts an order once when the Pixel (browser leg) and the Events API (server leg) send
it with the same ``event_id``. This report answers, per order, from Backchannel's own records:

- **browser leg seen**: the Pixel mirror (``browser_events`` of platform ``tiktok``, what
  bc.js saw ``ttq.track`` fire; gtag's mirrored calls are Google's, not counted here) holds
  a row with the conversion's event_id, or one of the same event name in the conversion's
  landing session;
- **server leg delivered**: the conversion's TikTok outbox row is ``delivered`` (Meta's
  status is shown too, but the Pixel mirror watches TikTok's Pixel only);
- **same event_id**: a mirrored browser event carries exactly the conversion's event_id;
- **mismatch**: the landing session holds a browser event of the same name whose event_id is
  different (or missing) and belongs to no other stored conversion. The platform then sees
  two events it cannot pair and counts the order twice once both legs arrive — the bug users
  hunt for in Events Manager, so it is flagged first, whatever the rest.

Every order gets exactly one verdict, so the five counts add up to the base:
``mismatch`` first, then ``both`` (same event_id and delivered), ``browser_only``,
``server_only``, ``neither``.

The orders are production conversions (``test_event_code IS NULL``) with an ``order_id``,
received in the range — what the Pixel mirrors. A conversion with no outbox row at all (the
shop marked it opted out, or no destination takes its event) goes to no platform, so it is
counted apart (``unsent``), not as "neither". One query (:data:`ROWS_SQL`: EXISTS
subqueries, one row per conversion however many browser events matched) reads the latest
:data:`CAP` of them; the summary and the pages come from that one snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from backchannel.destinations import meta, tiktok
from backchannel.diagnostics import percent
from backchannel.report import time_range
from backchannel.store.base import DELIVERED, Store

#: at most this many conversions (the latest of the range) are read per report
CAP = 50_000
PAGE_SIZE = 50
MAX_PAGE = 100_000

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
    BOTH: "both legs, same event_id",
    BROWSER_ONLY: "browser leg only",
    SERVER_ONLY: "server leg only",
    NEITHER: "neither leg",
    MISMATCH: "event_id mismatch",
}

# A browser event "of the same name in the session with another id" must not be the browser
# leg of ANOTHER stored conversion (two orders in one visit are two legit events).
_OTHER_ID = """
    b.session_id = c.session_id AND b.event = c.event AND b.platform = 'tiktok'
    AND b.property_id = c.property_id
    AND (b.event_id IS NULL OR b.event_id <> c.event_id)
    AND NOT EXISTS (
        SELECT 1 FROM conversions o
         WHERE o.property_id = b.property_id AND o.event = b.event AND o.event_id = b.event_id
    )
"""

#: the report's SQL, the same text for both backends (``?`` placeholders). Everything joined
#: is the conversion's own property's. A property with two TikTok pixels: the server leg is
#: delivered when any of its TikTok connections delivered it. ``{{scope}}``: "" or one property.
ROWS_SQL = f"""
SELECT c.order_id, c.event, c.event_id, c.received_at, c.session_id,
       CASE WHEN EXISTS (
           SELECT 1 FROM outbox x WHERE x.conversion_id = c.id AND x.destination = 'tiktok'
              AND x.status = 'delivered'
       ) THEN 'delivered' ELSE (SELECT MIN(x.status) FROM outbox x
         WHERE x.conversion_id = c.id AND x.destination = 'tiktok') END,
       (SELECT COUNT(*) FROM outbox x WHERE x.conversion_id = c.id),
       CASE WHEN EXISTS (
           SELECT 1 FROM browser_events b
            WHERE b.event_id = c.event_id AND b.platform = 'tiktok'
              AND b.property_id = c.property_id
       ) THEN 1 ELSE 0 END,
       CASE WHEN c.session_id IS NOT NULL AND EXISTS (
           SELECT 1 FROM browser_events b WHERE {_OTHER_ID}
       ) THEN 1 ELSE 0 END,
       (SELECT MIN(b.event_id) FROM browser_events b
         WHERE c.session_id IS NOT NULL AND {_OTHER_ID}),
       c.id
FROM conversions c
WHERE c.test_event_code IS NULL AND c.order_id IS NOT NULL
  AND c.received_at >= ? AND c.received_at < ?{{scope}}
ORDER BY c.received_at DESC, c.id DESC
LIMIT ?
"""  # noqa: S608 - the only interpolation is the constant _OTHER_ID above


@dataclass(frozen=True, slots=True)
class DedupRow:
    """One order: plain facts from the store, and the verdict they add up to."""

    order_id: str
    event: str
    event_id: str
    received_at: float
    session_id: str | None
    #: the TikTok outbox status (the Pixel mirror watches TikTok's Pixel, so the verdict is
    #: TikTok's); None when no row exists (opted out or not routed)
    tiktok: str | None
    #: how many destinations have a row for it (0: opted out or routed nowhere)
    outbox_rows: int
    #: a mirrored browser event carries exactly this event_id
    same_id: bool
    #: the landing session holds a browser event of this name with another (or no) event_id,
    #: not another stored conversion's: see the module docstring
    mismatch: bool
    #: the smallest such other event_id (None: the browser sent none)
    browser_id: str | None
    conversion_id: int = 0
    #: every destination's status, filled for the rows of the page shown
    statuses: dict[str, str] = field(default_factory=dict)

    @property
    def meta(self) -> str | None:
        return self.statuses.get(meta.name)

    @property
    def browser_seen(self) -> bool:
        # a same-name event in the session is this order's (same id), a mismatch, or the
        # leg of another stored order (not this one's)
        return self.same_id or self.mismatch

    @property
    def sent(self) -> bool:
        """It has an outbox row: some platform is meant to receive it."""
        return self.outbox_rows > 0

    @property
    def server_delivered(self) -> bool:
        return self.tiktok == DELIVERED

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
    def advice(self) -> str:
        """The verdict as a person needs it: what the platform does with this order."""
        if self.verdict == MISMATCH:
            if self.server_delivered:
                return "counted twice: the Pixel and the server sent different event_ids"
            return "different event_ids: the legs cannot pair (counted twice once both arrive)"
        return {
            BOTH: "deduplicated: counted once",
            BROWSER_ONLY: "browser leg only: the server leg is not delivered (yet)"
            if self.tiktok is not None
            else "browser leg only: no server leg goes to TikTok (not routed there)",
            SERVER_ONLY: "server leg only: recovered what the Pixel missed",
            NEITHER: "neither leg reached the platform",
        }[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "event": self.event,
            "event_id": self.event_id,
            "received_at": self.received_at,
            "session_id": self.session_id,
            tiktok.name: self.tiktok,  # the verdict's destination, kept for API users
            meta.name: self.meta,
            "destinations": dict(self.statuses),
            "browser_seen": self.browser_seen,
            "same_event_id": self.same_id,
            "mismatch": self.mismatch,
            "browser_event_id": self.browser_id,
            "browser_leg": self.browser_leg,
            "server_delivered": self.server_delivered,
            "verdict": self.verdict,
            "advice": self.advice,
        }


def dedup_row(r: Sequence[Any]) -> DedupRow:
    """A DedupRow from one row of :data:`ROWS_SQL` (both backends)."""
    return DedupRow(
        order_id=r[0],
        event=r[1],
        event_id=r[2],
        received_at=float(r[3]),
        session_id=r[4],
        tiktok=r[5],
        outbox_rows=int(r[6] or 0),
        same_id=bool(r[7]),
        mismatch=bool(r[8]),
        browser_id=r[9],
        conversion_id=int(r[10]),
    )


def fill_statuses(store: Store, rows: Sequence[DedupRow]) -> None:
    """Every destination's outbox status of the rows shown (one query for the page)."""
    if not rows:
        return
    by_id = {r.conversion_id: r for r in rows}
    marks = ",".join("?" * len(by_id))
    for conversion_id, destination, status in store.read(
        f"SELECT conversion_id, destination, status FROM outbox"  # noqa: S608 - only ?s
        f" WHERE conversion_id IN ({marks})",
        list(by_id),
    ):
        statuses = by_id[int(conversion_id)].statuses
        if statuses.get(str(destination)) != DELIVERED:  # two connections: delivered wins
            statuses[str(destination)] = str(status)


@dataclass(slots=True)
class DedupReport:
    """The summary of every order read, and one page of them (newest first)."""

    start: date
    end: date
    #: the base: orders read that go to a platform (an outbox row for TikTok or Meta)
    orders: int
    #: orders read that go to no platform (opted out, or routed nowhere): not in the base
    unsent: int
    #: verdict -> orders
    counts: dict[str, int]
    capped: bool
    cap: int
    #: the verdict the table is filtered by (None: all)
    status: str | None
    page: int
    #: orders the filter keeps (the table's base), and pages of PAGE_SIZE they make
    matching: int
    pages: int
    rows: list[DedupRow]

    def share(self, verdict: str) -> float | None:
        return percent(self.counts[verdict], self.orders)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "orders": self.orders,
            "unsent": self.unsent,
            "capped": self.capped,
            "cap": self.cap,
            "summary": {v: {"count": self.counts[v], "percent": self.share(v)} for v in VERDICTS},
            "status": self.status,
            "page": self.page,
            "pages": self.pages,
            "page_size": PAGE_SIZE,
            "matching": self.matching,
            "rows": [r.to_dict() for r in self.rows],
        }


def dedup_report(
    store: Store,
    start: date,
    end: date,
    *,
    status: str | None = None,
    page: int = 1,
    cap: int | None = None,
    property_id: int | None = None,
) -> DedupReport:
    """Read the latest ``cap`` (default :data:`CAP`) orders received in ``[start, end]`` (UTC
    days) and page ``page`` of those whose verdict is ``status`` (all when None);
    ``property_id``: one property's orders only (None: every property's)."""
    cap = CAP if cap is None else cap
    if status is not None and status not in VERDICTS:
        raise ValueError(f"status: one of {', '.join(VERDICTS)}")
    if page < 1:
        raise ValueError("page: must be 1 or more")
    low, high = time_range(start, end)
    if property_id is None:
        raw = store.read(ROWS_SQL.format(scope=""), (low, high, cap + 1))
    else:
        query = ROWS_SQL.format(scope=" AND c.property_id = ?")
        raw = store.read(query, (low, high, property_id, cap + 1))
    read = [dedup_row(r) for r in raw[:cap]]
    rows = [r for r in read if r.sent]
    counts = dict.fromkeys(VERDICTS, 0)
    for row in rows:
        counts[row.verdict] += 1
    kept = rows if status is None else [r for r in rows if r.verdict == status]
    first = (page - 1) * PAGE_SIZE
    return DedupReport(
        start=start,
        end=end,
        orders=len(rows),
        unsent=len(read) - len(rows),
        counts=counts,
        capped=len(raw) > cap,
        cap=cap,
        status=status,
        page=page,
        matching=len(kept),
        pages=max(1, math.ceil(len(kept) / PAGE_SIZE)),
        rows=_shown(store, kept[first : first + PAGE_SIZE]),
    )


def _shown(store: Store, rows: list[DedupRow]) -> list[DedupRow]:
    fill_statuses(store, rows)
    return rows
