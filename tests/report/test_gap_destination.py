"""The gap report run for one platform (``report gap --destination NAME``), from a seeded
store, every figure asserted exactly (both backends; the CLI on SQLite).

The seed (November 2026; the order ids are n, their event_ids ``CompletePayment-n``):

===  ======  ==========================================  ==============  ========  ==============
n    day     Snapchat's evidence                         its Pixel        outbox    verdict
===  ======  ==========================================  ==============  ========  ==============
1    Nov 3   the session's sc_click_id (ids)              PURCHASE, ours   delivered both legs
2    Nov 4   the conversion's own user.ids.sc_click_id   —                delivered recovered
3    Nov 5   the session's utm_source "Snapchat"          PURCHASE, ours   pending   Pixel only
4    Nov 6   a TikTok landing (ttclid, utm tiktok)        —                delivered not Snap's
5    Nov 7   the page URL's utm_source=snap               —                pending   neither
6    Nov 8   a Google Ads click (the session's gclid)    gtag, order id   (google_ads delivered)
7    Nov 9   none: a CSV order with no conversion         —                —         not Snap's
===  ======  ==========================================  ==============  ========  ==============

Snapchat's truth set: 1, 2, 3, 5 (4 orders); the Pixel reported 1 and 3; the server leg
delivered 1 and 2; deduplicated 3; recovered 1. Google Ads' (its key: the order id): 6 only,
both legs. TikTok's (the ledger's rule, unchanged): 4 only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from backchannel import report
from backchannel.report import Tally, from_store, time_range
from backchannel.store.base import BrowserEvent, LedgerEntry, SessionUpdate, Store
from backchannel.store.sqlite import SqliteStore
from report.helpers import report_cli
from store.helpers import LEASE, NOW, conversion

START, END = date(2026, 11, 1), date(2026, 11, 30)


def at(day: int, hour: int = 12) -> int:
    return time_range(date(2026, 11, day), date(2026, 11, day))[0] + hour * 3600


#: n -> (day of November, session id, the conversion's user, its page URL, destinations)
ORDERS: dict[int, tuple[int, str | None, dict[str, Any], str | None, tuple[str, ...]]] = {
    1: (3, "s1", {}, None, ("snapchat",)),
    2: (4, None, {"ids": {"sc_click_id": "click-2"}}, None, ("snapchat",)),
    3: (5, "s3", {}, None, ("snapchat",)),
    4: (6, "s4", {"ttclid": "tt-4"}, None, ("snapchat", "tiktok")),
    5: (7, None, {}, "https://shop.example/?utm_source=snap&utm_medium=paid", ("snapchat",)),
    6: (8, "s6", {}, None, ("google_ads",)),
}
SESSIONS = [
    SessionUpdate(session_id="s1", at=NOW, landing=True, ids={"sc_click_id": "click-1"}),
    SessionUpdate(session_id="s3", at=NOW, landing=True, utm_source="Snapchat"),
    SessionUpdate(session_id="s4", at=NOW, landing=True, ttclid="tt-4", utm_source="tiktok"),
    SessionUpdate(session_id="s6", at=NOW, landing=True, gclid="gclid-6", browser="Chrome"),
]
MIRROR = [
    BrowserEvent("s1", "PURCHASE", "CompletePayment-1", NOW, platform="snapchat"),
    BrowserEvent("s3", "PURCHASE", "CompletePayment-3", NOW, platform="snapchat"),
    # another platform's row with order 2's id is not Snapchat's Pixel
    BrowserEvent("x", "Purchase", "CompletePayment-2", NOW, platform="meta"),
    BrowserEvent("s6", "purchase", "6", NOW, platform="google"),  # gtag: the order id
]
DELIVERED = {"snapchat": {1, 2, 4}, "google_ads": {6}, "tiktok": {4}}


def ledger(n: int, day: int, session_id: str | None, *, event_id: str | None) -> LedgerEntry:
    return LedgerEntry(
        source="api" if event_id else "csv",
        order_id=str(n),
        order_time=at(day),
        value=10.0,
        currency="USD",
        event="CompletePayment" if event_id else None,
        event_id=event_id,
        session_id=session_id,
        attributed_tiktok=n == 4,
        evidence=b'{"ttclid": "landing_session"}' if n == 4 else b"{}",
    )


def seed(store: Store) -> None:
    # a connection of each destination in the default property (TikTok's and Meta's exist)
    store.ensure_connections(("snapchat", "google_ads"), NOW)
    items = []
    for n, (day, session_id, user, url, destinations) in ORDERS.items():
        payload = {"n": str(n), "event": "CompletePayment", "user": user}
        if url:
            payload["page"] = {"url": url}
        item = conversion(
            n,
            session_id=session_id,
            event_time=at(day),
            payload=orjson.dumps(payload),
            destinations=destinations,
        )
        item.ledger = ledger(n, day, session_id, event_id=f"CompletePayment-{n}")
        items.append(item)
    assert store.insert_conversions(items, NOW) == [True] * len(items)
    assert store.record_orders([ledger(7, 9, None, event_id=None)], NOW) == [True]
    store.record_collect(SESSIONS, MIRROR)
    for destination, wanted in DELIVERED.items():
        claimed = store.claim(destination, 100, NOW, LEASE)
        ids = [c.outbox_id for c in claimed if int(orjson.loads(c.payload)["n"]) in wanted]
        assert len(ids) == len(wanted)
        store.mark_delivered(ids, NOW, "ref")
        store.release([c.outbox_id for c in claimed if c.outbox_id not in ids], NOW)


class TestPerDestination:
    def test_snapchats_truth_set_legs_and_coverage(self, store: Store) -> None:
        seed(store)
        result = from_store(store, START, END, destination="snapchat")
        assert result.destination == "snapchat"
        assert result.ledger_orders == 7
        assert result.total == Tally(orders=4, pixel_only=2, server_delivered=2, deduplicated=3)
        assert (result.total.recovered, result.total.pixel_gap) == (1, 2)
        assert result.pixel_import is None  # Events Manager imports are TikTok's
        # no "Pixel state" breakdown: the sessions' state is TikTok's Pixel's
        assert list(result.breakdowns) == ["browser", "ios_version", "load_time"]
        assert result.breakdowns["browser"] == {"unknown": Tally(4, 2, 2, 3)}
        daily = {d.day: t.orders for d, t in result.daily if t.orders}
        assert daily == {3: 1, 4: 1, 5: 1, 7: 1}

    def test_google_ads_pairs_its_tag_on_the_order_id(self, store: Store) -> None:
        seed(store)
        result = from_store(store, START, END, destination="google_ads")
        assert result.total == Tally(orders=1, pixel_only=1, server_delivered=1, deduplicated=1)
        assert result.breakdowns["browser"] == {"Chrome": Tally(1, 1, 1, 1)}

    def test_tiktoks_report_is_the_ledgers(self, store: Store) -> None:
        """``--destination tiktok`` is the default report, on the ledger's attribution."""
        seed(store)
        default = from_store(store, START, END)
        assert from_store(store, START, END, destination="tiktok") == default
        assert default.destination == "tiktok"
        assert default.total == Tally(orders=1, pixel_only=0, server_delivered=1, deduplicated=1)
        assert "pixel_status" in default.breakdowns

    def test_an_unknown_destination_names_the_known_ones(self, store: Store) -> None:
        with pytest.raises(KeyError, match="known: tiktok, meta, ga4"):
            from_store(store, START, END, destination="friendster")


class TestCli:
    @pytest.fixture
    def db(self, tmp_path: Path) -> Path:
        path = tmp_path / "bc.db"
        store = SqliteStore(path)
        try:
            seed(store)
        finally:
            store.close()
        return path

    def test_json_equals_the_report(self, db: Path) -> None:
        done = report_cli(
            db, "gap", "--from", "2026-11-01", "--to", "2026-11-30", "--destination",
            "snapchat", "--format", "json",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        data = orjson.loads(done.stdout)
        store = SqliteStore(db)
        try:
            expected = from_store(store, START, END, destination="snapchat").as_dict()
        finally:
            store.close()
        assert data == orjson.loads(orjson.dumps(expected))
        assert data["destination"] == "snapchat"
        assert (data["truth_set"], data["total"]["recovered"]) == (4, 1)

    def test_table_names_the_platform(self, db: Path) -> None:
        done = report_cli(
            db, "gap", "--from", "2026-11-01", "--to", "2026-11-30", "--destination", "reddit"
        )
        assert done.returncode == 0, done.stderr
        assert "Reddit gap report 2026-11-01" in done.stdout
        assert "0 attributed to Reddit" in " ".join(done.stdout.split())

    def test_a_bad_destination_is_an_error_listing_them(self, db: Path) -> None:
        done = report_cli(db, "gap", "--destination", "friendster")
        assert done.returncode != 0
        assert done.stdout == ""
        message = " ".join(done.stderr.split())
        assert "--destination: unknown destination 'friendster'" in message
        assert "(known: tiktok, meta, ga4, google_ads, snapchat, pinterest, reddit)" in message


def test_attribution_rule() -> None:
    """A declared click id (on the conversion or its session) or a declared utm_source."""
    from backchannel.destinations import get

    snap = get("snapchat")
    assert report.attributed(snap, {"ids": {"sc_click_id": "c"}}, {}, ())
    assert report.attributed(snap, {}, {"sc_click_id": "c"}, ())
    assert report.attributed(snap, {}, {}, (None, " SNAPCHAT "))
    assert not report.attributed(snap, {"ttclid": "t"}, {"ttclid": "t"}, ("tiktok",))
    meta = get("meta")
    assert report.attributed(meta, {"fbc": "fb.1.1.x"}, {}, ())
    assert report.attributed(meta, {}, {"fbclid": "x"}, ())
    assert not report.attributed(get("ga4"), {"gclid": "g"}, {"gclid": "g"}, ())


def test_each_property_reads_its_own_orders(store: Store) -> None:
    """Another property with the same order ids, its own Snapchat session, mirror row and
    delivery: neither property's Snapchat report nor dedup verdict moves with the other's
    rows (a mirror row pairs only with an order of its own property)."""
    from backchannel.diagnostics.dedup import dedup_report
    from backchannel.store.base import DEFAULT_PROPERTY

    seed(store)
    before = from_store(store, START, END, destination="snapchat", property_id=DEFAULT_PROPERTY)
    eu = store.create_property("eu", NOW, destinations=("snapchat",))
    assert eu is not None
    item = conversion(
        5,  # order 5: neither leg in the default property
        session_id="eu-s5",
        event_time=at(7),
        payload=orjson.dumps({"n": "5", "user": {}}),
        destinations=("snapchat",),
        property_id=eu,
    )
    item.ledger = LedgerEntry(
        source="api",
        order_id="5",
        order_time=at(7),
        value=1.0,
        currency="EUR",
        event="CompletePayment",
        event_id="CompletePayment-5",
        session_id="eu-s5",
        attributed_tiktok=False,
        evidence=b"{}",
        property_id=eu,
    )
    assert store.insert_conversions([item], NOW) == [True]
    store.record_collect(
        [SessionUpdate("eu-s5", NOW, landing=True, utm_source="snapchat", property_id=eu)],
        [BrowserEvent("eu-s5", "PURCHASE", "CompletePayment-5", NOW, platform="snapchat",
                      property_id=eu)],
    )  # fmt: skip
    after = from_store(store, START, END, destination="snapchat", property_id=DEFAULT_PROPERTY)
    assert after.total == before.total
    mine = from_store(store, START, END, destination="snapchat", property_id=eu)
    assert mine.total == Tally(orders=1, pixel_only=1, server_delivered=0, deduplicated=1)
    everyone = from_store(store, START, END, destination="snapchat")
    assert everyone.total == Tally(orders=5, pixel_only=3, server_delivered=2, deduplicated=4)
    # the dedup view: order 5 is "neither" at Snapchat in the default property, "browser
    # only" in eu's (its own mirror row), never paired across
    day = datetime.fromtimestamp(NOW, UTC).date()
    default = {
        r.order_id: r.verdict("snapchat")
        for r in dedup_report(store, day, day, property_id=DEFAULT_PROPERTY).rows
    }
    assert default["5"] == "neither"
    [eu_row] = dedup_report(store, day, day, property_id=eu).rows
    assert (eu_row.order_id, eu_row.verdict("snapchat")) == ("5", "browser_only")
