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

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from backchannel.store.base import Store

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
    """
    del name, max_stale  # the cache lands with the store's side (migration 0019)
    clock = time.time() if now is None else now
    out: list[DayPartial] = []
    day = start
    while day <= end:
        low, high = day_bounds(day)
        for p in scope(store, property_id):
            out.append(DayPartial(p, day, compute(store, p, low, high), clock))
        day += timedelta(days=1)
    return out
