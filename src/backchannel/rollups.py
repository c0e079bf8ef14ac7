"""Daily rollups: a report's figures of one property and one UTC day, computed once and kept.

Why: the dashboard and the gap report read every row of their range. At 1,000,000 orders a
month that is seconds per page; a month is 30 days, and only the days whose rows changed need
reading again. A report declares a *partial* — a JSON-able summary of one (property, day)
computed from the rows with the same code the row scan uses — and how partials merge; this
module hands it one partial per (property, day) of the range, from the store's cache when the
day has not changed since it was computed, else computed now (and kept).

What "changed" means is decided by the store, not guessed: every write that can change a
figure of a day (a conversion received, an outbox row's status, a ledger order, a Pixel mirror
row, a landing session, retention) records a mark for (property, day) in the same transaction
(``rollup_marks``). Taking the marks bumps the day's version; a cached partial is valid only
for the version it was computed at. So a cached answer equals the row scan's answer, by
construction, and a test checks that it does on both backends.

``max_stale``: the dashboard may show a day's partial computed up to that many seconds ago
even if the day changed since (the page says when its figures are from); the CLI, the JSON
downloads and the tests ask for exact answers (0). The delivery worker keeps the partials
that were read recently fresh in the background (:func:`refresh`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from backchannel.store.base import RollupRow, Store

log = logging.getLogger(__name__)

#: a partial: a JSON-able summary of one (property, day) (dict keys are strings)
Partial = dict[str, Any]
#: compute(store, property_id, low, high): the partial of one property for [low, high), the
#: unix seconds of one UTC day
Compute = Callable[[Store, int, int, int], Partial]
DAY = 86_400


@dataclass(frozen=True, slots=True)
class DayPartial:
    """One (property, day)'s partial and when it was computed (``stale``: the day changed
    since, and ``max_stale`` allowed it)."""

    property_id: int
    day: date
    data: Partial
    computed_at: float
    stale: bool = False


def day_number(day: date) -> int:
    """Days since 1970-01-01 (the stores' key for a UTC day)."""
    return (day - date(1970, 1, 1)).days


def day_of(unix: float) -> int:
    """The UTC day number of a unix time (the key the stores mark)."""
    return int(unix // DAY)


def day_bounds(day: date) -> tuple[int, int]:
    """[midnight, next midnight) of a UTC day in unix seconds."""
    low = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return low, low + DAY


def scope(store: Store, property_id: int | None) -> list[int]:
    """The properties a report covers: one, or every one (the host's view)."""
    if property_id is not None:
        return [property_id]
    return sorted(p.id for p in store.properties())


#: report name -> its compute: filled when a report module is imported (its own
#: ``register`` call) or first asks for partials; the background refresh recomputes only the
#: reports it knows
_REGISTRY: dict[str, Compute] = {}
#: report name -> the properties whose partials the start-up warm-up computes (default: all)
_WARM_FOR: dict[str, Callable[[Store], set[int]]] = {}
#: seconds between background refreshes (serve's primary process)
REFRESH_EVERY = 30.0
#: seconds a dashboard page may show a day's partial computed before the day's latest change
#: (the page says when its figures are from); the refresh keeps them well within it
DASHBOARD_STALE = 120.0
#: days back the background refresh looks at (older days change rarely; a read recomputes them)
REFRESH_DAYS = 62
#: days back the start-up warm-up computes what is not kept (the dashboard's longest preset,
#: 30 days, and today)
WARM_DAYS = 31
#: a property's day with more conversions than this is not warmed at start-up: computing it
#: holds its rows (~1.2-1.8 KB each for the dedup and identifiers partials, measured at
#: 100,000: 125 and 175 MB; gigabytes for a million-row import or backlog) in the serving
#: process while it delivers; its page computes it when asked. 50,000 covers a shop of a
#: million orders a month (~33,000 a day) at ~100 MB
WARM_MAX_ROWS = 50_000
#: a kept partial is recomputed in the background at most every COST_SHARE times what it took
#: to compute (so the refresh takes at most ~1/COST_SHARE of a core), and a dashboard page may
#: show it up to that much older than its max_stale (saying from when) instead of computing
#: it on the request: a minute-long partial of a huge day is not recomputed every 30 s
COST_SHARE = 10.0


def register(
    name: str, compute: Compute, *, warm_for: Callable[[Store], set[int]] | None = None
) -> None:
    """Declare report ``name``'s compute so the background refresh can keep it fresh.

    ``warm_for``: the properties whose partials the start-up warm-up computes (e.g. a
    destination's gap report only where the destination is connected); all by default."""
    _REGISTRY[name] = compute
    if warm_for is not None:
        _WARM_FOR[name] = warm_for


def partials(
    store: Store,
    name: str,
    compute: Compute,
    start: date,
    end: date,
    property_id: int | None,
    *,
    max_stale: float = 0.0,
    now: float | None = None,
) -> list[DayPartial]:
    """One partial per (property, UTC day) of [start, end] (inclusive), oldest day first.

    ``name`` names the report and the version of its partial's shape ("gap.tiktok/1"): a
    change of shape takes a new name, so no partial of the old shape is ever merged.
    ``max_stale`` > 0: a day that changed since its partial was computed may still be
    answered from it when it was computed at most that many seconds ago, plus
    :data:`COST_SHARE` times what computing it took (``stale`` says so).
    """
    register(name, compute)
    clock = time.time() if now is None else now
    wanted = scope(store, property_id)
    low, high = day_number(start), day_number(end)
    store.take_rollup_marks()  # first: every change committed so far has bumped its day
    versions, cached = _state(store, name, low, high, property_id)
    out: list[DayPartial] = []
    fresh: list[RollupRow] = []
    for number in range(low, high + 1):
        day = start + timedelta(days=number - low)
        for p in wanted:
            version = versions.get((p, number), 0)
            hit = cached.get((p, number))
            if hit is not None and hit[0] == version:
                out.append(DayPartial(p, day, orjson.loads(hit[2]), hit[1]))
                continue
            if (
                hit is not None
                and max_stale > 0
                and clock - hit[1] <= max_stale + COST_SHARE * hit[3]
            ):
                out.append(DayPartial(p, day, orjson.loads(hit[2]), hit[1], stale=True))
                continue
            data, row = _compute(store, compute, p, number, version)
            fresh.append(row)
            out.append(DayPartial(p, day, data, row.computed_at))
    store.put_rollups(name, fresh)
    return out


def _compute(
    store: Store, compute: Compute, property_id: int, number: int, version: int
) -> tuple[Partial, RollupRow]:
    """Compute one (property, day number)'s partial now: it, and the row that keeps it (with
    when it was computed and how long that took)."""
    day = date(1970, 1, 1) + timedelta(days=number)
    began = time.time()
    data = compute(store, property_id, *day_bounds(day))
    took = max(0.0, time.time() - began)
    return data, RollupRow(property_id, number, version, began, orjson.dumps(data), took)


def _state(
    store: Store, name: str, low: int, high: int, property_id: int | None
) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], tuple[int, float, bytes, float]]]:
    """The days' versions and report ``name``'s cached partials of [low, high] (day numbers).

    Read in this order: a partial read after its day's version can only be older than it
    looks (recomputed once more), never newer."""
    only, extra = ("", ()) if property_id is None else (" AND property_id = ?", (property_id,))
    versions = {
        (int(p), int(d)): int(v)
        for p, d, v in store.read(
            "SELECT property_id, day, version FROM rollup_days"  # noqa: S608 - constant
            f" WHERE day >= ? AND day <= ?{only}",
            (low, high, *extra),
        )
    }
    cached = {
        (int(p), int(d)): (int(v), float(t), bytes(b), float(s))
        for p, d, v, t, b, s in store.read(
            "SELECT property_id, day, version, computed_at, data, seconds"  # noqa: S608
            f" FROM rollups WHERE name = ? AND day >= ? AND day <= ?{only}",
            (name, low, high, *extra),
        )
    }
    return versions, cached


def refresh(store: Store, *, now: float | None = None, days: int = REFRESH_DAYS) -> int:
    """Recompute every kept partial (of the reports this process knows) whose day changed
    since, for the last ``days`` days: what the dashboard will ask for next is ready, and its
    pages answer from the cache. A partial computed less than :data:`COST_SHARE` times its
    cost ago waits for a later run. Returns how many partials were recomputed."""
    clock = time.time() if now is None else now
    store.take_rollup_marks()
    since = day_of(clock) - days
    outdated = store.read(
        "SELECT r.name, r.property_id, r.day, d.version, r.computed_at, r.seconds FROM rollups r"
        " JOIN rollup_days d ON d.property_id = r.property_id AND d.day = r.day"
        " WHERE d.version > r.version AND r.day >= ? ORDER BY r.day DESC",
        (since,),
    )
    done = 0
    by_name: dict[str, list[RollupRow]] = {}
    for name, p, number, version, computed_at, seconds in outdated:
        compute = _REGISTRY.get(str(name))
        if compute is None or clock - float(computed_at) < COST_SHARE * float(seconds):
            continue
        _, row = _compute(store, compute, int(p), int(number), int(version))
        by_name.setdefault(str(name), []).append(row)
        done += 1
    for name, rows in by_name.items():
        store.put_rollups(name, rows)
    return done


def warm_steps(
    store: Store, *, now: float | None = None, days: int = WARM_DAYS
) -> list[tuple[str, int, date]]:
    """What the start-up warm-up computes: (report, property, day) of the last ``days`` days
    that has no kept partial at all, newest day first, from the first day with any row; not
    a property's day of more than :data:`WARM_MAX_ROWS` conversions.

    Why: after an upgrade (or on a store filled by an import) nothing is kept, and the first
    page view would compute every day of its range — 10 to 60 s at a million orders a month.
    Computing them in the background first makes that view read kept partials. A day already
    kept, even at an old version, is :func:`refresh`'s business, not this."""
    clock = time.time() if now is None else now
    today = day_of(clock)
    first = [
        row[0]
        for row in store.read(
            "SELECT MIN(received_at) FROM conversions UNION ALL SELECT MIN(order_time) FROM orders"
        )
        if row[0] is not None
    ]
    if not first:
        return []
    low = max(today - days + 1, day_of(float(min(first))))
    kept = {
        (str(name), int(p), int(d))
        for name, p, d in store.read(
            "SELECT name, property_id, day FROM rollups WHERE day >= ? AND day <= ?", (low, today)
        )
    }
    properties = scope(store, None)
    crowded: set[tuple[int, int]] = set()
    for number in range(low, today + 1):
        begin = number * DAY
        crowded.update(
            (int(p), number)
            for p, n in store.read(
                "SELECT property_id, COUNT(*) FROM conversions"
                " WHERE received_at >= ? AND received_at < ? GROUP BY property_id",
                (begin, begin + DAY),
            )
            if int(n) > WARM_MAX_ROWS
        )
    names = sorted(_REGISTRY)
    chosen = {
        name: [p for p in properties if name not in _WARM_FOR or p in _WARM_FOR[name](store)]
        for name in names
    }
    return [
        (name, p, date(1970, 1, 1) + timedelta(days=number))
        for number in range(today, low - 1, -1)
        for name in names
        for p in chosen[name]
        if (name, p, number) not in kept and (p, number) not in crowded
    ]


def warm_one(store: Store, name: str, property_id: int, day: date) -> None:
    """Compute and keep report ``name``'s partial of one (property, day) if it is not kept."""
    compute = _REGISTRY.get(name)
    if compute is not None:
        partials(store, name, compute, day, day, property_id)


async def warm(
    store: Store, call: Callable[..., Awaitable[Any]], *, now: float | None = None
) -> int:
    """The start-up warm-up (:func:`warm_steps`), one (report, property, day) per ``call`` so
    that ingest's and delivery's writes interleave with it, each followed by a pause of
    (:data:`COST_SHARE` - 1) times what it took: like the refresh, it takes at most
    ~1/COST_SHARE of a core from a server that may be draining a backlog as it starts.
    Returns how many it computed."""
    steps: list[tuple[str, int, date]] = await call(functools.partial(warm_steps, now=now), store)
    began = time.monotonic()
    for name, p, day in steps:
        step = time.monotonic()
        try:
            await call(warm_one, store, name, p, day)
        except Exception:  # one report's failure must not leave the others cold
            log.exception("rollup warm-up of %s for %s failed; its page computes it", name, day)
        await asyncio.sleep((COST_SHARE - 1) * (time.monotonic() - step))
    if steps:
        log.info("rollups warmed: %d partials in %.1f s", len(steps), time.monotonic() - began)
    return len(steps)


async def run_periodically(
    store: Store,
    call: Callable[..., Awaitable[Any]],
    *,
    every: float = REFRESH_EVERY,
) -> None:
    """``serve``'s background work on the partials (the primary process): the warm-up once
    (:func:`warm`), then :func:`refresh` every ``every`` seconds, on a thread (``call``).
    Never raises; cancel to stop."""
    try:
        await warm(store, call)
    except Exception:
        log.exception("rollup warm-up failed; pages compute what they read")
    while True:
        await asyncio.sleep(every)
        try:
            await call(refresh, store)
        except Exception:
            log.exception("rollup refresh failed; retrying at the next run")
