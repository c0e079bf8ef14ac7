"""The Dedup page: per-order verdicts and the summary from a seeded store, exactly.

The seed (CompletePayment unless said; received 2027-01-14 12:00 + n seconds, so n=14 is the
newest; event_id ``CompletePayment-n``):

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

Summary over 10 orders (13 is counted apart): both 4 (40%), browser only 2 (20%), server only
1 (10%), neither 1 (10%), mismatch 2 (20%).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

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
        assert [(int(r.order_id), r.verdict) for r in report.rows] == list(EXPECTED.items())

    def test_summary_counts_and_shares(self, store: Store) -> None:
        """The five verdicts partition the base; each share is of that base."""
        seed_dedup(store)
        report = dedup_report(store, START, END)
        assert (report.orders, report.unsent, report.capped) == (10, 1, False)
        assert (report.matching, report.pages) == (10, 1)
        assert report.counts == COUNTS
        assert {v: report.share(v) for v in COUNTS} == PERCENTS

    def test_legs_of_each_order(self, store: Store) -> None:
        """Browser leg, same event_id, server status (TikTok and Meta) per order."""
        seed_dedup(store)
        rows = {int(r.order_id): r for r in dedup_report(store, START, END).rows}
        legs = {
            n: (r.browser_seen, r.same_id, r.mismatch, r.browser_id, r.tiktok, r.meta)
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
        assert rows[6].advice.startswith("different event_ids: the legs cannot pair")
        assert rows[2].advice == "browser leg only: the server leg is not delivered (yet)"
        assert rows[14].advice.endswith("no server leg goes to TikTok (not routed there)")
        assert rows[4].browser_leg == "not seen"

    def test_status_filter(self, store: Store) -> None:
        """status= keeps one verdict in the table; the summary stays the whole range's."""
        seed_dedup(store)
        report = dedup_report(store, START, END, status="mismatch")
        assert [r.order_id for r in report.rows] == ["6", "5"]
        assert (report.matching, report.orders, report.counts) == (2, 10, COUNTS)
        with pytest.raises(ValueError, match="status"):
            dedup_report(store, START, END, status="twice")

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
        assert first.counts["neither"] == 55

    def test_cap(self, store: Store) -> None:
        """Over the cap, only the latest orders are read and the report says so."""
        seed_dedup(store)
        report = dedup_report(store, START, END, cap=3)
        # read: 14, 13 (unsent: apart), 9
        assert (report.capped, report.orders, report.unsent) == (True, 2, 1)
        assert [r.order_id for r in report.rows] == ["14", "9"]


# --- over HTTP ------------------------------------------------------------------------------------
FIGURE = re.compile(r'data-figure="([^"]+)">([^<]*)</span>')
VERDICT = re.compile(r'data-verdict="([^"]+)"')
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
        assert {v: s["count"] for v, s in data["summary"].items()} == COUNTS
        assert [(int(r["order_id"]), r["verdict"]) for r in data["rows"]] == list(EXPECTED.items())

    def test_page_figures_and_verdicts(self, start_app: StartApp) -> None:
        """The page shows the summary's figures, every order's verdict and the mismatch alarm."""
        app = seeded_app(start_app)
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/dedup", params=RANGE)
            mismatches = client.get("/admin/dedup", params={**RANGE, "status": "mismatch"})
        assert page.status_code == 200, page.text
        shown = dict(FIGURE.findall(page.text))
        assert (shown["orders"], shown["unsent"]) == ("10", "1")
        for verdict, count in COUNTS.items():
            assert shown[f"dedup.{verdict}.count"] == str(count)
            assert shown[f"dedup.{verdict}"] == str(PERCENTS[verdict])
        assert VERDICT.findall(page.text) == list(EXPECTED.values())
        assert 'role="alert"' in page.text
        assert "counts those orders twice" in page.text
        assert "different id: purchase-xyz-5" in page.text
        assert mismatches.status_code == 200
        assert VERDICT.findall(mismatches.text) == ["mismatch", "mismatch"]
        assert dict(FIGURE.findall(mismatches.text))["matching"] == "2"

    def test_no_alarm_without_mismatch(self, start_app: StartApp) -> None:
        """An empty range shows zero orders, no shares and no alarm."""
        app = seeded_app(start_app)
        with app.client() as client:
            assert app.login(client).status_code == 303
            page = client.get("/admin/dedup", params={"from": "2027-02-01", "to": "2027-02-02"})
        assert page.status_code == 200
        shown = dict(FIGURE.findall(page.text))
        assert (shown["orders"], shown["dedup.both"]) == ("0", "—")
        assert 'role="alert"' not in page.text

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"from": "01/10/2027"}, "from"),
            ({"to": "2027-02-30"}, "to"),
            ({"status": "twice"}, "status"),
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
            page = client.get("/admin/dedup", params={**RANGE, "status": "both", "page": "2"})
        assert VERDICT.findall(page.text) == ["both", "both"]
        shown = dict(FIGURE.findall(page.text))
        assert (shown["page"], shown["pages"]) == ("2", "2")
        assert (
            'href="/admin/dedup?from=2027-01-10&amp;to=2027-01-15&amp;page=1&amp;status=both"'
            in page.text
        )
