"""The gap report answered from per-day partials equals the row scan, figure for figure
(both backends).

``from_store`` merges one partial per (property, UTC day of ``order_time``)
(:func:`backchannel.report.day_partial`, through :func:`backchannel.rollups.partials`);
``from_store(..., scan=True)`` reads every row of the range at once, as the report always
did. They must give the same :class:`GapReport` (and the same JSON, key order included) for
every destination, one property or every one, one day or thirty, whatever the switch-on date.

The store is seeded at random (a fixed seed per case) with what makes a per-day sum go wrong:
three properties reusing the same event_ids, test events, two or three ledger rows of one
event_id on different days (and on one day), ledger rows without a conversion, orders without
a session, with a purged one or a session of missing fields, orders at 00:00:00 and 23:59:59,
days without orders, Pixel mirror rows of every platform (Google's keyed by the order id,
another property's with the same id, duplicates), and outbox rows delivered, dead, expired,
retrying, pending and in flight. :func:`check_seed` asserts each awkward case is present, so
the comparisons cannot pass on a seed that lacks them.

One case is also counted by hand (:func:`test_an_order_recorded_on_two_days_counts_once`):
an event_id with ledger rows on two days is one deduplicated order over both days, and one on
each day alone.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import orjson
import pytest

from backchannel import report, rollups
from backchannel.destinations import get as get_destination
from backchannel.report import GapReport, Tally, day_partial, from_store, merge_partials, time_range
from backchannel.store.base import (
    DEFAULT_PROPERTY,
    BrowserEvent,
    Dead,
    LedgerEntry,
    SessionUpdate,
    Store,
)
from backchannel.web.dashboard import gap as gap_page
from store.helpers import LEASE, NOW, conversion

#: the seeded days (November 1 to December 10, 2026); no order on EMPTY days
FIRST, LAST = date(2026, 11, 1), date(2026, 12, 10)
EMPTY = {date(2026, 11, 10), date(2026, 11, 11), date(2026, 11, 25), date(2026, 12, 1)}
DESTINATIONS = ("tiktok", "meta", "ga4", "google_ads", "snapchat", "pinterest", "reddit")
#: the destinations every range is compared for (google_ads: its Pixel key is the order id)
MAIN = ("tiktok", "meta", "google_ads", "reddit")
SESSION_FIELDS: list[dict[str, Any]] = [
    {"browser": "Chrome", "os": "Android", "os_version": "14", "load_time_ms": 999,
     "pixel_status": "loaded"},
    {"browser": "Safari", "os": "iOS", "os_version": "17.4", "load_time_ms": 1000,
     "pixel_status": "blocked"},
    {"browser": "TikTok in-app", "os": "iOS", "os_version": "16", "load_time_ms": 2500,
     "pixel_status": "absent"},
    {"browser": "Safari", "os": "iOS", "os_version": None, "load_time_ms": 4999,
     "pixel_status": "loaded"},
    {"browser": None, "os": None, "os_version": None, "load_time_ms": None},
    {"browser": "Firefox", "os": "Windows", "os_version": "10", "load_time_ms": 5000,
     "pixel_status": "blocked"},
    {"browser": "Safari", "os": "iOS", "os_version": "18.0.1", "load_time_ms": 12_000,
     "pixel_status": "loaded"},
]  # fmt: skip
#: landing UTMs (attribution of several platforms, any case, or none)
UTM = [None, None, "tiktok", "TikTok", "facebook", "reddit", " Reddit ", "google", "snap"]
#: (the conversion's user, the session's click ids) fragments, any platform's
CLICKS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({}, {}),
    ({"ttclid": "tt"}, {}),
    ({"fbc": "fb.1.1.x"}, {}),
    ({}, {"fbclid": "fb"}),
    ({"ids": {"rdt_cid": "r"}}, {}),
    ({}, {"ids": {"rdt_cid": "r"}}),
    ({"gclid": "g"}, {}),
    ({}, {"gclid": "g"}),
    ({}, {"ids": {"sc_click_id": "s"}}),
]


def seed(
    store: Store, rng: random.Random, per_property: int = 70, *, again: bool = True
) -> list[int]:
    """An awkward random store (see the module docstring); returns the property ids.
    ``again=False``: no order is in the ledger twice (for the kept partials' test)."""
    props = [DEFAULT_PROPERTY]
    for name in ("eu", "us"):
        pid = store.create_property(name, NOW, destinations=DESTINATIONS)
        assert pid is not None
        props.append(pid)
    store.ensure_connections(DESTINATIONS, NOW)
    days = [d for d in (FIRST + timedelta(days=i) for i in range(40)) if d not in EMPTY]
    old = NOW - 40 * 86_400  # sessions last seen then are purged below
    for pid in props:
        items, extra, updates, mirror = [], [], [], []
        for n in range(per_property):
            day = rng.choice(days)
            low = time_range(day, day)[0]
            when = low + rng.choice([0, 0, 86_399, rng.randrange(86_400), rng.randrange(86_400)])
            event = "CompletePayment" if n % 7 else "Purchase"
            event_id = f"{event}-{n}"  # the same ids in every property
            kind = rng.random()
            session_id = None if kind < 0.15 else f"s-{pid}-{n}"
            user, session_clicks = rng.choice(CLICKS)
            utm = rng.choice(UTM)
            payload: dict[str, Any] = {"n": n, "event": event, "user": dict(user)}
            if rng.random() < 0.2:
                payload["page"] = {"url": f"https://shop.example/?utm_source={rng.choice(UTM)}"}
            attributed = rng.random() < 0.7
            item = conversion(
                n,
                event=event,
                session_id=session_id,
                event_time=when,
                payload=orjson.dumps(payload),
                destinations=DESTINATIONS,
                property_id=pid,
                test_event_code="TEST42" if rng.random() < 0.07 else None,
            )
            item.ledger = ledger(
                pid, "shopify", str(n), when, event, event_id, session_id, attributed
            )
            items.append(item)
            if session_id is not None:
                fields = rng.choice(SESSION_FIELDS)
                purged = kind > 0.88
                updates.append(
                    SessionUpdate(
                        session_id,
                        old if purged else NOW,
                        landing=True,
                        utm_source=utm,
                        property_id=pid,
                        **session_clicks,
                        **fields,
                    )
                )
            px = session_id or f"px-{pid}"
            for platform, key in (
                ("tiktok", event_id),
                ("meta", event_id),
                ("reddit", event_id),
                ("snapchat", event_id),
                ("pinterest", event_id),
                ("google", str(n)),
            ):
                for _ in range(rng.choice([0, 0, 1, 1, 2])):
                    mirror.append(
                        BrowserEvent(px, event, key, NOW, platform=platform, property_id=pid)
                    )
            # the same order recorded again by another source: another day, or the same
            if again and rng.random() < 0.15:
                other = rng.choice([*days, day])
                at = time_range(other, other)[0] + rng.choice([0, 86_399, rng.randrange(86_400)])
                extra.append(
                    ledger(
                        pid,
                        "api",
                        f"{n}-again",
                        at,
                        event,
                        event_id,
                        session_id,
                        rng.random() < 0.7,
                    )
                )
                if rng.random() < 0.3:  # and a third time (maybe outside every range)
                    at = time_range(LAST, LAST)[0] + 86_400 * rng.choice([1, -3, -20])
                    extra.append(ledger(pid, "csv", f"{n}-third", at, event, event_id, None, True))
        for k in range(6):  # ledger rows without a conversion (a CSV record-only import)
            day = rng.choice(days)
            at = time_range(day, day)[0] + rng.choice([0, 86_399, 3600])
            extra.append(ledger(pid, "csv", f"csv-{k}", at, None, None, None, k % 2 == 0))
        # one order recorded at 23:59:59 and again at 00:00:00 the next day, seen by every Pixel
        edge = time_range(days[5], days[5])[0] + 86_399 - (0 if again else 3600)
        edge_id = f"edge-{pid}"
        item = conversion(
            edge_id,
            event_time=edge,
            destinations=DESTINATIONS,
            property_id=pid,
            payload=orjson.dumps({"user": {"fbc": "f", "gclid": "g", "ids": {"rdt_cid": "r"}}}),
        )
        event_id = f"CompletePayment-{edge_id}"
        item.ledger = ledger(pid, "shopify", edge_id, edge, "CompletePayment", event_id, None, True)
        items.append(item)
        if again:
            extra.append(
                ledger(pid, "api", edge_id, edge + 1, "CompletePayment", event_id, None, True)
            )
        for platform in ("tiktok", "meta", "reddit"):
            mirror.append(
                BrowserEvent(
                    f"px-{pid}",
                    "CompletePayment",
                    event_id,
                    NOW,
                    platform=platform,
                    property_id=pid,
                )
            )
        mirror.append(
            BrowserEvent(f"px-{pid}", "purchase", edge_id, NOW, platform="google", property_id=pid)
        )
        # an event_id recorded by a source whose conversion was never stored
        extra.append(
            ledger(
                pid,
                "stripe",
                "x-1",
                time_range(days[3], days[3])[0],
                "CompletePayment",
                "nowhere-1",
                None,
                True,
            )
        )
        assert all(store.insert_conversions(items, NOW))
        assert all(store.record_orders(extra, NOW))
        store.record_collect(updates, mirror)
    # another property's mirror row with the default property's ids is not the default's
    store.record_collect(
        [],
        [
            BrowserEvent(
                f"px-{props[1]}", "CompletePayment", "CompletePayment-1", NOW, property_id=props[1]
            )
        ],
    )
    while store.purge_sessions(NOW - 30 * 86_400, 100).sessions:
        pass
    store.scrub_conversions(NOW + 1, 1000, NOW)
    deliver(store, rng, props)
    return props


def ledger(
    pid: int,
    source: str,
    order_id: str,
    at: int,
    event: str | None,
    event_id: str | None,
    session_id: str | None,
    attributed: bool,
) -> LedgerEntry:
    return LedgerEntry(
        source=source,
        order_id=order_id,
        order_time=at,
        value=10.0,
        currency="USD",
        event=event,
        event_id=event_id,
        session_id=session_id,
        attributed_tiktok=attributed,
        evidence=b'{"ttclid": "landing_site"}' if attributed else b"{}",
        property_id=pid,
    )


def deliver(store: Store, rng: random.Random, props: list[int]) -> None:
    """Every outbox row of every connection gets a fate: delivered, dead, expired, retrying,
    released (pending) or left in flight."""
    for pid in props:
        for name in DESTINATIONS:
            found = store.get_connection(name, pid)
            assert found is not None
            assert found.id is not None
            claimed = store.claim(found.id, 10_000, NOW, LEASE)
            fates: dict[str, list[int]] = {}
            for c in claimed:
                fate = rng.choice(
                    ["delivered"] * 5 + ["dead", "expired", "retry", "pending", "flight"]
                )
                fates.setdefault(fate, []).append(c.outbox_id)
            store.mark_delivered(fates.get("delivered", []), NOW, "ref")
            store.mark_dead([Dead(i, b"{}") for i in fates.get("dead", [])], "Invalid", "{}", None)
            store.mark_expired(fates.get("expired", []), "too old")
            store.mark_retry(fates.get("retry", []), NOW + 60, "503", None)
            store.release(fates.get("pending", []), NOW)


def check_seed(store: Store, props: list[int]) -> None:
    """The awkward cases the comparisons rely on are really in the seed."""

    def one(sql: str, *params: Any) -> int:
        [(n,)] = store.read(sql, params)
        return int(n)

    assert (
        one("SELECT COUNT(*) FROM orders WHERE order_time - order_time / 86400 * 86400 = 0") > 0
    )  # 00:00:00
    assert (
        one("SELECT COUNT(*) FROM orders WHERE order_time - order_time / 86400 * 86400 = 86399") > 0
    )  # 23:59:59
    by_id = (
        "SELECT COUNT(*) FROM (SELECT property_id, event_id FROM orders"
        " WHERE event_id IS NOT NULL GROUP BY property_id, event_id HAVING {}) AS g"
    )
    assert one(by_id.format("COUNT(DISTINCT order_time / 86400) > 1")) > 0  # across days
    assert one(by_id.format("COUNT(*) > COUNT(DISTINCT order_time / 86400)")) > 0  # one day
    shared_ids = (
        "SELECT COUNT(*) FROM (SELECT event_id FROM orders WHERE event_id IS NOT NULL"
        " GROUP BY event_id HAVING COUNT(DISTINCT property_id) = 3) AS g"
    )
    assert one(shared_ids) > 0
    assert one("SELECT COUNT(*) FROM orders WHERE event_id IS NULL") > 0
    assert one("SELECT COUNT(*) FROM orders WHERE session_id IS NULL") > 0
    purged = (
        "SELECT COUNT(*) FROM orders o WHERE o.session_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM landing_sessions s WHERE s.session_id = o.session_id)"
    )
    assert one(purged) > 0
    assert one("SELECT COUNT(*) FROM conversions WHERE test_event_code IS NOT NULL") > 0
    statuses = {str(s) for (s,) in store.read("SELECT DISTINCT status FROM outbox")}
    assert statuses == {"pending", "in_flight", "delivered", "dead", "expired"}
    assert one("SELECT COUNT(*) FROM outbox WHERE status = 'pending' AND attempts > 0") > 0
    for day in EMPTY:
        assert one("SELECT COUNT(*) FROM orders WHERE order_time >= ? AND order_time < ?",
                   *time_range(day, day)) == 0  # fmt: skip
    assert sorted(p.id for p in store.properties()) == props


def same(store: Store, start: date, end: date, switch_on: date | None, **kw: Any) -> GapReport:
    """The report from partials, asserted equal to the row scan's (and its JSON, bytes)."""
    merged = from_store(store, start, end, switch_on, **kw)
    scanned = from_store(store, start, end, switch_on, scan=True, **kw)
    where = f"{start}..{end} switch_on={switch_on} {kw}"
    assert merged == scanned, where
    assert orjson.dumps(merged.as_dict()) == orjson.dumps(scanned.as_dict()), where
    assert report.to_csv(merged) == report.to_csv(scanned), where
    return merged


#: 30-day ranges and switch-on dates: inside, the first day, the last day, none, before the
#: range, after it; and ranges past either end of the data
MONTHS: list[tuple[date, date, date | None]] = [
    (date(2026, 11, 1), date(2026, 11, 30), date(2026, 11, 15)),
    (date(2026, 11, 5), date(2026, 12, 4), date(2026, 11, 5)),
    (date(2026, 11, 11), date(2026, 12, 10), date(2026, 12, 10)),
    (date(2026, 11, 1), date(2026, 11, 30), None),
    (date(2026, 10, 20), date(2026, 11, 18), date(2026, 10, 1)),
    (date(2026, 11, 20), date(2026, 12, 19), date(2027, 1, 5)),
]


@pytest.mark.parametrize("case", [1, 2])
def test_thirty_day_reports_equal_the_row_scan(store: Store, case: int) -> None:
    props = seed(store, random.Random(case))
    check_seed(store, props)
    for start, end, switch_on in MONTHS:
        for pid in (None, *props):
            for name in MAIN:
                same(store, start, end, switch_on, destination=name, property_id=pid)
    # every other destination, for the host view and one property
    first, last, switch_on = MONTHS[0]
    for name in DESTINATIONS:
        for pid in (None, props[1]):
            same(store, first, last, switch_on, destination=name, property_id=pid)
    # the whole seeded span, and the Events Manager import still read live
    store.set_pixel_counts([("2026-11-03", "CompletePayment", 7)], NOW, props[1])
    store.set_pixel_counts([("2026-11-04", "CompletePayment", 5)], NOW, props[2])
    whole = same(store, FIRST, LAST, date(2026, 11, 20), property_id=None)
    assert whole.pixel_reported == 12
    assert same(store, FIRST, LAST, None, property_id=props[1]).pixel_reported == 7
    # the seed makes a per-day sum of the union wrong: the days' deduplicated counts add up
    # to more than the whole range's (an event_id counted on two days)
    assert sum(t.deduplicated for _, t in whole.daily) > whole.total.deduplicated
    assert whole.ledger_orders == sum(
        len(store.gap_rows(*time_range(FIRST, LAST), p)) for p in props
    )


def test_one_day_reports_equal_the_row_scan(store: Store) -> None:
    """Every day of the span and the day either side, one at a time (empty days too)."""
    props = seed(store, random.Random(3))
    check_seed(store, props)
    day = FIRST - timedelta(days=1)
    while day <= LAST + timedelta(days=1):
        for name in MAIN:
            for pid in (None, props[0]):
                same(store, day, day, day, destination=name, property_id=pid)
        day += timedelta(days=1)
    empty = same(store, min(EMPTY), min(EMPTY), None)
    assert empty.ledger_orders == 0
    assert empty.daily == [(min(EMPTY), Tally(0, 0, 0, 0))]


def test_merging_stored_partials_equals_the_row_scan(store: Store) -> None:
    """The partials survive the rollup cache's round trip (orjson): merged after
    ``orjson.loads(orjson.dumps(data))`` they still give the row scan's report."""
    props = seed(store, random.Random(4))
    start, end, switch_on = MONTHS[0]
    for name in MAIN:
        destination = get_destination(name)
        for pid in (None, props[2]):
            parts = [
                rollups.DayPartial(p.property_id, p.day, orjson.loads(orjson.dumps(p.data)), 0.0)
                for p in rollups.partials(
                    store,
                    report.partial_name(name),
                    lambda s, p, low, high, d=destination: day_partial(
                        s, p, low, high, destination=d
                    ),
                    start,
                    end,
                    pid,
                )
            ]
            counts = None
            if name == "tiktok":
                counts = store.pixel_counts(
                    start.isoformat(), end.isoformat(), "CompletePayment", pid
                )
            merged = merge_partials(
                parts, start, end, switch_on, destination=name, pixel_counts=counts
            )
            scanned = from_store(
                store, start, end, switch_on, destination=name, property_id=pid, scan=True
            )
            assert merged == scanned, (name, pid)


def test_an_order_recorded_on_two_days_counts_once(store: Store) -> None:
    """Order A (event_id ``CompletePayment-A``) is in the ledger on Nov 5 (Shopify) and on
    Nov 6 (the API), its Pixel fired; order B on Nov 6 was delivered to TikTok. Over both
    days the union is {A, B}: 2, not 3 (a sum of the days' unions); each day alone counts
    its own (1 and 2), and so do ``daily`` and before/after a switch-on of Nov 6."""
    nov5, nov6 = date(2026, 11, 5), date(2026, 11, 6)
    a_time, b_time = time_range(nov5, nov5)[0] + 3600, time_range(nov6, nov6)[0]
    a = conversion("A", event_time=a_time)
    a.ledger = ledger(
        DEFAULT_PROPERTY, "shopify", "A", a_time, "CompletePayment", "CompletePayment-A", None, True
    )
    b = conversion("B", event_time=b_time)
    b.ledger = ledger(
        DEFAULT_PROPERTY, "shopify", "B", b_time, "CompletePayment", "CompletePayment-B", None, True
    )
    assert store.insert_conversions([a, b], NOW) == [True, True]
    again = ledger(
        DEFAULT_PROPERTY,
        "api",
        "A-api",
        b_time + 60,
        "CompletePayment",
        "CompletePayment-A",
        None,
        True,
    )
    assert store.record_orders([again], NOW) == [True]
    store.record_collect([], [BrowserEvent("x", "CompletePayment", "CompletePayment-A", NOW)])
    claimed = store.claim("tiktok", 10, NOW, LEASE)
    store.mark_delivered([c.outbox_id for c in claimed if b'"n": "B"' in c.payload], NOW, "ref")
    for scan in (False, True):
        both = from_store(store, nov5, nov6, nov6, scan=scan)
        assert both.total == Tally(orders=3, pixel_only=2, server_delivered=1, deduplicated=2)
        assert both.daily == [(nov5, Tally(1, 1, 0, 1)), (nov6, Tally(2, 1, 1, 2))]
        assert (both.before, both.after) == (Tally(1, 1, 0, 1), Tally(2, 1, 1, 2))
        assert both.breakdowns["browser"] == {"unknown": Tally(3, 2, 1, 2)}
        assert both.server_delivered_by == {"tiktok": 1}
        assert from_store(store, nov5, nov5, scan=scan).total == Tally(1, 1, 0, 1)
        assert from_store(store, nov6, nov6, scan=scan).total == Tally(2, 1, 1, 2)


def test_kept_partials_follow_every_write(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read once (every day's partial computed and kept), then after each kind of write the
    report from the kept partials (only the marked days recomputed) still equals the row
    scan: new Pixel mirror rows (Google's by order id), a session's browser facts, a purge,
    dead rows replayed then delivered, retrying, dead again or expired, new orders (one at
    midnight), a scrub, and last an order sent again by another source on another day.

    Every order is in the ledger once until that last step: a write to the outbox of an
    order that has ledger rows on two days is the known gap of the store's marks (see
    :func:`test_a_delivery_reaches_every_day_its_order_is_on`)."""
    props = seed(store, random.Random(5), per_property=40, again=False)
    computed: list[tuple[int, int]] = []
    real = report.day_partial

    def counting(s: Store, p: int, low: int, high: int, *, destination: Any) -> dict[str, Any]:
        computed.append((p, low))
        return real(s, p, low, high, destination=destination)

    monkeypatch.setattr(report, "day_partial", counting)
    wrong: list[str] = []  # every step is checked; the failures are listed at the end
    every = len(MAIN) * 40 * 3  # the host view's partials (the property's are among them)

    def check(step: str) -> int:
        computed.clear()
        for name in MAIN:
            for pid in (None, props[1]):
                try:
                    same(store, FIRST, LAST, date(2026, 11, 20), destination=name, property_id=pid)
                except AssertionError:
                    wrong.append(f"after {step}: {name}, property {pid}")
        return len(computed)

    assert check("the first read") == every
    assert check("nothing") == 0  # every partial was kept
    low = [time_range(d, d)[0] for d in (date(2026, 11, 12), date(2026, 11, 13))]
    [(order_id, event_id)] = store.read(
        "SELECT order_id, event_id FROM orders WHERE property_id = ? AND event_id IS NOT NULL"
        " ORDER BY order_time DESC LIMIT 1",
        [DEFAULT_PROPERTY],
    )
    store.record_collect(
        [],
        [
            BrowserEvent("px-new", "CompletePayment", str(event_id), NOW + 4),
            BrowserEvent("px-new", "purchase", str(order_id), NOW + 4, platform="google"),
            BrowserEvent("px-new", "Purchase", str(event_id), NOW + 4, platform="meta"),
        ],
    )
    assert 0 < check("new Pixel mirror rows") < every
    [(session_id,)] = store.read(
        "SELECT o.session_id FROM orders o JOIN landing_sessions s ON s.session_id ="
        " o.session_id WHERE o.property_id = ? ORDER BY o.order_time LIMIT 1",
        [DEFAULT_PROPERTY],
    )
    store.record_collect(
        [SessionUpdate(str(session_id), NOW + 5, browser="Edge", os="iOS", os_version="19.1",
                       utm_source="reddit", pixel_status="loaded", load_time_ms=2000)],
        [],
    )  # fmt: skip
    assert 0 < check("a session changed") < every
    while store.purge_sessions(NOW + 6, 100).sessions:
        pass
    assert 0 < check("every session purged") < every
    assert store.replay(NOW + 7, destination="tiktok") > 0
    # a replay moves rows between "not delivered" states: no figure changes, no day is marked
    # (the equality below still holds: check() compares every report with the row scan)
    assert check("dead rows replayed") == 0
    claimed = store.claim("tiktok", 10_000, NOW + 8, LEASE)
    quarter = len(claimed) // 4
    assert quarter > 0
    ids = [c.outbox_id for c in claimed]
    store.mark_delivered(ids[:quarter], NOW + 8, "ref")
    store.mark_retry(ids[quarter : 2 * quarter], NOW + 60, "503", None)
    store.mark_dead([Dead(i, b"{}") for i in ids[2 * quarter : 3 * quarter]], "Invalid", "{}", None)
    store.mark_expired(ids[3 * quarter :], "too old")
    assert 0 < check("delivered, retrying, dead, expired") < every
    items = []
    for k, day_low in enumerate(low):
        item = conversion(f"new-{k}", event_time=day_low, destinations=("tiktok", "meta"))
        item.ledger = ledger(
            DEFAULT_PROPERTY, "api", f"new-{k}", day_low, "CompletePayment",
            f"CompletePayment-new-{k}", None, True,
        )  # fmt: skip
        items.append(item)
    assert store.insert_conversions(items, NOW + 9) == [True, True]
    assert 0 < check("new orders") < every
    assert store.scrub_conversions(NOW + 10, 10_000, NOW + 10) > 0
    check("a scrub")
    # an order sent again by another source (a duplicate conversion) on another day: its
    # ledger row there makes the order's first day's union count change too
    [(n, first)] = store.read(
        "SELECT o.order_id, o.order_time FROM orders o WHERE o.property_id = ?"
        " AND o.source = 'shopify' AND o.attributed_tiktok = 1 AND EXISTS (SELECT 1 FROM"
        " browser_events b WHERE b.property_id = o.property_id AND b.event_id = o.event_id"
        " AND b.platform = 'tiktok') ORDER BY o.order_time LIMIT 1",
        [DEFAULT_PROPERTY],
    )
    later = int(first) + 3 * 86_400
    duplicate = conversion(str(n), event_time=later, destinations=("tiktok",))
    duplicate.ledger = ledger(
        DEFAULT_PROPERTY, "api", str(n), later, "CompletePayment", f"CompletePayment-{n}",
        None, True,
    )  # fmt: skip
    assert store.insert_conversions([duplicate], NOW + 11) == [False]
    assert 0 < check("an order sent again on another day") < every
    assert not wrong, "\n".join(wrong)


def test_a_delivery_reaches_every_day_its_order_is_on(store: Store) -> None:
    """An order sent at 23:59 on Nov 5 by the API and at 00:01 on Nov 6 by Shopify (one
    conversion, two ledger rows, one per day); read (both days kept); then its TikTok row is
    delivered: both days' orders are server-delivered now, kept partials or not."""
    nov5, nov6 = date(2026, 11, 5), date(2026, 11, 6)
    first, second = time_range(nov6, nov6)[0] - 60, time_range(nov6, nov6)[0] + 60
    sent = conversion(1, event_time=first, destinations=("tiktok",))
    sent.ledger = ledger(
        DEFAULT_PROPERTY, "api", "1", first, "CompletePayment", "CompletePayment-1", None, True
    )
    again = conversion(1, event_time=second, destinations=("tiktok",))
    again.ledger = ledger(
        DEFAULT_PROPERTY, "shopify", "1", second, "CompletePayment", "CompletePayment-1", None, True
    )
    assert store.insert_conversions([sent], NOW) == [True]
    assert store.insert_conversions([again], NOW) == [False]
    assert from_store(store, nov5, nov6).total == Tally(2, 0, 0, 0)  # both days kept
    claimed = store.claim("tiktok", 10, NOW, LEASE)
    store.mark_delivered([c.outbox_id for c in claimed], NOW, "ref")
    expected = Tally(orders=2, pixel_only=0, server_delivered=2, deduplicated=1)
    assert from_store(store, nov5, nov6, scan=True).total == expected
    assert from_store(store, nov5, nov6).total == expected


def test_the_background_refresh_recomputes_the_changed_days(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every destination's gap compute is known to the rollups (registered on import), so
    ``rollups.refresh`` recomputes a kept partial whose day changed, and the next read
    computes nothing and still equals the row scan."""
    assert {f"gap.{name}/1" for name in DESTINATIONS} <= set(rollups._REGISTRY)
    props = seed(store, random.Random(6), per_property=30, again=False)
    start, end = date(2026, 11, 20), date(2026, 12, 10)  # within the refresh's 62 days of NOW
    for name in MAIN:
        same(store, start, end, None, destination=name)
    [(event_id,)] = store.read(
        "SELECT event_id FROM orders WHERE property_id = ? AND order_time >= ?"
        " AND event_id IS NOT NULL ORDER BY order_time LIMIT 1",
        [props[2], time_range(start, start)[0]],
    )
    store.record_collect(
        [], [BrowserEvent(f"px-{props[2]}", "x", str(event_id), NOW, property_id=props[2])]
    )
    assert rollups.refresh(store, now=NOW) >= len(MAIN)  # that day, for each report read
    calls: list[int] = []
    real = report.day_partial

    def counting(s: Store, p: int, low: int, high: int, *, destination: Any) -> dict[str, Any]:
        calls.append(p)
        return real(s, p, low, high, destination=destination)

    monkeypatch.setattr(report, "day_partial", counting)
    for name in MAIN:
        same(store, start, end, None, destination=name)
    assert calls == []


def test_max_stale_may_answer_from_a_changed_day(store: Store) -> None:
    """``max_stale`` reaches the rollups: a day changed since its partial was kept is still
    answered from it when allowed (the dashboard's choice), and never by default."""
    seed(store, random.Random(7), per_property=30, again=False)
    [(event_id,)] = store.read(
        "SELECT o.event_id FROM orders o WHERE o.property_id = ? AND o.attributed_tiktok = 1"
        " AND o.event_id IS NOT NULL AND o.order_time >= ? AND NOT EXISTS (SELECT 1 FROM"
        " browser_events b WHERE b.property_id = o.property_id AND b.event_id = o.event_id"
        " AND b.platform = 'tiktok') ORDER BY o.order_time LIMIT 1",
        [DEFAULT_PROPERTY, time_range(FIRST, FIRST)[0]],
    )
    kept = same(store, FIRST, LAST, None, property_id=DEFAULT_PROPERTY)
    store.record_collect([], [BrowserEvent("px-1", "CompletePayment", str(event_id), NOW)])
    stale = from_store(store, FIRST, LAST, property_id=DEFAULT_PROPERTY, max_stale=3600)
    assert kept.as_of is None
    assert stale.as_of is not None  # it says from when: the page shows it
    assert replace(stale, as_of=None) == kept
    body = gap_page.page_body(stale, gap_page.Query(FIRST, LAST, None, report.PIXEL_EVENT))
    assert "Some figures are from" in body
    assert "Some figures are from" not in gap_page.page_body(
        kept, gap_page.Query(FIRST, LAST, None, report.PIXEL_EVENT)
    )
    exact = same(store, FIRST, LAST, None, property_id=DEFAULT_PROPERTY)
    assert exact.as_of is None
    assert exact.total.pixel_only == kept.total.pixel_only + 1
