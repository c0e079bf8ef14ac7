"""The dashboard's range figures merged from day partials equal the row scan's, exactly.

Each report (:func:`overview`, :func:`identifiers_report`, :func:`dedup_report`) answers from
one partial per (property, UTC day) through :func:`backchannel.rollups.partials`, or with
``scan=True`` from the rows of the whole range (the reference). Here both answer over the
awkward stores of :mod:`dashboard.rollup_seed` — several properties, test events, every
outbox state, rows at midnight, empty days — for every day range of a week (one-day ranges
too) and for each property and all of them (``property_id=None``), on SQLite and PostgreSQL.

The partials are served as the store's cache will serve them: computed once per (report,
property, day), kept as JSON and read back (``orjson`` round trip), so the merges are tested
on what a cache returns; one test runs the live ``partials`` untouched too.
"""

from __future__ import annotations

import itertools
import random
from datetime import date, timedelta
from typing import Any

import orjson
import pytest

from backchannel import destinations as registry
from backchannel import rollups
from backchannel.diagnostics import dedup
from backchannel.diagnostics.dedup import VERDICTS, dedup_report
from backchannel.diagnostics.identifiers import identifiers_report
from backchannel.diagnostics.overview import Latency, latency_of, latency_of_histogram, overview
from backchannel.store.base import Store
from dashboard.rollup_seed import CONFIGURED, DAYS, Seeded, midnight, seed

#: every inclusive range of the seeded week (28), one-day ranges first
RANGES = sorted(itertools.combinations_with_replacement(DAYS, 2), key=lambda r: (r[1] - r[0], r))
#: the dedup table's filters: none, a verdict anywhere, a verdict at one destination (one the
#: seed never routes to: GA4, covered only because it is asked for)
FILTERS: list[tuple[str | None, str | None]] = [
    (None, None),
    ("neither", None),
    ("mismatch", None),
    ("both", None),
    ("server_only", "tiktok"),
    ("browser_only", "meta"),
    ("neither", "snapchat"),
    ("neither", "ga4"),
]


@pytest.fixture
def cached(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, date]]:
    """``rollups.partials`` with a cache: each (name, property, day) computed once, kept as
    JSON bytes and read back. Returns the computations made (to check the cache is used)."""
    live = rollups.partials
    kept: dict[tuple[str, int, date], bytes] = {}
    computed: list[tuple[str, int, date]] = []

    def partials(
        store: Store,
        name: str,
        compute: rollups.Compute,
        start: date,
        end: date,
        property_id: int | None,
        **options: Any,
    ) -> list[rollups.DayPartial]:
        out = []
        for part in live(store, name, _counted(compute, name, computed, kept), start, end,
                         property_id, **options):  # fmt: skip
            data = orjson.loads(kept[(name, part.property_id, part.day)])
            out.append(rollups.DayPartial(part.property_id, part.day, data, part.computed_at))
        return out

    monkeypatch.setattr(rollups, "partials", partials)
    return computed


def _counted(
    compute: rollups.Compute,
    name: str,
    computed: list[tuple[str, int, date]],
    kept: dict[tuple[str, int, date], bytes],
) -> rollups.Compute:
    """``compute`` run only for a (property, day) not kept yet; its answer kept as JSON."""

    def run(store: Store, property_id: int, low: int, high: int) -> rollups.Partial:
        key = (name, property_id, date(1970, 1, 1) + timedelta(days=low // rollups.DAY))
        if key not in kept:
            computed.append(key)
            kept[key] = orjson.dumps(compute(store, property_id, low, high))
        return {}

    return run


def scopes(seeded: Seeded) -> list[int | None]:
    return [None, *seeded.properties]


def check_overview(store: Store, seeded: Seeded, ranges: list[tuple[date, date]]) -> None:
    for (start, end), p in itertools.product(ranges, scopes(seeded)):
        merged = overview(store, start, end, CONFIGURED, p)
        scanned = overview(store, start, end, CONFIGURED, p, scan=True)
        assert merged == scanned, (start, end, p)


def check_identifiers(store: Store, seeded: Seeded, ranges: list[tuple[date, date]]) -> None:
    for (start, end), p in itertools.product(ranges, scopes(seeded)):
        kw: dict[str, Any] = {"destinations": registry.NAMES, "property_id": p}
        merged = identifiers_report(store, start, end, **kw).to_dict()
        scanned = identifiers_report(store, start, end, scan=True, **kw).to_dict()
        assert merged == scanned, (start, end, p)


def check_dedup(
    store: Store, seeded: Seeded, ranges: list[tuple[date, date]], pages: tuple[int, ...]
) -> None:
    for (start, end), p, (status, destination), page in itertools.product(
        ranges, scopes(seeded), FILTERS, pages
    ):
        kw: dict[str, Any] = {
            "status": status,
            "destination": destination,
            "page": page,
            "property_id": p,
        }
        merged = dedup_report(store, start, end, **kw)
        scanned = dedup_report(store, start, end, scan=True, **kw)
        assert merged.to_dict() == scanned.to_dict(), (start, end, p, status, destination, page)
        assert [r.conversion_id for r in merged.rows] == [r.conversion_id for r in scanned.rows]


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 orders read in batches of 2: every page walk crosses batches and days."""
    monkeypatch.setattr(dedup, "PAGE_SIZE", 3)
    monkeypatch.setattr(dedup, "BATCH", 2)
    monkeypatch.setattr(dedup, "BATCH_MAX", 4)


class TestSeededStore:
    def test_the_seed_is_awkward(self, store: Store) -> None:
        """Not vacuous: the seed holds what the equality below is about."""
        seed(store, random.Random(1))
        statuses = dict(store.read("SELECT status, COUNT(*) FROM outbox GROUP BY status"))
        assert set(statuses) == {"delivered", "pending", "in_flight", "dead", "expired"}
        retrying = store.read("SELECT COUNT(*) FROM outbox WHERE status = 'pending'"
                              " AND attempts > 0")  # fmt: skip
        assert retrying[0][0] > 0
        at_midnight = store.read(
            "SELECT COUNT(*) FROM conversions WHERE received_at = ? OR received_at = ?",
            (midnight(DAYS[2]), midnight(DAYS[5])),
        )
        assert at_midnight[0][0] > 0
        delivered_at_midnight = store.read(
            "SELECT COUNT(*) FROM outbox WHERE status = 'delivered' AND delivered_at IN (?, ?, ?)",
            (midnight(DAYS[2]), midnight(DAYS[3]), midnight(DAYS[4])),
        )
        assert delivered_at_midnight[0][0] > 0
        tests = store.read("SELECT COUNT(*) FROM conversions WHERE test_event_code IS NOT NULL")
        assert tests[0][0] > 0
        received_day2 = store.read(
            "SELECT COUNT(*) FROM conversions WHERE received_at >= ? AND received_at < ?",
            (midnight(DAYS[3]), midnight(DAYS[4])),
        )
        assert received_day2[0][0] == 0  # day 2 receives nothing (but has deliveries)
        report = dedup_report(store, DAYS[0], DAYS[-1], scan=True)
        assert all(report.counts["tiktok"][v] for v in VERDICTS)  # every verdict occurs

    def test_overview_equals_the_scan(self, store: Store, cached: list[Any]) -> None:
        """Every range of the week, each property and all: the merged overview is the
        scan's, figure for figure (buckets, latency, destinations found)."""
        seeded = seed(store, random.Random(1))
        check_overview(store, seeded, RANGES)
        # the cache was used: each (property, day) computed once for all 28 ranges
        assert len(cached) == len(set(cached)) == len(DAYS) * len(seeded.properties)
        week = overview(store, DAYS[0], DAYS[-1], CONFIGURED)
        assert week.destinations == ["tiktok", "meta", "snapchat"]
        assert week.received_total > 0
        assert week.latency["tiktok"].base > 0

    def test_identifiers_equal_the_scan(self, store: Store, cached: list[Any]) -> None:
        """Every range, each property and all, every destination's estimate."""
        seeded = seed(store, random.Random(1))
        check_identifiers(store, seeded, RANGES)

    def test_dedup_equals_the_scan(
        self, store: Store, cached: list[Any], small_pages: None
    ) -> None:
        """Summary, matching count and every page of each filter: merged and batched equal
        the read of every order at once."""
        seeded = seed(store, random.Random(1))
        ranges = [r for r in RANGES if r[0] == r[1]] + [
            (DAYS[0], DAYS[-1]),
            (DAYS[1], DAYS[3]),
            (DAYS[2], DAYS[5]),
        ]
        check_dedup(store, seeded, ranges, pages=(1, 2, 5))

    def test_live_partials_equal_the_scan(self, store: Store) -> None:
        """Without the cache (``partials`` as it is): the same answers."""
        seeded = seed(store, random.Random(2))
        ranges = [(DAYS[0], DAYS[-1]), (DAYS[2], DAYS[2])]
        check_overview(store, seeded, ranges)
        check_identifiers(store, seeded, ranges)
        check_dedup(store, seeded, ranges, pages=(1,))


class TestRandomStores:
    @pytest.mark.parametrize("seed_value", [11, 12, 13])
    def test_random_store(
        self, store: Store, cached: list[Any], small_pages: None, seed_value: int
    ) -> None:
        """Small random stores, random ranges: every report merged equals its scan."""
        rng = random.Random(seed_value)
        seeded = seed(store, rng, n=rng.randint(20, 60))
        ranges = rng.sample(RANGES, 6)
        check_overview(store, seeded, ranges)
        check_identifiers(store, seeded, ranges)
        check_dedup(store, seeded, ranges[:3], pages=(1, 2))


class TestLatencyHistogram:
    def test_histogram_percentiles_equal_the_sorted_values(self) -> None:
        """Nearest rank over a millisecond histogram is the rounding of nearest rank over the
        exact values (rounding is monotone), including values half a millisecond apart."""
        rng = random.Random(5)
        for _ in range(200):
            values = [rng.choice((0.0005, 0.0015, 0.0025, 1.0)) + rng.random() * rng.choice(
                (0, 0.001, 1, 100)) for _ in range(rng.randint(1, 60))]  # fmt: skip
            histogram: dict[int, int] = {}
            for v in values:
                ms = round(v * 1000)
                histogram[ms] = histogram.get(ms, 0) + 1
            assert latency_of_histogram(histogram) == latency_of(values)

    def test_known_figures(self) -> None:
        """Hand-computed: 1, 2, 2, 3, 250 ms and 4 s: p50 rank 3, p90 rank 6, p99 rank 6."""
        histogram = {1: 1, 2: 2, 3: 1, 250: 1, 4000: 1}
        assert latency_of_histogram(histogram) == Latency(6, 0.002, 4.0, 4.0, 4.0)
        assert latency_of_histogram({}) == Latency(0, None, None, None, None)
