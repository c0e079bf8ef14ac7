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
from backchannel.store.base import BrowserEvent, Dead, SessionUpdate, Store
from backchannel.web.dashboard.overview import render_overview
from dashboard.rollup_seed import CONFIGURED, DAYS, Seeded, midnight, seed
from store.helpers import conversion

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
    """``rollups.partials`` that computes each (report, property, day) once and then hands
    back the JSON it kept, read back with orjson (what the store's cache does with a partial
    whose day did not change): every merge below runs on round-tripped partials. Returns the
    computations made, to check the cache was used."""
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
        day = start
        while day <= end:
            for p in rollups.scope(store, property_id):
                key = (name, p, day)
                if key not in kept:
                    computed.append(key)
                    [part] = live(store, name, compute, day, day, p, **options)
                    kept[key] = orjson.dumps(part.data)
                out.append(rollups.DayPartial(p, day, orjson.loads(kept[key]), 0.0))
            day += timedelta(days=1)
        return out

    monkeypatch.setattr(rollups, "partials", partials)
    return computed


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


class TestKeptPartials:
    """The store's own cache (migration 0019): partials kept across reads stay equal to the
    scan after writes of every kind, and a page allowed stale partials says from when."""

    def test_kept_partials_follow_writes(self, store: Store) -> None:
        seeded = seed(store, random.Random(3))
        week = [(DAYS[0], DAYS[-1]), (DAYS[1], DAYS[1]), (DAYS[4], DAYS[4])]
        check_overview(store, seeded, week)  # every partial computed and kept
        check_identifiers(store, seeded, week)
        check_dedup(store, seeded, week, pages=(1,))
        kept = store.read("SELECT name, property_id, day, computed_at FROM rollups")
        assert {r[0] for r in kept} == {"overview/1", "identifiers/1", "dedup/1"}
        # read again with nothing written: every answer from the kept partials
        check_overview(store, seeded, week)
        assert sorted(store.read("SELECT name, property_id, day, computed_at FROM rollups")) == (
            sorted(kept)
        )
        _write_more(store, seeded)
        check_overview(store, seeded, week)
        check_identifiers(store, seeded, week)
        check_dedup(store, seeded, week, pages=(1, 2))

    def test_a_page_may_show_a_kept_partial_and_says_so(self, store: Store) -> None:
        """max_stale: a day changed since its partial was computed is answered from it (the
        report's as_of says when it was computed); exact reads (0) recompute it."""
        at = midnight(DAYS[1]) + 3600
        store.insert_conversions([conversion("a", payload=b'{"user": {}}')], at)
        first = overview(store, DAYS[1], DAYS[1], CONFIGURED)
        assert (first.received_total, first.as_of) == (1, None)
        store.insert_conversions([conversion("b", payload=b'{"user": {}}')], at + 60)
        stale = overview(store, DAYS[1], DAYS[1], CONFIGURED, max_stale=3600)
        assert stale.received_total == 1
        assert stale.as_of is not None
        assert "Some figures are from" in render_overview(stale)
        exact = overview(store, DAYS[1], DAYS[1], CONFIGURED)
        assert (exact.received_total, exact.as_of) == (2, None)
        assert "Some figures are from" not in render_overview(exact)
        for report in (
            identifiers_report(store, DAYS[1], DAYS[1], max_stale=3600),
            dedup_report(store, DAYS[1], DAYS[1], max_stale=3600),
        ):
            assert report.as_of is None  # their first read: computed now, not stale


def _write_more(store: Store, seeded: Seeded) -> None:
    """Writes of every kind the reports read, on days whose partials are kept."""
    default, eu, _ = seeded.properties
    d1, d3 = midnight(DAYS[2]), midnight(DAYS[4])  # day 1 and day 3 of the seed
    items = [
        conversion("late-1", payload=b'{"user": {"email": ["x"]}}', session_id="late-s"),
        conversion("late-2", payload=b'{"user": {}, "opt_out": true}', destinations=()),
        conversion("late-3", test_event_code="T2"),
        conversion("late-4", event="Lead", property_id=eu, destinations=("tiktok",)),
    ]
    assert store.insert_conversions(items[:2], d1) == [True, True]  # at midnight exactly
    assert store.insert_conversions(items[2:], d3 + 5) == [True, True]
    # rows of every connection change state: delivered on day 3 (received earlier), dead,
    # expired, retried
    for prop in (default, eu):
        for c in store.list_connections(prop):
            assert c.id is not None
            claimed = store.claim(c.id, 10_000, d3 + 86_400 * 30, 60)
            ids = [x.outbox_id for x in claimed]
            store.mark_delivered(ids[0::4], d3 + 30, "ref")
            store.mark_dead([Dead(i, b"{}") for i in ids[1::4]], "late", None, None)
            store.mark_expired(ids[2::4], "late")
            store.mark_retry(ids[3::4], d3 + 90_000, "HTTP 500", None, failed_at=d3 + 40)
    # the Pixel: a call with the late order's own id, and another id in its session
    store.record_collect(
        [SessionUpdate("late-s", d1 - 60, landing=True)],
        [
            BrowserEvent("late-s", "CompletePayment", "CompletePayment-late-1", d1 - 5),
            BrowserEvent("late-s", "CompletePayment", "someone-else", d1 - 4),
        ],
    )


class TestNowFigures:
    def test_outbox_now_and_errors_equal_a_plain_reading(self, store: Store) -> None:
        """Queue, retrying, dead, expired, the last errors and the refused input of each
        property and of all, against every outbox row read plainly (joined to its conversion,
        the property taken from the conversion) and counted here."""
        seeded = seed(store, random.Random(4))
        for p in scopes(seeded):
            rows = [
                r[1:]
                for r in store.read(
                    "SELECT c.property_id, o.id, o.destination, o.status, o.attempts,"
                    " o.last_error, COALESCE(o.failed_at, o.due_at) FROM outbox o"
                    " JOIN conversions c ON c.id = o.conversion_id"
                    " WHERE c.test_event_code IS NULL"
                )
                if p is None or r[0] == p
            ]
            names = sorted({str(r[1]) for r in rows} - set(CONFIGURED))
            expected: dict[str, dict[str, int]] = {
                k: dict.fromkeys([*CONFIGURED, *names], 0)
                for k in ("queue", "retrying", "dead", "expired")
            }
            for _, destination, status, attempts, _, _ in rows:
                if status in ("pending", "in_flight"):
                    expected["queue"][destination] += 1
                if status == "pending" and attempts > 0:
                    expected["retrying"][destination] += 1
                if status in ("dead", "expired"):
                    expected[status][destination] += 1
            errors = sorted(
                ((float(r[5]), int(r[0])) for r in rows if r[4] is not None),
                reverse=True,
            )[:20]
            data = overview(store, DAYS[0], DAYS[-1], CONFIGURED, p)
            got = {
                "queue": data.queue,
                "retrying": data.retrying,
                "dead": data.dead,
                "expired": data.expired,
            }
            assert got == expected, p
            assert [(e.due_at, e.outbox_id) for e in data.last_errors] == errors, p
            lo, hi = midnight(DAYS[0]), midnight(DAYS[-1]) + 86_400
            refused = [
                r[1:]
                for r in store.read(
                    "SELECT property_id, at FROM ingest_rejections WHERE at >= ? AND at < ?"
                    " ORDER BY at DESC, id DESC",
                    (lo, hi),
                )
                if p is None or r[0] == p
            ]
            assert data.refused == len(refused), p
            assert [r.at for r in data.last_refused] == [float(r[0]) for r in refused[:20]]
        everything = overview(store, DAYS[0], DAYS[-1], CONFIGURED)
        assert sum(everything.dead.values()) > 0
        assert sum(everything.retrying.values()) > 0
        assert everything.last_errors
