"""The overview's figures: what came in, what went out, what is stuck, how long it took.

Everything here is a count or a duration read from the store with :meth:`Store.read` (the
same query text on SQLite and PostgreSQL); nothing is estimated. The dashboard page, its JSON
twin and the tests all call :func:`overview`, so the page cannot drift from the data.

Rules that decide the numbers:

- **Production only.** Conversions with a ``test_event_code`` are left out of every figure
  and counted apart (:attr:`Overview.test_events`); the Test events page shows them.
- **Range figures** (received, delivered, latency) use the half-open unix interval of the
  inclusive UTC day range: received by ``conversions.received_at``, delivered and latency by
  ``outbox.delivered_at``. Buckets are UTC days, or UTC hours when the range is one day.
- **State figures** (queue depth, retrying, dead, expired) are the outbox *now*, whatever
  the range: an outbox row has no timestamp for when it entered those states.
- **Latency** is ``delivered_at − received_at`` per delivered row, in seconds, over the
  latest :data:`LATENCY_CAP` deliveries of the range per destination (the page says how many
  it is based on). Percentiles use the **nearest-rank** method: the p-th percentile of n
  sorted values is the value at rank ``ceil(p/100 × n)`` (1-based) — always a value that
  was observed, never an interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from backchannel.report import time_range
from backchannel.store.base import DEAD, DELIVERED, EXPIRED, IN_FLIGHT, PENDING, Store

LATENCY_CAP = 100_000  # deliveries per destination the latency figures are computed from
LAST_ERRORS = 20  # rows in the "last errors" and "refused input" tables
RESPONSE_EXCERPT = 500  # characters of the platform's answer shown per error
DAY, HOUR = 86_400, 3_600  # seconds per bucket


@dataclass(frozen=True, slots=True)
class Latency:
    """Delivery latency of one destination over the range, in seconds (None: no delivery)."""

    base: int
    p50: float | None
    p90: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True, slots=True)
class ErrorRow:
    """One outbox row that carries an error: the platform's own message and answer.

    ``due_at`` is when the attempt failed (``outbox.failed_at``, recorded by the worker since
    migration 0008); for a row that failed before that, the only time it kept: when its
    last try was due (the next try, for a retrying row).
    """

    outbox_id: int
    destination: str
    event: str
    event_id: str
    status: str
    attempts: int
    due_at: float
    error: str
    response: str | None


@dataclass(frozen=True, slots=True)
class RefusedRow:
    """Input a source endpoint or the importer refused (a bad webhook signature, an
    unmappable order, a CSV file with bad rows): ``summary`` is its first ``path: reason``."""

    at: float
    source: str
    delivery_id: str | None
    error: str
    summary: str


def summarize_refusal(reason: bytes | str) -> tuple[str, str]:
    """(error code, first "path: reason") of a stored rejection's JSON."""
    try:
        doc = orjson.loads(reason)
    except orjson.JSONDecodeError:
        return "unreadable", ""
    if not isinstance(doc, dict):
        return "unreadable", ""
    errors = doc.get("errors") or []
    first = errors[0] if errors and isinstance(errors[0], dict) else {}
    where = f"line {first['line']}: " if "line" in first else ""
    summary = f"{where}{first.get('path', '')}: {first.get('reason', '')}" if first else ""
    if len(errors) > 1:
        summary += f" (+{len(errors) - 1} more)"
    return str(doc.get("error", "")), summary


@dataclass(slots=True)
class Overview:
    start: date
    end: date
    #: "day" or "hour"
    bucket: str
    #: bucket labels, oldest first: ``YYYY-MM-DD`` or ``YYYY-MM-DD HH:00``
    buckets: list[str]
    destinations: list[str]
    #: event name -> one count per bucket (production conversions received)
    received: dict[str, list[int]] = field(default_factory=dict)
    #: destination -> event name -> one count per bucket (delivered in the bucket)
    delivered: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    #: test conversions received in the range (kept out of every other figure)
    test_events: int = 0
    #: per destination, now: pending + in_flight / pending with attempts > 0 / dead / expired
    queue: dict[str, int] = field(default_factory=dict)
    retrying: dict[str, int] = field(default_factory=dict)
    dead: dict[str, int] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    latency: dict[str, Latency] = field(default_factory=dict)
    last_errors: list[ErrorRow] = field(default_factory=list)
    #: source input refused in the range (webhooks, CSV imports), and the latest of them
    refused: int = 0
    last_refused: list[RefusedRow] = field(default_factory=list)

    @property
    def received_total(self) -> int:
        return sum(sum(counts) for counts in self.received.values())

    def delivered_total(self, destination: str) -> int:
        return sum(sum(counts) for counts in self.delivered.get(destination, {}).values())

    def to_json(self) -> dict[str, Any]:
        """The JSON twin of the page (``GET /admin/api/overview``): the same figures."""
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "bucket": self.bucket,
            "buckets": self.buckets,
            "destinations": self.destinations,
            "totals": {
                "received": self.received_total,
                "test_events": self.test_events,
                "delivered": {d: self.delivered_total(d) for d in self.destinations},
                "queue": self.queue,
                "retrying": self.retrying,
                "dead": self.dead,
                "expired": self.expired,
            },
            "received": self.received,
            "delivered": self.delivered,
            "refused": {
                "total": self.refused,
                "latest": [
                    {
                        "at": r.at,
                        "source": r.source,
                        "delivery_id": r.delivery_id,
                        "error": r.error,
                        "summary": r.summary,
                    }
                    for r in self.last_refused
                ],
            },
            "latency": {
                d: {
                    "base": lat.base,
                    "p50": lat.p50,
                    "p90": lat.p90,
                    "p99": lat.p99,
                    "max": lat.max,
                }
                for d, lat in self.latency.items()
            },
            "last_errors": [
                {
                    "outbox_id": e.outbox_id,
                    "destination": e.destination,
                    "event": e.event,
                    "event_id": e.event_id,
                    "status": e.status,
                    "attempts": e.attempts,
                    "due_at": e.due_at,
                    "error": e.error,
                    "response": e.response,
                }
                for e in self.last_errors
            ],
        }


def nearest_rank(sorted_values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0 < p <= 100) by nearest rank; None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_of(durations: Sequence[float]) -> Latency:
    """p50/p90/p99/max of ``durations`` (seconds), rounded to milliseconds."""
    values = sorted(durations)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return Latency(
        base=len(values),
        p50=ms(nearest_rank(values, 50)),
        p90=ms(nearest_rank(values, 90)),
        p99=ms(nearest_rank(values, 99)),
        max=ms(values[-1] if values else None),
    )


def bucket_labels(start: date, end: date) -> tuple[str, int, list[str]]:
    """(kind, seconds per bucket, labels) of a day range: hours for one day, else days."""
    lo, hi = time_range(start, end)
    width = HOUR if start == end else DAY
    kind = "hour" if width == HOUR else "day"
    pattern = "%Y-%m-%d %H:00" if kind == "hour" else "%Y-%m-%d"
    labels = [datetime.fromtimestamp(t, UTC).strftime(pattern) for t in range(lo, hi, width)]
    return kind, width, labels


def _bucket_expr(store: Store, column: str) -> str:
    """SQL for ``floor((column - ?) / ?)`` as an integer: the bucket index of a unix time.

    Why per dialect: SQLite's ``CAST(x AS INTEGER)`` truncates (the floor, for the
    non-negative values the range filter leaves) while PostgreSQL's rounds to nearest.
    """
    if store.dialect == "postgres":
        return f"CAST(FLOOR(({column} - ?) / ?) AS BIGINT)"
    return f"CAST(({column} - ?) / ? AS INTEGER)"


# ``{scope}`` in each query: "" (every property) or one property's condition (one more
# parameter, always last before LIMIT): see _scoped below.
_RECEIVED = """
SELECT event, {bucket}, COUNT(*) FROM conversions
WHERE received_at >= ? AND received_at < ? AND test_event_code IS NULL{scope}
GROUP BY 1, 2
"""

_TEST_EVENTS = """
SELECT COUNT(*) FROM conversions
WHERE received_at >= ? AND received_at < ? AND test_event_code IS NOT NULL{scope}
"""

_DELIVERED = """
SELECT o.destination, c.event, {bucket}, COUNT(*)
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.status = ? AND o.delivered_at >= ? AND o.delivered_at < ?
  AND c.test_event_code IS NULL{scope}
GROUP BY 1, 2, 3
"""

_STATE = """
SELECT o.destination, o.status, CASE WHEN o.attempts > 0 THEN 1 ELSE 0 END, COUNT(*)
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.status IN (?, ?, ?, ?) AND c.test_event_code IS NULL{scope}
GROUP BY 1, 2, 3
"""

_LATENCY = """
SELECT o.delivered_at - c.received_at
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.destination = ? AND o.status = ? AND o.delivered_at >= ? AND o.delivered_at < ?
  AND c.test_event_code IS NULL{scope}
ORDER BY o.delivered_at DESC, o.id DESC
LIMIT ?
"""

# Per destination, through its connections, so the (connection_id, status, due_at) index
# narrows it; delivered rows never keep an error (mark_delivered clears it), so only the
# other states are read.
_REFUSED_COUNT = "SELECT COUNT(*) FROM ingest_rejections WHERE at >= ? AND at < ?{scope}"
_REFUSED = (
    "SELECT at, source, delivery_id, reason FROM ingest_rejections"
    " WHERE at >= ? AND at < ?{scope} ORDER BY at DESC, id DESC LIMIT ?"
)
_ERRORS = """
SELECT o.id, o.destination, c.event, c.event_id, o.status, o.attempts,
       COALESCE(o.failed_at, o.due_at), o.last_error, o.last_response
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.connection_id IN (SELECT k.id FROM connections k WHERE k.destination = ?)
  AND o.status IN (?, ?, ?, ?) AND o.last_error IS NOT NULL
  AND c.test_event_code IS NULL{scope}
ORDER BY COALESCE(o.failed_at, o.due_at) DESC, o.id DESC
LIMIT ?
"""


def _scoped(
    query: str, params: Sequence[Any], property_id: int | None, column: str, **fmt: str
) -> tuple[str, list[Any]]:
    """``query`` for one property (``column = ?`` added, its parameter before a trailing
    LIMIT's) or every one."""
    values = list(params)
    if property_id is None:
        return query.format(scope="", **fmt), values
    limited = query.rstrip().endswith("LIMIT ?")
    at = len(values) - 1 if limited else len(values)
    values.insert(at, property_id)
    return query.format(scope=f" AND {column} = ?", **fmt), values


def excerpt(text: str | None, limit: int = RESPONSE_EXCERPT) -> str | None:
    """At most ``limit`` characters, with an ellipsis when cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def overview(
    store: Store,
    start: date,
    end: date,
    destinations: Sequence[str],
    property_id: int | None = None,
) -> Overview:
    """Every figure of the overview page for the inclusive UTC day range ``start..end``, of
    one property (None: every property's, the host's view).

    ``destinations`` are always listed (with zeros); a destination found in the outbox but
    no longer configured is listed after them.
    """
    p = property_id
    kind, width, labels = bucket_labels(start, end)
    lo, hi = time_range(start, end)
    result = Overview(start, end, kind, labels, list(destinations))

    def dest(name: str) -> None:
        if name not in result.destinations:
            result.destinations.append(name)

    def slot(index: int) -> int:
        # the range filter keeps every row inside; clamp anyway against float edge cases
        return min(max(int(index), 0), len(labels) - 1)

    bucket = _bucket_expr(store, "received_at")
    for event, index, n in store.read(
        *_scoped(
            _RECEIVED,
            (float(lo), float(width), float(lo), float(hi)),
            p,
            "property_id",
            bucket=bucket,
        )
    ):
        result.received.setdefault(event, [0] * len(labels))[slot(index)] += int(n)
    result.received = dict(sorted(result.received.items()))

    ((tests,),) = store.read(*_scoped(_TEST_EVENTS, (float(lo), float(hi)), p, "property_id"))
    result.test_events = int(tests)

    bucket = _bucket_expr(store, "o.delivered_at")
    delivered: dict[str, dict[str, list[int]]] = {}
    for destination, event, index, n in store.read(
        *_scoped(
            _DELIVERED,
            (float(lo), float(width), DELIVERED, float(lo), float(hi)),
            p,
            "c.property_id",
            bucket=bucket,
        )
    ):
        dest(destination)
        per_event = delivered.setdefault(destination, {})
        per_event.setdefault(event, [0] * len(labels))[slot(index)] += int(n)

    for name in result.destinations:
        for counts in (result.queue, result.retrying, result.dead, result.expired):
            counts[name] = 0
    for destination, status, tried, n in store.read(
        *_scoped(_STATE, (PENDING, IN_FLIGHT, DEAD, EXPIRED), p, "c.property_id")
    ):
        dest(destination)
        for counts in (result.queue, result.retrying, result.dead, result.expired):
            counts.setdefault(destination, 0)
        if status in (PENDING, IN_FLIGHT):
            result.queue[destination] += int(n)
        if status == PENDING and int(tried):
            result.retrying[destination] += int(n)
        if status == DEAD:
            result.dead[destination] += int(n)
        if status == EXPIRED:
            result.expired[destination] += int(n)

    result.delivered = {d: dict(sorted(delivered.get(d, {}).items())) for d in result.destinations}
    for name in result.destinations:
        rows = store.read(
            *_scoped(
                _LATENCY,
                (name, DELIVERED, float(lo), float(hi), LATENCY_CAP),
                p,
                "c.property_id",
            )
        )
        result.latency[name] = latency_of([float(r[0]) for r in rows])

    errors: list[ErrorRow] = []
    for name in result.destinations:
        for row in store.read(
            *_scoped(
                _ERRORS,
                (name, PENDING, IN_FLIGHT, DEAD, EXPIRED, LAST_ERRORS),
                p,
                "c.property_id",
            )
        ):
            oid, destination, event, event_id, status, attempts, due_at, error, response = row
            errors.append(
                ErrorRow(
                    int(oid),
                    destination,
                    event,
                    event_id,
                    status,
                    int(attempts),
                    float(due_at),
                    error,
                    excerpt(response),
                )
            )
    errors.sort(key=lambda e: (e.due_at, e.outbox_id), reverse=True)
    result.last_errors = errors[:LAST_ERRORS]

    ((refused,),) = store.read(*_scoped(_REFUSED_COUNT, (float(lo), float(hi)), p, "property_id"))
    result.refused = int(refused)
    for at, source, delivery_id, reason in store.read(
        *_scoped(_REFUSED, (float(lo), float(hi), LAST_ERRORS), p, "property_id")
    ):
        error, summary = summarize_refusal(reason)
        result.last_refused.append(RefusedRow(float(at), source, delivery_id, error, summary))
    return result
