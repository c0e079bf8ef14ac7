"""The overview's figures: what came in, what went out, what is stuck, how long it took.

Everything here is a count or a duration read from the store with :meth:`Store.read` (the
same query text on SQLite and PostgreSQL); nothing is estimated. The dashboard page, its JSON
twin and the tests all call :func:`overview`, so the page cannot drift from the data.

Rules that decide the numbers:

- **Production only.** Conversions with a ``test_event_code`` are left out of every figure
  and counted apart (:attr:`Overview.test_events`); the Test events page shows them.
- **Range figures** (received, test events, delivered, latency) use the half-open unix
  interval of the inclusive UTC day range: received and test events by
  ``conversions.received_at``, delivered and latency by ``outbox.delivered_at``. Buckets are
  UTC days, or UTC hours when the range is one day. They are merged from one partial per
  (property, UTC day) (:func:`day_partial`, through :func:`backchannel.rollups.partials`,
  which keeps a day's partial until a write changes that day): the day's received and
  delivered counts per event and UTC hour, its test events, and per destination a histogram
  of its latencies in whole milliseconds. A day bucket is the sum of its 24 hours.
  ``overview(..., scan=True)`` reads the rows of the whole range instead, with the same
  queries: the reference the tests hold the merge equal to, on both backends.
- **State figures** (queue depth, retrying, dead, expired) are the outbox *now*, whatever
  the range: an outbox row has no timestamp for when it entered those states. They, the last
  errors and the refused input (count and latest) are read live, never from the delivered
  rows (the bulk of the outbox): the state counts and the errors through outbox_due, which
  the indexes proposed for a migration (outbox_state, conversions_test, outbox_errors: see
  the comments on the queries) turn into index-only counts and LIMIT walks.
- **Latency** is ``delivered_at − received_at`` per delivered row in whole milliseconds
  (:func:`to_ms`: ``round(seconds × 1000)``, half to even), over **every** delivery of the
  range per destination (its ``base``: the destination's delivered total). Percentiles use
  the **nearest-rank** method: the p-th percentile of n sorted values is the value at rank
  ``ceil(p/100 × n)`` (1-based) — always a value that was observed (to the millisecond),
  never an interpolation. Why the per-day histograms give the exact figure: rounding is
  monotone (a ≤ b ⇒ to_ms(a) ≤ to_ms(b)), so the rounded durations sort in the order of the
  exact ones, and the value at rank r of the rounded list is the rounding of the value at
  rank r of the exact list; the days' histograms add up to the range's. (Until the rollups:
  the latest 100,000 deliveries of the range, each percentile rounded with ``round(s, 3)``.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson

from backchannel import rollups
from backchannel.diagnostics import property_term
from backchannel.report import time_range
from backchannel.store.base import DEAD, DELIVERED, EXPIRED, IN_FLIGHT, PENDING, Store

#: the per-(property, day) partial's name and shape version (see :func:`day_partial`)
PARTIAL = "overview/1"
LAST_ERRORS = 20  # rows in the "last errors" and "refused input" tables
RESPONSE_EXCERPT = 500  # characters of the platform's answer shown per error
DAY, HOUR = 86_400, 3_600  # seconds per bucket
HOURS = DAY // HOUR


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
    #: None: every range figure is exact as read; else the oldest computation of a day's
    #: partial shown although the day changed since (``max_stale`` allowed it)
    as_of: float | None = None

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


def to_ms(seconds: float) -> int:
    """A duration in whole milliseconds, half to even: the unit of the latency figures (and
    the key of the per-day histograms)."""
    return round(seconds * 1000)


def nearest_rank(sorted_values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0 < p <= 100) by nearest rank; None for no values."""
    if not sorted_values:
        return None
    return sorted_values[_rank(p, len(sorted_values)) - 1]


def _rank(p: float, n: int) -> int:
    """The 1-based nearest rank of the p-th percentile of n values."""
    return max(1, math.ceil(p / 100 * n))


def latency_of(durations: Sequence[float]) -> Latency:
    """p50/p90/p99/max of ``durations`` (seconds, exact), each the nearest-rank value in
    whole milliseconds (shown in seconds): the row scan's way."""
    values = sorted(durations)

    def ms(value: float | None) -> float | None:
        return None if value is None else to_ms(value) / 1000

    return Latency(
        base=len(values),
        p50=ms(nearest_rank(values, 50)),
        p90=ms(nearest_rank(values, 90)),
        p99=ms(nearest_rank(values, 99)),
        max=ms(values[-1] if values else None),
    )


def latency_of_histogram(histogram: Mapping[int, int]) -> Latency:
    """The same figures from a histogram (milliseconds -> deliveries): the merge's way."""
    keys = sorted(k for k, n in histogram.items() if n > 0)
    total = sum(histogram[k] for k in keys)
    if not total:
        return Latency(0, None, None, None, None)

    def at(p: float) -> float:
        rank, seen = _rank(p, total), 0
        for key in keys:
            seen += histogram[key]
            if seen >= rank:
                return key / 1000
        raise AssertionError("unreachable: the rank is at most the total")

    return Latency(base=total, p50=at(50), p90=at(90), p99=at(99), max=keys[-1] / 1000)


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
#
# The range queries read a range of conversions_received (received_at) or outbox_delivered
# (delivered_at), each row's conversion by its key: one day's rows per partial.
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

_LATENCY = """
SELECT o.destination, o.delivered_at - c.received_at
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.status = ? AND o.delivered_at >= ? AND o.delivered_at < ?
  AND c.test_event_code IS NULL{scope}
"""

# The "now" queries read the outbox through the connections of the scope (an outbox row's
# connection is of its conversion's property: the store refuses any other), never its
# delivered rows (the bulk of the table).
_CONNECTIONS = "SELECT id, destination FROM connections{scope} ORDER BY id"
# Every row not delivered, counted on the outbox alone: the (connection_id, status, due_at)
# index (outbox_due) narrows it to those rows; with (connection_id, status, attempts) WHERE
# status <> 'delivered' (outbox_state, proposed for migration 0019+) it is an index-only
# count. ``<> 'delivered'`` is implied by the IN list, and written so SQLite sees that the
# partial index applies.
_STATE = """
SELECT o.connection_id, o.status, o.attempts, COUNT(*)
FROM outbox o
WHERE o.connection_id IN ({connections}) AND o.status IN (?, ?, ?, ?)
  AND o.status <> 'delivered'
GROUP BY 1, 2, 3
"""
# ... minus the rows of test conversions: the test conversions first (a handful, through
# conversions (property_id) WHERE test_event_code IS NOT NULL, conversions_test, proposed;
# without it a scan of the conversions), then their outbox rows by their key. On SQLite the
# unary "+" ({plus}) keeps it from reading the connections' rows through outbox_due instead
# (every row not delivered, each checked against the list); PostgreSQL chooses by itself
# (and with "+" would scan the outbox when conversions_test is missing).
_STATE_TESTS = """
SELECT o.connection_id, o.status, o.attempts, COUNT(*)
FROM outbox o
WHERE o.conversion_id IN (SELECT c.id FROM conversions c WHERE c.test_event_code IS NOT NULL)
  AND {plus}o.connection_id IN ({connections}) AND o.status IN (?, ?, ?, ?)
GROUP BY 1, 2, 3
"""
# One connection's latest errors: delivered rows never keep an error (mark_delivered clears
# it). outbox_due narrows it to the connection's rows not delivered, sorted here; with
# (connection_id, COALESCE(failed_at, due_at), id) WHERE last_error IS NOT NULL
# (outbox_errors, proposed) it is a walk of the newest index entries, stopped at the LIMIT.
_ERRORS = """
SELECT o.id, o.destination, c.event, c.event_id, o.status, o.attempts,
       COALESCE(o.failed_at, o.due_at), o.last_error, o.last_response
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.connection_id = ? AND o.status IN (?, ?, ?, ?) AND o.last_error IS NOT NULL
  AND c.test_event_code IS NULL
ORDER BY COALESCE(o.failed_at, o.due_at) DESC, o.id DESC
LIMIT ?
"""
# ingest_rejections_at (at) narrows both to the range.
_REFUSED_COUNT = "SELECT COUNT(*) FROM ingest_rejections WHERE at >= ? AND at < ?{scope}"
_REFUSED = (
    "SELECT at, source, delivery_id, reason FROM ingest_rejections"
    " WHERE at >= ? AND at < ?{scope} ORDER BY at DESC, id DESC LIMIT ?"
)


def _scoped(
    store: Store,
    query: str,
    params: Sequence[Any],
    property_id: int | None,
    column: str,
    **fmt: str,
) -> tuple[str, list[Any]]:
    """``query`` for one property (``column = ?`` added, its parameter before a trailing
    LIMIT's: see :func:`backchannel.diagnostics.property_term`) or every one."""
    values = list(params)
    if property_id is None:
        return query.format(scope="", **fmt), values
    limited = query.rstrip().endswith("LIMIT ?")
    at = len(values) - 1 if limited else len(values)
    values.insert(at, property_id)
    # a condition on the joined conversion (c.…) filters a range of the outbox
    term = property_term(store.dialect, column, leads=not column.startswith("c."))
    return query.format(scope=term, **fmt), values


def excerpt(text: str | None, limit: int = RESPONSE_EXCERPT) -> str | None:
    """At most ``limit`` characters, with an ellipsis when cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


# --- the range figures: one reading, for a whole range (the scan) or one day (a partial) -----
def _slot(index: Any, slots: int) -> int:
    # the range filter keeps every row inside; clamp anyway against float edge cases
    return min(max(int(index), 0), slots - 1)


def _received(
    store: Store, lo: int, hi: int, width: int, property_id: int | None
) -> dict[str, list[int]]:
    """Event name -> production conversions received per bucket of ``width`` in [lo, hi)."""
    slots = (hi - lo) // width
    found: dict[str, list[int]] = {}
    for event, index, n in store.read(
        *_scoped(
            store,
            _RECEIVED,
            (float(lo), float(width), float(lo), float(hi)),
            property_id,
            "property_id",
            bucket=_bucket_expr(store, "received_at"),
        )
    ):
        found.setdefault(str(event), [0] * slots)[_slot(index, slots)] += int(n)
    return found


def _test_events(store: Store, lo: int, hi: int, property_id: int | None) -> int:
    ((n,),) = store.read(
        *_scoped(store, _TEST_EVENTS, (float(lo), float(hi)), property_id, "property_id")
    )
    return int(n)


def _delivered(
    store: Store, lo: int, hi: int, width: int, property_id: int | None
) -> dict[str, dict[str, list[int]]]:
    """Destination -> event name -> production rows delivered per bucket in [lo, hi)."""
    slots = (hi - lo) // width
    found: dict[str, dict[str, list[int]]] = {}
    for destination, event, index, n in store.read(
        *_scoped(
            store,
            _DELIVERED,
            (float(lo), float(width), DELIVERED, float(lo), float(hi)),
            property_id,
            "c.property_id",
            bucket=_bucket_expr(store, "o.delivered_at"),
        )
    ):
        per_event = found.setdefault(str(destination), {})
        per_event.setdefault(str(event), [0] * slots)[_slot(index, slots)] += int(n)
    return found


def _durations(
    store: Store, lo: int, hi: int, property_id: int | None
) -> Iterable[tuple[str, float]]:
    """(destination, delivered_at - received_at) of every production row delivered in
    [lo, hi), in no particular order."""
    rows = store.read(
        *_scoped(store, _LATENCY, (DELIVERED, float(lo), float(hi)), property_id, "c.property_id")
    )
    return ((str(d), float(seconds)) for d, seconds in rows)


def day_partial(store: Store, property_id: int, low: int, high: int) -> rollups.Partial:
    """One property's range figures for one UTC day [low, high) (unix seconds), JSON-able:

    ``received``: event -> 24 hourly counts; ``test_events``: a count; ``delivered``:
    destination -> event -> 24 hourly counts; ``latency``: destination -> {milliseconds (a
    string): deliveries}. The hours are the row scan's own buckets of a one-day range (the
    same queries), so a one-day overview is the partial itself and a day bucket its sum.
    """
    histograms: dict[str, dict[str, int]] = {}
    for destination, seconds in _durations(store, low, high, property_id):
        histogram = histograms.setdefault(destination, {})
        key = str(to_ms(seconds))
        histogram[key] = histogram.get(key, 0) + 1
    return {
        "received": _received(store, low, high, HOUR, property_id),
        "test_events": _test_events(store, low, high, property_id),
        "delivered": _delivered(store, low, high, HOUR, property_id),
        "latency": histograms,
    }


@dataclass(slots=True)
class _Range:
    """The range figures before the destinations are known."""

    received: dict[str, list[int]]
    test_events: int
    delivered: dict[str, dict[str, list[int]]]
    latency: dict[str, Latency]
    as_of: float | None = None


def _scan(store: Store, start: date, end: date, property_id: int | None) -> _Range:
    """The range figures from the rows of the whole range (the reference)."""
    _, width, _ = bucket_labels(start, end)
    lo, hi = time_range(start, end)
    durations: dict[str, list[float]] = {}
    for destination, seconds in _durations(store, lo, hi, property_id):
        durations.setdefault(destination, []).append(seconds)
    return _Range(
        received=_received(store, lo, hi, width, property_id),
        test_events=_test_events(store, lo, hi, property_id),
        delivered=_delivered(store, lo, hi, width, property_id),
        latency={d: latency_of(values) for d, values in durations.items()},
    )


def merge(parts: Iterable[rollups.DayPartial], start: date, end: date) -> _Range:
    """The range figures from the day partials of [start, end] (any properties): hours for a
    one-day range, else each day's 24 hours summed into its day."""
    one_day = start == end
    slots = HOURS if one_day else (end - start).days + 1
    received: dict[str, list[int]] = {}
    delivered: dict[str, dict[str, list[int]]] = {}
    histograms: dict[str, dict[int, int]] = {}
    tests = 0

    def add(into: list[int], hours: list[int], day: int) -> None:
        if one_day:
            for hour, n in enumerate(hours):
                into[hour] += n
        else:
            into[day] += sum(hours)

    for part in parts:
        day = (part.day - start).days
        data = part.data
        for event, hours in data["received"].items():
            add(received.setdefault(event, [0] * slots), hours, day)
        tests += data["test_events"]
        for destination, per_event in data["delivered"].items():
            mine = delivered.setdefault(destination, {})
            for event, hours in per_event.items():
                add(mine.setdefault(event, [0] * slots), hours, day)
        for destination, histogram in data["latency"].items():
            total = histograms.setdefault(destination, {})
            for ms, n in histogram.items():
                total[int(ms)] = total.get(int(ms), 0) + n
    return _Range(
        received=received,
        test_events=tests,
        delivered=delivered,
        latency={d: latency_of_histogram(h) for d, h in histograms.items()},
    )


# --- the state of the outbox now, the last errors, the refused input --------------------------
def _connections(store: Store, property_id: int | None) -> list[tuple[int, str]]:
    """(id, destination) of the connections of one property, or of every one."""
    if property_id is None:
        rows = store.read(_CONNECTIONS.format(scope=""))
    else:
        rows = store.read(_CONNECTIONS.format(scope=" WHERE property_id = ?"), (property_id,))
    return [(int(i), str(d)) for i, d in rows]


def _state(store: Store, connections: Sequence[tuple[int, str]]) -> list[tuple[str, str, int, int]]:
    """(destination, status, tried, rows) of the production rows of ``connections`` not
    delivered, now: every such row, minus those of test conversions."""
    if not connections:
        return []
    destination = dict(connections)
    ids = ",".join(str(i) for i in destination)  # integers read from the store
    states = (PENDING, IN_FLIGHT, DEAD, EXPIRED)
    counts: dict[tuple[str, str, int], int] = {}
    for query, sign in ((_STATE, 1), (_STATE_TESTS, -1)):
        plus = "+" if store.dialect == "sqlite" else ""
        for connection_id, status, attempts, n in store.read(
            query.format(connections=ids, plus=plus), states
        ):  # grouped by attempts itself: the index's order, no sort
            key = (destination[int(connection_id)], str(status), int(int(attempts) > 0))
            counts[key] = counts.get(key, 0) + sign * int(n)
    return [(d, s, t, n) for (d, s, t), n in sorted(counts.items()) if n]


def _errors(
    store: Store, connections: Sequence[tuple[int, str]], destinations: Sequence[str]
) -> list[ErrorRow]:
    """The latest :data:`LAST_ERRORS` production rows with an error, newest failure first:
    the latest of each connection (an index walk each), then the latest of those."""
    errors: list[ErrorRow] = []
    for connection_id, destination in connections:
        if destination not in destinations:
            continue
        for row in store.read(
            _ERRORS, (connection_id, PENDING, IN_FLIGHT, DEAD, EXPIRED, LAST_ERRORS)
        ):
            oid, name, event, event_id, status, attempts, due_at, error, response = row
            errors.append(
                ErrorRow(
                    int(oid),
                    name,
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
    return errors[:LAST_ERRORS]


def overview(
    store: Store,
    start: date,
    end: date,
    destinations: Sequence[str],
    property_id: int | None = None,
    *,
    scan: bool = False,
    max_stale: float = 0.0,
) -> Overview:
    """Every figure of the overview page for the inclusive UTC day range ``start..end``, of
    one property (None: every property's, the host's view).

    ``destinations`` are always listed (with zeros); a destination found in the outbox but
    no longer configured is listed after them (by name). The range figures are merged from
    the day partials (``max_stale``: see :func:`backchannel.rollups.partials`), or with
    ``scan=True`` read from the rows of the whole range (the reference the tests compare).
    """
    p = property_id
    kind, _, labels = bucket_labels(start, end)
    if scan:
        figures = _scan(store, start, end, p)
    else:
        parts = rollups.partials(store, PARTIAL, day_partial, start, end, p, max_stale=max_stale)
        figures = merge(parts, start, end)
        figures.as_of = min((part.computed_at for part in parts if part.stale), default=None)
    connections = _connections(store, p)
    state = _state(store, connections)

    listed = list(destinations)
    found = set(figures.delivered) | {destination for destination, _, _, _ in state}
    result = Overview(start, end, kind, labels, listed + sorted(found - set(listed)))
    result.received = dict(sorted(figures.received.items()))
    result.test_events = figures.test_events
    result.as_of = figures.as_of
    result.delivered = {
        d: dict(sorted(figures.delivered.get(d, {}).items())) for d in result.destinations
    }
    nothing = Latency(0, None, None, None, None)
    result.latency = {d: figures.latency.get(d, nothing) for d in result.destinations}

    for counts in (result.queue, result.retrying, result.dead, result.expired):
        counts.update(dict.fromkeys(result.destinations, 0))
    for destination, status, tried, n in state:
        if status in (PENDING, IN_FLIGHT):
            result.queue[destination] += n
        if status == PENDING and tried:
            result.retrying[destination] += n
        if status == DEAD:
            result.dead[destination] += n
        if status == EXPIRED:
            result.expired[destination] += n

    result.last_errors = _errors(store, connections, result.destinations)
    lo, hi = time_range(start, end)
    ((refused,),) = store.read(
        *_scoped(store, _REFUSED_COUNT, (float(lo), float(hi)), p, "property_id")
    )
    result.refused = int(refused)
    for at, source, delivery_id, reason in store.read(
        *_scoped(store, _REFUSED, (float(lo), float(hi), LAST_ERRORS), p, "property_id")
    ):
        error, summary = summarize_refusal(reason)
        result.last_refused.append(RefusedRow(float(at), source, delivery_id, error, summary))
    return result


rollups.register(PARTIAL, day_partial)
