"""The Dedup page: per-order, per-destination verdicts and the summaries from a seeded store.

The first seed is TikTok's Pixel mirror (CompletePayment unless said; received 2027-01-14
12:00 + n seconds, so n=14 is the newest; event_id ``CompletePayment-n``); Meta gets rows too
but its Pixel fired nothing (only order 3 is delivered there):

===  =======  =================================================  ==========  ================
n    session  Pixel mirror                                       TikTok      verdict
===  =======  =================================================  ==========  ================
1    sA       CompletePayment-1 in sA                            delivered   both
2    sB       CompletePayment-2 in sB                            pending     browser_only
3    —        —                                                  delivered   server_only
4    sD       ViewContent only (another event name)              dead        neither
5    sE       CompletePayment with id "purchase-xyz-5" in sE     delivered   mismatch (twice)
6    sF       CompletePayment with NO event_id in sF             pending     mismatch
7    sG       CompletePayment-7 and CompletePayment-8 in sG      delivered   both (not a
8    sG       (two orders in one visit: each the other's leg)    delivered   mismatch)
9    —        CompletePayment-9 in sX (found by event_id)        delivered   both
10   sT       a different id in sT; a TEST event                 delivered   excluded
11   sL       Lead without order_id                              delivered   excluded
12   sA       —; received 2027-01-01 (outside the range)         delivered   excluded
13   sM       CompletePayment-13; opted out (no outbox rows)     not sent    unsent (apart)
14   sN       CompletePayment-14; routed to Meta only            not sent    browser_only
===  =======  =================================================  ==========  ================

TikTok's summary over 10 orders (13 is counted apart): both 4 (40%), browser only 2 (20%),
server only 1 (10%), neither 1 (10%), mismatch 2 (20%). Meta's: server only 1, neither 9.

The second seed (:func:`seed_platforms`) has every Pixel's mirror, each platform pairing on its
own key and naming events its own way: see :class:`TestEveryPlatform`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

from backchannel import destinations as registry
from backchannel.diagnostics import dedup as module
from backchannel.diagnostics.dedup import PAGE_SIZE, dedup_report
from backchannel.store import open_store
from backchannel.store.base import BrowserEvent, Dead, SessionUpdate, Store
from hardening import conftest as hardening
from hardening.conftest import StartApp
from store.helpers import LEASE, conversion

# the hardening suite's fixtures: a real gateway on loopback with an admin password set
start_app = hardening.start_app
stack = hardening.stack

START, END = date(2027, 1, 10), date(2027, 1, 15)
BASE = datetime(2027, 1, 14, 12, tzinfo=UTC).timestamp()
BEFORE = datetime(2027, 1, 1, 12, tzinfo=UTC).timestamp()
LATER = datetime(2027, 1, 16, tzinfo=UTC).timestamp()  # the worker's clock: every row is due

#: n -> (session_id, TikTok outcome: delivered | pending | dead | None (no TikTok row))
ORDERS: dict[int, tuple[str | None, str | None]] = {
    1: ("sA", "delivered"),
    2: ("sB", "pending"),
    3: (None, "delivered"),
    4: ("sD", "dead"),
    5: ("sE", "delivered"),
    6: ("sF", "pending"),
    7: ("sG", "delivered"),
    8: ("sG", "delivered"),
    9: (None, "delivered"),
    10: ("sT", "delivered"),
    11: ("sL", "delivered"),
    12: ("sA", "delivered"),
    13: ("sM", None),
    14: ("sN", None),
}
#: the destinations of a conversion with no TikTok row (13: opted out, as ingest stores it)
NOT_TIKTOK = {13: (), 14: ("meta",)}
#: the Pixel mirror: (session_id, event, event_id)
PIXEL: list[tuple[str, str, str | None]] = [
    ("sA", "CompletePayment", "CompletePayment-1"),
    ("sB", "CompletePayment", "CompletePayment-2"),
    ("sD", "ViewContent", "ViewContent-4"),
    ("sE", "CompletePayment", "purchase-xyz-5"),
    ("sF", "CompletePayment", None),
    ("sG", "CompletePayment", "CompletePayment-7"),
    ("sG", "CompletePayment", "CompletePayment-8"),
    ("sX", "CompletePayment", "CompletePayment-9"),
    ("sT", "CompletePayment", "another-id-10"),
    ("sM", "CompletePayment", "CompletePayment-13"),
    ("sN", "CompletePayment", "CompletePayment-14"),
]
EXPECTED = {
    14: "browser_only",
    9: "both",
    8: "both",
    7: "both",
    6: "mismatch",
    5: "mismatch",
    4: "neither",
    3: "server_only",
    2: "browser_only",
    1: "both",
}
COUNTS = {"both": 4, "browser_only": 2, "server_only": 1, "neither": 1, "mismatch": 2}
PERCENTS = {"both": 40.0, "browser_only": 20.0, "server_only": 10.0, "neither": 10.0,
            "mismatch": 20.0}  # fmt: skip
#: Meta's Pixel fired nothing: order 3 (delivered there) is server only, the rest neither
META_COUNTS = {"both": 0, "browser_only": 0, "server_only": 1, "neither": 9, "mismatch": 0}


def payload(n: int, event: str) -> bytes:
    return orjson.dumps({"event": event, "event_id": f"{event}-{n}", "user": {}})


def seed_dedup(store: Store) -> None:
    """Conversions, the Pixel mirror, then each TikTok outbox row driven to its outcome."""
    for n, (session_id, tiktok) in ORDERS.items():
        event = "Lead" if n == 11 else "CompletePayment"
        record = conversion(
            n,
            event=event,
            payload=payload(n, event),
            session_id=session_id,
            order_id=None if n == 11 else str(n),
            test_event_code="TEST10" if n == 10 else None,
            destinations=("tiktok", "meta") if tiktok else NOT_TIKTOK[n],
        )
        received = BEFORE if n == 12 else BASE + n
        assert store.insert_conversions([record], received) == [True]
    sessions = sorted({s for s, _, _ in PIXEL})
    store.record_collect(
        [SessionUpdate(session_id=s, at=BASE, landing=True) for s in sessions],
        [
            BrowserEvent(s, event, event_id, BASE + i)
            for i, (s, event, event_id) in enumerate(PIXEL)
        ],
    )
    wanted = {n: outcome for n, (_, outcome) in ORDERS.items() if outcome}
    claimed = store.claim("tiktok", 100, LATER, LEASE)
    by_n = {int(orjson.loads(c.payload)["event_id"].rsplit("-", 1)[1]): c for c in claimed}
    assert set(by_n) == set(wanted)
    delivered = [by_n[n].outbox_id for n, o in wanted.items() if o == "delivered"]
    store.mark_delivered(delivered, LATER, "ref")
    dead = [Dead(by_n[n].outbox_id, b"{}") for n, o in wanted.items() if o == "dead"]
    store.mark_dead(dead, "permanent: invalid", None, None)
    store.release([by_n[n].outbox_id for n, o in wanted.items() if o == "pending"], LATER)
    # Meta: only order 3 delivered; the rest stay pending
    meta = store.claim("meta", 100, LATER, LEASE)
    three = [c.outbox_id for c in meta if orjson.loads(c.payload)["event_id"].endswith("-3")]
    store.mark_delivered(three, LATER, "ref")
    store.release([c.outbox_id for c in meta if c.outbox_id not in three], LATER)


class TestReport:
    def test_every_verdict(self, store: Store) -> None:
        """Each order's verdict, newest first; test events, order-less and out-of-range
        conversions are not orders of the range."""
        seed_dedup(store)
        report = dedup_report(store, START, END)
        assert report.destinations == ("tiktok", "meta")
        got = [(int(r.order_id), r.verdict("tiktok")) for r in report.rows]
        assert got == list(EXPECTED.items())
        # Meta's Pixel fired nothing: only its server leg counts
        meta = {int(r.order_id): r.verdict("meta") for r in report.rows}
        assert meta == {n: "server_only" if n == 3 else "neither" for n in EXPECTED}

    def test_summary_counts_and_shares(self, store: Store) -> None:
        """The five verdicts partition the base; each share is of that base."""
        seed_dedup(store)
        report = dedup_report(store, START, END)
        assert (report.orders, report.unsent) == (10, 1)
        assert (report.matching, report.pages) == (10, 1)
        assert report.counts == {"tiktok": COUNTS, "meta": META_COUNTS}
        assert {v: report.share("tiktok", v) for v in COUNTS} == PERCENTS
        assert report.mismatches == {"tiktok": 2}

    def test_legs_of_each_order(self, store: Store) -> None:
        """TikTok's browser leg, same event_id and server status, and Meta's status, per order."""
        seed_dedup(store)
        report = dedup_report(store, START, END)
        rows = {int(r.order_id): r.legs["tiktok"] for r in report.rows}
        meta = {int(r.order_id): r.legs["meta"].status for r in report.rows}
        legs = {
            n: (r.browser_seen, r.same_id, r.mismatch, r.browser_id, r.status, meta[n])
            for n, r in rows.items()
        }
        assert legs == {
            1: (True, True, False, None, "delivered", "pending"),
            2: (True, True, False, None, "pending", "pending"),
            3: (False, False, False, None, "delivered", "delivered"),
            4: (False, False, False, None, "dead", "pending"),
            5: (True, False, True, "purchase-xyz-5", "delivered", "pending"),
            6: (True, False, True, None, "pending", "pending"),
            7: (True, True, False, None, "delivered", "pending"),
            8: (True, True, False, None, "delivered", "pending"),
            9: (True, True, False, None, "delivered", "pending"),
            14: (True, True, False, None, None, "pending"),
        }
        assert rows[5].browser_leg == "different id: purchase-xyz-5"
        assert rows[5].advice.startswith("counted twice")
        assert rows[6].browser_leg == "different id: (none sent)"
        assert rows[6].advice.startswith("different ids: the legs cannot pair")
        assert rows[2].advice == "browser leg only: the server leg is not delivered (yet)"
        assert rows[14].advice.endswith("no server leg goes to TikTok (not routed there)")
        assert rows[4].browser_leg == "not seen"

    def test_status_filter(self, store: Store) -> None:
        """status= keeps the orders with that verdict at the destination given (at any when
        none is); the summary stays the whole range's."""
        seed_dedup(store)
        report = dedup_report(store, START, END, status="mismatch", destination="tiktok")
        assert [r.order_id for r in report.rows] == ["6", "5"]
        assert (report.matching, report.orders, report.counts["tiktok"]) == (2, 10, COUNTS)
        # server only: order 3 at TikTok and at Meta; at any destination, 3 is listed once
        at_meta = dedup_report(store, START, END, status="server_only", destination="meta")
        assert [r.order_id for r in at_meta.rows] == ["3"]
        anywhere = dedup_report(store, START, END, status="neither")
        assert [r.order_id for r in anywhere.rows] == ["14", "9", "8", "7", "6", "5", "4", "2", "1"]
        with pytest.raises(ValueError, match="status"):
            dedup_report(store, START, END, status="twice")
        with pytest.raises(ValueError, match="destination"):
            dedup_report(store, START, END, destination="friendster")

    def test_pages_of_fifty_newest_first(self, store: Store) -> None:
        """55 orders make two pages: 50 newest, then the 5 oldest."""
        items = [conversion(n, payload=payload(n, "CompletePayment")) for n in range(55)]
        for n, item in enumerate(items):
            assert store.insert_conversions([item], BASE + n) == [True]
        first = dedup_report(store, START, END)
        second = dedup_report(store, START, END, page=2)
        assert (first.pages, first.matching, len(first.rows)) == (2, 55, PAGE_SIZE)
        assert [r.order_id for r in first.rows[:2]] == ["54", "53"]
        assert [r.order_id for r in second.rows] == ["4", "3", "2", "1", "0"]
        assert dedup_report(store, START, END, page=3).rows == []
        assert first.counts["tiktok"]["neither"] == 55

    def test_pages_cross_days_newest_first(self, store: Store) -> None:
        """Pages run newest first across UTC days (the days before a page skipped by their
        counts, its days read in batches), including an order received exactly at midnight;
        each page is the full read's (``scan=True``) page."""
        midnight = datetime(2027, 1, 13, tzinfo=UTC).timestamp()
        times = [midnight - 3600 + 90 * n for n in range(120)]  # 2027-01-12 23:00 onwards
        items = [conversion(n, payload=payload(n, "CompletePayment")) for n in range(120)]
        for at, item in zip(times, items, strict=True):
            assert store.insert_conversions([item], at) == [True]
        # every third order delivered to TikTok: the filter keeps 40 across both days
        claimed = store.claim("tiktok", 200, LATER, LEASE)
        store.mark_delivered([c.outbox_id for c in claimed if c.conversion_id % 3 == 0], LATER, "r")
        assert times[40] == midnight  # order 40 is the first of 2027-01-13
        newest = [str(n) for n in range(119, -1, -1)]
        pages = [dedup_report(store, START, END, page=n) for n in (1, 2, 3)]
        assert [[r.order_id for r in p.rows] for p in pages] == [
            newest[:50],
            newest[50:100],
            newest[100:],
        ]
        assert [p.pages for p in pages] == [3, 3, 3]
        ids = {int(r.order_id): r.conversion_id for p in pages for r in p.rows}
        delivered = [str(n) for n in range(119, -1, -1) if ids[n] % 3 == 0]
        kept = dedup_report(store, START, END, status="server_only", destination="tiktok")
        assert [r.order_id for r in kept.rows] == delivered
        assert kept.matching == len(delivered) == 40
        for n in (1, 2, 3):
            for status in (None, "server_only", "neither"):
                merged = dedup_report(store, START, END, page=n, status=status)
                scanned = dedup_report(store, START, END, page=n, status=status, scan=True)
                assert merged.to_dict() == scanned.to_dict()


# --- over HTTP ------------------------------------------------------------------------------------
FIGURE = re.compile(r'data-figure="([^"]+)">([^<]*)</span>')
VERDICT = re.compile(r'data-destination="([^"]+)" data-verdict="([^"]+)"')
RANGE = {"from": START.isoformat(), "to": END.isoformat()}


def seeded_app(start_app: StartApp) -> hardening.App:
    app = start_app()
    store = open_store(app.settings.database_url)
    try:
        seed_dedup(store)
    finally:
        store.close()
    return app


def admin_headers(app: hardening.App) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.admin_key}"}


class TestHttp:
    def test_auth_required(self, start_app: StartApp) -> None:
        """Logged out: the page redirects to the login form, the JSON answers 401."""
        app = start_app()
        page = app.http.get("/admin/dedup", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?next=/admin/dedup")
        assert app.http.get("/admin/api/dedup").status_code == 401

    def test_json_twin_equals_the_report(self, start_app: StartApp) -> None:
        """The JSON (admin API key) is the report, summary and rows, over the same store."""
        app = seeded_app(start_app)
        response = app.http.get("/admin/api/dedup", params=RANGE, headers=admin_headers(app))
        assert response.status_code == 200, response.text
        store = open_store(app.settings.database_url)
        try:
            expected = dedup_report(store, START, END).to_dict()
        finally:
            store.close()
        data: dict[str, Any] = response.json()
        assert data == orjson.loads(orjson.dumps(expected))
        assert {v: s["count"] for v, s in data["summary"]["tiktok"].items()} == COUNTS
        assert {v: s["count"] for v, s in data["summary"]["meta"].items()} == META_COUNTS
        got = [(int(r["order_id"]), r["verdicts"]["tiktok"]) for r in data["rows"]]
        assert got == list(EXPECTED.items())

    def test_page_figures_and_verdicts(self, start_app: StartApp) -> None:
        """The page shows the summary's figures, every order's verdict and the mismatch alarm."""
        app = seeded_app(start_app)
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/dedup", params=RANGE)
            mismatches = client.get(
                "/admin/dedup", params={**RANGE, "status": "mismatch", "destination": "tiktok"}
            )
        assert page.status_code == 200, page.text
        shown = dict(FIGURE.findall(page.text))
        assert (shown["orders"], shown["unsent"]) == ("10", "1")
        for verdict, count in COUNTS.items():
            assert shown[f"dedup.tiktok.{verdict}.count"] == str(count)
            assert shown[f"dedup.tiktok.{verdict}"] == str(PERCENTS[verdict])
            assert shown[f"dedup.meta.{verdict}.count"] == str(META_COUNTS[verdict])
        cells = VERDICT.findall(page.text)
        assert [v for d, v in cells if d == "tiktok"] == list(EXPECTED.values())
        assert [v for d, v in cells if d == "meta"].count("server_only") == 1
        assert 'role="alert"' in page.text
        assert "counts those orders twice" in page.text
        assert "at TikTok (2)" in page.text
        assert "different id: purchase-xyz-5" in page.text
        assert mismatches.status_code == 200
        assert VERDICT.findall(mismatches.text) == [
            ("tiktok", "mismatch"),
            ("meta", "neither"),
            ("tiktok", "mismatch"),
            ("meta", "neither"),
        ]
        assert dict(FIGURE.findall(mismatches.text))["matching"] == "2"

    def test_no_alarm_without_mismatch(self, start_app: StartApp) -> None:
        """An empty range shows zero orders, no shares and no alarm."""
        app = seeded_app(start_app)
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/dedup", params={"from": "2027-02-01", "to": "2027-02-02"})
        assert page.status_code == 200
        shown = dict(FIGURE.findall(page.text))
        assert shown["orders"] == "0"
        assert not any(key.startswith("dedup.") for key in shown)  # no destination covered
        assert 'role="alert"' not in page.text

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"from": "01/10/2027"}, "from"),
            ({"to": "2027-02-30"}, "to"),
            ({"status": "twice"}, "status"),
            ({"destination": "friendster"}, "destination"),
            ({"page": "0"}, "page"),
            ({"page": "-1"}, "page"),
            ({"page": "²"}, "page"),
            ({"page": "9" * 5000}, "page"),
            ({"page": "1.5"}, "page"),
        ],
    )
    def test_bad_params_are_400_naming_the_field(
        self, start_app: StartApp, params: dict[str, str], field: str
    ) -> None:
        """A bad parameter is a 400 naming it, in JSON and on the page (never a 500)."""
        app = start_app()
        response = app.http.get("/admin/api/dedup", params=params, headers=admin_headers(app))
        assert response.status_code == 400, response.text
        error = response.json()["errors"][0]
        assert error["path"] == field
        assert error["reason"]
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/dedup", params=params)
        assert page.status_code == 400
        assert f"{field}: " in page.text

    def test_page_links_keep_the_filter(
        self, start_app: StartApp, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The pager's links carry the range and status (pages of 2 for the test)."""
        monkeypatch.setattr(module, "PAGE_SIZE", 2)
        app = seeded_app(start_app)
        with app.client() as client:
            assert app.login(client).status_code == 303
            params = {**RANGE, "status": "both", "destination": "tiktok", "page": "2"}
            page = client.get("/admin/dedup", params=params)
        assert [v for d, v in VERDICT.findall(page.text) if d == "tiktok"] == ["both", "both"]
        shown = dict(FIGURE.findall(page.text))
        assert (shown["page"], shown["pages"]) == ("2", "2")
        assert (
            'href="/admin/dedup?from=2027-01-10&amp;to=2027-01-15&amp;page=1&amp;status=both'
            '&amp;destination=tiktok"' in page.text
        )


# --- every platform: its own Pixel, its own key, its own event names --------------------------
#: the orders of the second seed: n -> session (each goes to every destination)
PLATFORM_ORDERS = {1: "S1", 2: "S2", 3: "S3", 4: "S3"}
#: every Pixel's mirror: (session, platform, event as the Pixel names it, id it sent)
PLATFORM_PIXELS: list[tuple[str, str, str, str | None]] = [
    # order 1: each Pixel fired its purchase with the id its platform pairs on
    ("S1", "tiktok", "CompletePayment", "CompletePayment-P1"),
    ("S1", "meta", "Purchase", "CompletePayment-P1"),
    ("S1", "google", "purchase", "P1"),  # gtag's transaction_id: the order id
    ("S1", "snapchat", "PURCHASE", "CompletePayment-P1"),
    ("S1", "pinterest", "checkout", "CompletePayment-P1"),
    ("S1", "reddit", "Purchase", "CompletePayment-P1"),
    # order 2: fbq without eventID, snaptr and rdt with ids of their own, gtag with the event
    # id instead of the order id (GA4's purchase: a mismatch; Google Ads' tag fires
    # "conversion", so a "purchase" is not its), page events without ids (not purchases)
    ("S2", "meta", "Purchase", None),
    ("S2", "snapchat", "PURCHASE", "snap-random-1"),
    ("S2", "google", "purchase", "CompletePayment-P2"),
    ("S2", "pinterest", "pagevisit", None),
    ("S2", "reddit", "PageVisit", None),
    ("S2", "reddit", "Purchase", "rdt-other"),
    # orders 3 and 4, one visit: each call is one order's (the other's id is a stored order's)
    ("S3", "pinterest", "checkout", "CompletePayment-P3"),
    ("S3", "pinterest", "checkout", "CompletePayment-P4"),
    ("S3", "google", "purchase", "P3"),
    ("S3", "google", "purchase", "P4"),
    ("S3", "reddit", "Purchase", "CompletePayment-P4"),
]
#: n -> destination -> outcome, where not delivered
PLATFORM_OUTCOMES = {(2, "meta"): "pending", (4, "snapchat"): "dead"}
#: hand-written: every order's verdict at every destination
PLATFORM_EXPECTED = {
    4: {
        "tiktok": "server_only",
        "meta": "server_only",
        "ga4": "both",
        "google_ads": "both",
        "snapchat": "neither",
        "pinterest": "both",
        "reddit": "both",
    },
    3: {
        "tiktok": "server_only",
        "meta": "server_only",
        "ga4": "both",
        "google_ads": "both",
        "snapchat": "server_only",
        "pinterest": "both",
        "reddit": "server_only",
    },
    2: {
        "tiktok": "server_only",
        "meta": "mismatch",
        "ga4": "mismatch",
        "google_ads": "server_only",
        "snapchat": "mismatch",
        "pinterest": "server_only",
        "reddit": "mismatch",
    },
    1: dict.fromkeys(registry.NAMES, "both"),
}


def seed_platforms(store: Store) -> None:
    """Four orders to every destination, every Pixel's mirror, each outbox row driven."""
    # a connection of each destination in the default property (TikTok's and Meta's exist)
    store.ensure_connections(registry.NAMES, BASE)
    for n, session_id in PLATFORM_ORDERS.items():
        record = conversion(
            f"P{n}",
            payload=orjson.dumps({"event": "CompletePayment", "event_id": f"CompletePayment-P{n}"}),
            session_id=session_id,
            destinations=registry.NAMES,
        )
        assert store.insert_conversions([record], BASE + n) == [True]
    store.record_collect(
        [SessionUpdate(session_id=s, at=BASE, landing=True) for s in ("S1", "S2", "S3")],
        [
            BrowserEvent(s, event, event_id, BASE + i, platform=platform)
            for i, (s, platform, event, event_id) in enumerate(PLATFORM_PIXELS)
        ],
    )
    for destination in registry.NAMES:
        claimed = store.claim(destination, 100, LATER, LEASE)
        by_n = {int(orjson.loads(c.payload)["event_id"][-1]): c.outbox_id for c in claimed}
        assert set(by_n) == set(PLATFORM_ORDERS)
        outcome = {n: PLATFORM_OUTCOMES.get((n, destination), "delivered") for n in by_n}
        store.mark_delivered([by_n[n] for n, o in outcome.items() if o == "delivered"], LATER, "r")
        dead = [Dead(by_n[n], b"{}") for n, o in outcome.items() if o == "dead"]
        if dead:
            store.mark_dead(dead, "permanent: invalid", None, None)
        store.release([by_n[n] for n, o in outcome.items() if o == "pending"], LATER)


class TestEveryPlatform:
    def test_one_verdict_per_order_per_platform(self, store: Store) -> None:
        """Each destination pairs its own Pixel's mirror rows with its own key: the event_id
        (TikTok, Meta, Snapchat, Pinterest, Reddit) or the order id (GA4 and Google Ads, who
        share Google's tag); names are each Pixel's own."""
        seed_platforms(store)
        report = dedup_report(store, START, END)
        assert report.destinations == registry.NAMES
        assert {int(r.order_id[1:]): r.verdicts for r in report.rows} == PLATFORM_EXPECTED
        assert [r.order_id for r in report.rows] == ["P4", "P3", "P2", "P1"]

    def test_the_other_ids_are_named(self, store: Store) -> None:
        """A mismatch names the id the Pixel sent instead (None when it sent none)."""
        seed_platforms(store)
        legs = next(r for r in dedup_report(store, START, END).rows if r.order_id == "P2").legs
        assert {d: legs[d].browser_id for d in ("meta", "ga4", "snapchat", "reddit")} == {
            "meta": None,
            "ga4": "CompletePayment-P2",
            "snapchat": "snap-random-1",
            "reddit": "rdt-other",
        }
        assert legs["meta"].browser_leg == "different id: (none sent)"
        assert legs["meta"].advice.startswith("different ids: the legs cannot pair")
        assert legs["snapchat"].advice == (
            "counted twice by Snapchat: the Pixel and the server sent different ids"
        )
        assert (legs["ga4"].dedup_id, legs["meta"].dedup_id) == ("P2", "CompletePayment-P2")

    def test_summary_per_destination(self, store: Store) -> None:
        """Each destination's five counts partition the four orders."""
        seed_platforms(store)
        report = dedup_report(store, START, END)
        for destination in registry.NAMES:
            expected = dict.fromkeys(("both", "browser_only", "server_only", "neither",
                                      "mismatch"), 0)  # fmt: skip
            for verdicts in PLATFORM_EXPECTED.values():
                expected[verdicts[destination]] += 1
            assert report.counts[destination] == expected
            assert sum(report.counts[destination].values()) == report.orders == 4
        assert report.mismatches == {"meta": 1, "ga4": 1, "snapchat": 1, "reddit": 1}
        by_status = dedup_report(store, START, END, status="mismatch", destination="ga4")
        assert [r.order_id for r in by_status.rows] == ["P2"]

    def test_json_twin_and_page(self, start_app: StartApp) -> None:
        """The JSON carries every leg; the page one cell per order and destination, and the
        alarm names each destination that would count an order twice."""
        app = start_app()
        store = open_store(app.settings.database_url)
        try:
            seed_platforms(store)
        finally:
            store.close()
        data = app.http.get("/admin/api/dedup", params=RANGE, headers=admin_headers(app)).json()
        assert data["destinations"] == list(registry.NAMES)
        assert {int(r["order_id"][1:]): r["verdicts"] for r in data["rows"]} == PLATFORM_EXPECTED
        p1 = next(r for r in data["rows"] if r["order_id"] == "P1")
        assert p1["legs"]["google_ads"]["dedup_id"] == "P1"
        assert p1["legs"]["reddit"]["dedup_id"] == "CompletePayment-P1"
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/dedup", params=RANGE)
        cells = VERDICT.findall(page.text)
        assert cells == [(d, v) for n in (4, 3, 2, 1) for d, v in PLATFORM_EXPECTED[n].items()]
        assert "at Meta (1), GA4 (1), Snapchat (1), Reddit (1)" in page.text
