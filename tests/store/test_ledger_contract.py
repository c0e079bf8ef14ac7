"""The sources-and-ledger part of the Store contract, on SQLite and PostgreSQL alike.

Why its own file: the ledger is the truth set of the gap report, so both backends must agree
exactly on what "one row per (source, order id), first one wins" and "in the same transaction
as the conversion" mean — a backend that wrote the ledger row after a failed conversion, or
two rows for a redelivered order, would skew every figure the report shows.
"""

from __future__ import annotations

import sqlite3

import orjson
import psycopg
import pytest

from backchannel.store.base import LedgerEntry, Store, UnknownConnection

from .conftest import Database
from .helpers import NOW, conversion

WRITE_ERRORS = (sqlite3.Error, psycopg.Error, UnknownConnection)


def entry(order: str, *, source: str = "shopify", **fields: object) -> LedgerEntry:
    values: dict[str, object] = {
        "source": source,
        "order_id": order,
        "order_time": 1_799_999_000,
        "value": 59.9,
        "currency": "USD",
        "event": "CompletePayment",
        "event_id": f"CompletePayment-{order}",
        "session_id": None,
        "attributed_tiktok": False,
        "evidence": b"{}",
    }
    values.update(fields)
    return LedgerEntry(**values)  # type: ignore[arg-type]


class TestLedgerWithConversions:
    def test_ledger_row_is_written_with_its_conversion(self, store: Store) -> None:
        """insert_conversions stores the attached ledger row in the same call."""
        evidence = orjson.dumps({"ttclid": "landing_site"})
        item = conversion(1)
        item.ledger = entry("1", attributed_tiktok=True, evidence=evidence, session_id="s1")
        assert store.insert_conversions([item, conversion(2)], NOW) == [True, True]
        (row,) = store.orders()
        assert (row.source, row.order_id, row.value, row.currency) == ("shopify", "1", 59.9, "USD")
        assert (row.event_id, row.session_id, row.attributed_tiktok) == (
            "CompletePayment-1",
            "s1",
            True,
        )
        assert orjson.loads(row.evidence) == {"ttclid": "landing_site"}
        assert row.recorded_at == NOW

    def test_failed_conversion_write_leaves_no_ledger_row(
        self, store: Store, database: Database
    ) -> None:
        """One transaction: when the outbox write fails, the ledger row is not there either."""
        good = conversion(1)
        good.ledger = entry("1")
        bad = conversion(2, destinations=("tiktok", None))  # NOT NULL violated in outbox
        with pytest.raises(WRITE_ERRORS):
            store.insert_conversions([good, bad], NOW)
        assert store.orders() == []
        assert database.rows("SELECT COUNT(*) FROM conversions") == [(0,)]

    def test_failed_ledger_write_leaves_no_conversion(
        self, store: Store, database: Database
    ) -> None:
        """And the reverse: a ledger row that cannot be written takes its conversions along."""
        item = conversion(1)
        item.ledger = entry("1", order_time=None)  # NOT NULL violated in orders
        with pytest.raises(WRITE_ERRORS):
            store.insert_conversions([item], NOW)
        assert database.rows("SELECT COUNT(*) FROM conversions") == [(0,)]
        assert database.rows("SELECT COUNT(*) FROM outbox") == [(0,)]

    def test_duplicate_conversion_keeps_the_first_ledger_row(self, store: Store) -> None:
        """A redelivered order (same event_id) adds no second ledger row."""
        first, again = conversion(1), conversion(1)
        first.ledger = entry("1", value=10.0)
        again.ledger = entry("1", value=99.0)
        assert store.insert_conversions([first], NOW) == [True]
        assert store.insert_conversions([again], NOW + 1) == [False]
        assert [(r.order_id, r.value) for r in store.orders()] == [("1", 10.0)]

    def test_repeat_within_one_batch_keeps_the_first(self, store: Store) -> None:
        """Two rows of one order in one batch: one ledger row, the first one's values."""
        a, b = conversion(1), conversion(1, event="Purchase")
        a.ledger = entry("1", value=1.0)
        b.ledger = entry("1", value=2.0, event="Purchase")
        store.insert_conversions([a, b], NOW)
        assert [(r.order_id, r.value, r.event) for r in store.orders()] == [
            ("1", 1.0, "CompletePayment")
        ]


class TestRecordOrders:
    def test_record_orders_is_idempotent_per_source_and_order(self, store: Store) -> None:
        """New rows report True; the same (source, order_id) again reports False."""
        assert store.record_orders([entry("a"), entry("b"), entry("a")], NOW) == [
            True,
            True,
            False,
        ]
        assert store.record_orders([entry("a"), entry("a", source="csv")], NOW) == [False, True]
        assert sorted((r.source, r.order_id) for r in store.orders()) == [
            ("csv", "a"),
            ("shopify", "a"),
            ("shopify", "b"),
        ]

    def test_orders_newest_first_filtered_and_limited(self, store: Store) -> None:
        """orders() sorts by order time descending, filters by source, honours the limit."""
        store.record_orders(
            [
                entry("old", order_time=100),
                entry("new", order_time=300),
                entry("mid", order_time=200, source="stripe"),
            ],
            NOW,
        )
        assert [r.order_id for r in store.orders()] == ["new", "mid", "old"]
        assert [r.order_id for r in store.orders(source="shopify")] == ["new", "old"]
        assert [r.order_id for r in store.orders(limit=1)] == ["new"]

    def test_ledger_counts_per_source(self, store: Store) -> None:
        """Counts of orders and TikTok-attributed orders per source."""
        store.record_orders(
            [
                entry("1", attributed_tiktok=True),
                entry("2"),
                entry("3", source="csv", attributed_tiktok=True),
            ],
            NOW,
        )
        assert store.ledger_counts() == {
            "shopify": {"orders": 2, "attributed_tiktok": 1},
            "csv": {"orders": 1, "attributed_tiktok": 1},
        }

    def test_nullable_fields_round_trip(self, store: Store) -> None:
        """A ledger-only row (no conversion, no currency) reads back with its NULLs."""
        store.record_orders([entry("x", event_id=None, value=None, currency=None)], NOW)
        (row,) = store.orders()
        assert (row.event_id, row.value, row.currency) == (None, None, None)


class TestLedgerOnlyRowsCompleted:
    """A row recorded without a conversion (an unpaid WooCommerce order) is completed by the
    order's first row with one; every other repeat keeps the first row."""

    def test_conversion_completes_a_ledger_only_row(self, store: Store) -> None:
        """Pending order recorded, then paid: one row, now with the paid row's values."""
        pending = entry("727", source="woocommerce", event_id=None, order_time=100, value=10.0)
        assert store.record_orders([pending], NOW) == [True]
        paid = conversion(727)
        paid.ledger = entry(
            "727",
            source="woocommerce",
            order_time=200,
            value=29.35,
            session_id="s-1",
            attributed_tiktok=True,
            evidence=orjson.dumps({"utm_source": "landing_session"}),
        )
        assert store.insert_conversions([paid], NOW + 5) == [True]
        (row,) = store.orders()
        assert (row.source, row.order_id, row.event_id) == (
            "woocommerce",
            "727",
            "CompletePayment-727",
        )
        assert (row.order_time, row.value, row.session_id, row.attributed_tiktok) == (
            200,
            29.35,
            "s-1",
            True,
        )
        assert orjson.loads(row.evidence) == {"utm_source": "landing_session"}
        assert row.recorded_at == NOW  # when the order was first recorded

    def test_a_sent_order_is_never_overwritten(self, store: Store) -> None:
        """Once a row has an event_id, neither a ledger-only row nor another conversion's
        row changes it."""
        first = conversion(1)
        first.ledger = entry("1", value=10.0)
        store.insert_conversions([first], NOW)
        assert store.record_orders([entry("1", event_id=None, value=5.0)], NOW + 1) == [False]
        other = conversion(1, event="Purchase")
        other.ledger = entry("1", value=99.0, event="Purchase", event_id="Purchase-1")
        store.insert_conversions([other], NOW + 2)
        assert [(r.value, r.event_id) for r in store.orders()] == [(10.0, "CompletePayment-1")]

    def test_ledger_only_repeats_keep_the_first(self, store: Store) -> None:
        """Two ledger-only rows of one order (pending, then cancelled): the first stays."""
        store.record_orders([entry("9", event_id=None, value=1.0)], NOW)
        assert store.record_orders([entry("9", event_id=None, value=2.0)], NOW + 1) == [False]
        assert [(r.value, r.event_id) for r in store.orders()] == [(1.0, None)]

    def test_record_orders_with_an_event_id_completes_too(self, store: Store) -> None:
        """record_orders follows the same rule and reports the completed row as written."""
        store.record_orders([entry("5", event_id=None)], NOW)
        assert store.record_orders([entry("5", value=7.0)], NOW + 1) == [True]
        assert [(r.value, r.event_id) for r in store.orders()] == [(7.0, "CompletePayment-5")]


class TestSourceState:
    def test_source_secret_set_replace_delete(self, store: Store) -> None:
        """Secrets are stored as given (ciphertext), replaced, and deleted once."""
        assert store.get_source_secret("stripe") is None
        store.set_source_secret("stripe", b"\x00cipher-1", NOW)
        store.set_source_secret("stripe", b"\x00cipher-2", NOW + 1)
        assert store.get_source_secret("stripe") == b"\x00cipher-2"
        assert store.delete_source_secret("stripe") is True
        assert store.delete_source_secret("stripe") is False
        assert store.get_source_secret("stripe") is None

    def test_store_url_is_kept_with_the_secret(self, store: Store) -> None:
        """The store URL is recorded with the secret, kept when a replacement gives none,
        replaced when one is given, and gone with the secret."""
        store.set_source_secret("woocommerce", b"c-1", NOW, "https://shop.example.com/")
        assert store.get_source_store_url("woocommerce") == "https://shop.example.com/"
        store.set_source_secret("woocommerce", b"c-2", NOW + 1)
        assert store.get_source_secret("woocommerce") == b"c-2"
        assert store.get_source_store_url("woocommerce") == "https://shop.example.com/"
        store.set_source_secret("woocommerce", b"c-3", NOW + 2, "https://new.example.com/")
        assert store.get_source_store_url("woocommerce") == "https://new.example.com/"
        assert store.get_source_store_url("shopify") is None
        store.set_source_secret("shopify", b"c", NOW)
        assert store.get_source_store_url("shopify") is None
        store.delete_source_secret("woocommerce")
        assert store.get_source_store_url("woocommerce") is None

    def test_deliveries_are_recorded_once(self, store: Store) -> None:
        """record_delivery is True the first time only; delivery_seen is per source."""
        assert not store.delivery_seen("shopify", "w-1")
        assert store.record_delivery("shopify", "w-1", "processed", NOW) is True
        assert store.record_delivery("shopify", "w-1", "processed", NOW) is False
        assert store.delivery_seen("shopify", "w-1")
        assert not store.delivery_seen("stripe", "w-1")

    def test_rejections_newest_first_by_source(self, store: Store) -> None:
        """Rejections read back newest first, filterable by source, bytes intact."""
        store.record_rejection("shopify", b'{"error":"a"}', NOW)
        store.record_rejection("stripe", b'{"error":"b"}', NOW + 1, "evt_1")
        store.record_rejection("shopify", b'{"error":"c"}', NOW + 2)
        assert [r.reason for r in store.rejections()] == [
            b'{"error":"c"}',
            b'{"error":"b"}',
            b'{"error":"a"}',
        ]
        (stripe_row,) = store.rejections(source="stripe")
        assert (stripe_row.delivery_id, stripe_row.at) == ("evt_1", NOW + 1)
        assert len(store.rejections(limit=2)) == 2
