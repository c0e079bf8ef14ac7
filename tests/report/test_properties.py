"""Each property's gap report and dedup view count only its own orders (both backends).

The default property holds test_gap.py's seed (its figures are known: ``t(8, 3, 3, 5)``).
A second property, ``eu``, gets orders with the SAME order ids (1 and 2, so the same
event_ids ``CompletePayment-1``/``-2``), its own landing session, Pixel mirror and TikTok
delivery:

====  ==========  ======================  ===================================
n     attributed  Pixel mirror (eu's)     eu's TikTok connection
====  ==========  ======================  ===================================
1     yes         yes (session eu-s1)     pending
2     yes         no                      delivered
====  ==========  ======================  ===================================

so eu's truth set is ``t(2, 1, 1, 2)``; read for one property, neither report may move when
the other property's rows arrive, and the default property's mirror row of order 1 must not
count for eu's order 1 (nor eu's delivery for the default's order 2).
"""

from __future__ import annotations

from datetime import UTC, datetime

from backchannel.diagnostics.dedup import BOTH, BROWSER_ONLY, NEITHER, SERVER_ONLY, dedup_report
from backchannel.report import from_store
from backchannel.store.base import DEFAULT_PROPERTY, BrowserEvent, LedgerEntry, SessionUpdate, Store
from report.test_gap import END, START, SWITCH, at, seed, t
from store.helpers import LEASE, NOW, conversion


def add_eu(store: Store) -> int:
    eu = store.create_property("eu", NOW, destinations=("tiktok", "meta"))
    assert eu is not None
    items = []
    for n, day in ((1, START.replace(day=5)), (2, START.replace(day=6))):
        item = conversion(
            n, session_id="eu-s1" if n == 1 else None, event_time=at(day), property_id=eu
        )
        item.ledger = LedgerEntry(
            source="shopify",
            order_id=str(n),
            order_time=at(day),
            value=20.0,
            currency="EUR",
            event="CompletePayment",
            event_id=f"CompletePayment-{n}",
            session_id=item.session_id,
            attributed_tiktok=True,
            evidence=b'{"ttclid": "landing_site"}',
            property_id=eu,
        )
        items.append(item)
    assert store.insert_conversions(items, NOW) == [True, True]  # same ids, another property
    store.record_collect(
        [SessionUpdate("eu-s1", NOW, landing=True, browser="Firefox", property_id=eu)],
        [BrowserEvent("eu-s1", "CompletePayment", "CompletePayment-1", NOW, property_id=eu)],
    )
    eu_tiktok = store.get_connection("tiktok", eu)
    assert eu_tiktok is not None
    assert eu_tiktok.id is not None
    claimed = store.claim(eu_tiktok.id, 10, NOW, LEASE)
    delivered = [c.outbox_id for c in claimed if b'"n": "2"' in c.payload]
    assert len(delivered) == 1
    store.mark_delivered(delivered, NOW, "eu-ref")
    store.release([c.outbox_id for c in claimed if c.outbox_id not in delivered], NOW)
    return eu


def test_each_property_s_gap_report_counts_its_own_orders(store: Store) -> None:
    seed(store)
    before = from_store(store, START, END, SWITCH, property_id=DEFAULT_PROPERTY)
    assert before.total == t(8, 3, 3, 5)
    eu = add_eu(store)
    default = from_store(store, START, END, SWITCH, property_id=DEFAULT_PROPERTY)
    assert default.total == before.total
    assert default.breakdowns == before.breakdowns
    assert default.server_delivered_by == before.server_delivered_by
    mine = from_store(store, START, END, SWITCH, property_id=eu)
    assert mine.ledger_orders == 2
    assert mine.total == t(2, 1, 1, 2)
    assert mine.server_delivered_by == {"tiktok": 1}
    assert mine.breakdowns["browser"] == {"Firefox": t(1, 1, 0, 1), "unknown": t(1, 0, 1, 1)}
    everyone = from_store(store, START, END, SWITCH)
    assert everyone.total == t(10, 4, 4, 7)


def test_each_property_s_dedup_view_counts_its_own_orders(store: Store) -> None:
    seed(store)
    day = datetime.fromtimestamp(NOW, UTC).date()
    before = dedup_report(store, day, day, property_id=DEFAULT_PROPERTY)
    eu = add_eu(store)
    default = dedup_report(store, day, day, property_id=DEFAULT_PROPERTY)
    assert (default.orders, default.counts) == (before.orders, before.counts)
    mine = dedup_report(store, day, day, property_id=eu)
    assert mine.orders == 2
    assert mine.counts["tiktok"] == {
        BOTH: 0,
        BROWSER_ONLY: 1,
        SERVER_ONLY: 1,
        NEITHER: 0,
        "mismatch": 0,
    }
    verdicts = {r.order_id: r.verdict("tiktok") for r in mine.rows}
    assert verdicts == {"1": BROWSER_ONLY, "2": SERVER_ONLY}
    assert dedup_report(store, day, day).orders == before.orders + 2
