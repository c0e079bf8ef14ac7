"""The reports part of the Store contract: ``gap_rows`` on SQLite and PostgreSQL alike.

Why a contract: the gap report's figures are counts over these rows, and the query joining the
ledger, the Pixel mirror, the TikTok outbox and the landing sessions is run by both dialects; a
backend that duplicated an order with two Pixel events, or counted a Meta delivery, would skew
every figure.
"""

from __future__ import annotations

import threading
from pathlib import Path

from backchannel.store.base import (
    BrowserEvent,
    GapRow,
    LedgerEntry,
    NewConversion,
    SessionUpdate,
    Store,
)
from backchannel.store.sqlite import SqliteStore

from .helpers import LEASE, NOW, conversion

T0 = 1_790_000_000


def ordered(n: int, order_time: int, **fields: object) -> NewConversion:
    item = conversion(n)
    values: dict[str, object] = {
        "source": "shopify",
        "order_id": str(n),
        "order_time": order_time,
        "value": 1.0,
        "currency": "USD",
        "event": "CompletePayment",
        "event_id": f"CompletePayment-{n}",
        "session_id": None,
        "attributed_tiktok": True,
        "evidence": b"{}",
    }
    values.update(fields)
    item.ledger = LedgerEntry(**values)  # type: ignore[arg-type]
    return item


class TestGapRows:
    def test_one_row_per_order_with_its_facts(self, store: Store) -> None:
        """Joins: Pixel mirror (any count -> True), TikTok delivered only, landing session."""
        items = [
            ordered(1, T0 + 10, session_id="s1"),
            ordered(2, T0 + 20, session_id="missing", attributed_tiktok=False),
            ordered(3, T0 + 30, event_id=None),
            ordered(4, T0 - 1),  # before the range
            ordered(5, T0 + 100),  # at the (exclusive) end
        ]
        assert store.insert_conversions(items, NOW) == [True] * 5
        store.record_collect(
            [
                SessionUpdate(
                    session_id="s1",
                    at=NOW,
                    landing=True,
                    browser="Safari",
                    os="iOS",
                    os_version="17.4",
                    load_time_ms=1500,
                    pixel_status="blocked",
                )
            ],
            [
                BrowserEvent("s1", "CompletePayment", "CompletePayment-1", NOW),
                BrowserEvent("s1", "CompletePayment", "CompletePayment-1", NOW + 1),
                BrowserEvent("s1", "CompletePayment", None, NOW + 2),
            ],
        )
        tiktok = store.claim("tiktok", 10, NOW, LEASE)
        meta = store.claim("meta", 10, NOW, LEASE)
        # conversion 1 delivered to TikTok; conversion 2 only to Meta
        first = {c.conversion_id for c in tiktok if c.payload == b'{"n": "1"}'}
        second = {c.conversion_id for c in meta if c.payload == b'{"n": "2"}'}
        store.mark_delivered([c.outbox_id for c in tiktok if c.conversion_id in first], NOW, "r")
        store.mark_delivered([c.outbox_id for c in meta if c.conversion_id in second], NOW, "r")

        rows = store.gap_rows(T0, T0 + 100)
        assert rows == [
            GapRow("shopify", "1", T0 + 10, True, "CompletePayment-1", "s1", True, True, True,
                   "Safari", "iOS", "17.4", 1500, "blocked"),
            GapRow("shopify", "2", T0 + 20, False, "CompletePayment-2", "missing", False, False,
                   False, None, None, None, None, None),
            GapRow("shopify", "3", T0 + 30, True, None, None, False, False, False, None, None,
                   None, None, None),
        ]  # fmt: skip

    def test_empty(self, store: Store) -> None:
        assert store.gap_rows(0, 2**40) == []


class TestRead:
    """The read seam the dashboard's diagnostics use: one portable query, same rows."""

    def test_portable_query_with_placeholders_and_blobs(self, store: Store) -> None:
        store.insert_conversions([conversion(1), conversion(2)], NOW)
        rows = store.read(
            "SELECT event_id, payload, received_at FROM conversions"
            " WHERE received_at >= ? ORDER BY event_id",
            (NOW - 1,),
        )
        assert [r[0] for r in rows] == [conversion(1).event_id, conversion(2).event_id]
        assert all(isinstance(r[1], bytes) for r in rows)  # BLOB and BYTEA alike
        assert rows[0][1] == conversion(1).payload
        assert store.dialect in ("sqlite", "postgres")

    def test_nothing_matches(self, store: Store) -> None:
        assert store.read("SELECT id FROM conversions WHERE event = ?", ("none",)) == []


def test_sqlite_reports_never_hold_up_ingest_lookups(tmp_path: Path) -> None:
    """A long dashboard query on SQLite must not block the API-key lookup of every ingest
    request: reports read on a connection (and lock) of their own. Simulated by holding the
    reports' lock while another thread looks a key up; it must finish regardless."""
    store = SqliteStore(tmp_path / "bc.db")
    try:
        store.add_key("shop", "ingest", "bc_live_ab", "h" * 64, NOW)
        found: list[object] = []
        with store._report_lock:  # a report "in progress"
            lookup = threading.Thread(target=lambda: found.append(store.find_key("h" * 64)))
            lookup.start()
            lookup.join(timeout=5)
            assert not lookup.is_alive(), "the key lookup waited for the report"
        assert len(found) == 1
        assert found[0] is not None
        assert store.read("SELECT COUNT(*) FROM api_keys") == [(1,)]
    finally:
        store.close()
