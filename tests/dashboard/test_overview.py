"""The overview: every figure from a seeded store, exactly, on both backends; then the page.

The seed (times UTC; A = 2027-01-13 10:00, B = 2027-01-14 09:00; the range is Jan 13–14):

====  ===============  ==========  ===============================  ==========================
n     event            received    tiktok                           meta
====  ===============  ==========  ===============================  ==========================
7     CompletePayment  Jan 10      delivered Jan 10 (out of range)  delivered Jan 10
1     CompletePayment  A           delivered A+2 s                  delivered A+10 s
2     CompletePayment  A           delivered A+4 s                  dead (HTML in its answer)
3     ViewContent      A           retrying, next try B+10 h        delivered A+30 s
4     CompletePayment  B           delivered B+60 s                 expired
5     Lead             B           in flight                        pending, never tried
6     CompletePayment  B, TEST     delivered B+5 s (test)           dead (test)
====  ===============  ==========  ===============================  ==========================
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backchannel.diagnostics.overview import (
    ErrorRow,
    Latency,
    bucket_labels,
    nearest_rank,
    overview,
)
from backchannel.report import time_range
from backchannel.store import open_store
from backchannel.store.base import Claimed, Dead, Store
from backchannel.web.dashboard.overview import figure_keys
from dashboard.helpers import PASSWORD, Gateway, seeded_gateway
from store.helpers import LEASE, conversion

D0, D1 = date(2027, 1, 13), date(2027, 1, 14)
DESTINATIONS = ("tiktok", "meta")
#: the platform's answer of the retrying row: longer than the 500-character excerpt
LONG_ANSWER = '{"code": 50000, "message": "' + "x" * 600 + '"}'
HOSTILE_ANSWER = '{"error": {"message": "<script>alert(1)</script>"}}'
DEAD_BODY = {"event": "CompletePayment", "event_id": "CompletePayment-2", "user": {"em": "a" * 64}}


def at(day: date, hours: float = 0.0) -> float:
    """Unix time of ``day`` 00:00 UTC plus ``hours``."""
    return time_range(day, day)[0] + hours * 3600


A, B = at(D0, 10), at(D1, 9)


def by_n(claimed: list[Claimed]) -> dict[int, int]:
    """Conversion number -> outbox id of a claim (the helper's payload is ``{"n": ...}``)."""
    return {int(orjson.loads(c.payload)["n"]): c.outbox_id for c in claimed}


def seed(store: Store) -> None:
    """The table in the module docstring, through the Store API with chosen clock values."""
    j10 = at(date(2027, 1, 10), 12)
    assert store.insert_conversions([conversion(7)], j10) == [True]
    for destination in DESTINATIONS:
        ids = by_n(store.claim(destination, 10, j10 + 1, LEASE))
        store.mark_delivered([ids[7]], j10 + 2, "ref")

    store.insert_conversions([conversion(1), conversion(2), conversion(3, event="ViewContent")], A)
    tiktok = by_n(store.claim("tiktok", 10, A + 1, LEASE))
    meta = by_n(store.claim("meta", 10, A + 1, LEASE))
    assert sorted(tiktok) == sorted(meta) == [1, 2, 3]
    store.mark_delivered([tiktok[1]], A + 2, "ref")
    store.mark_delivered([tiktok[2]], A + 4, "ref")
    store.mark_retry([tiktok[3]], B + 10 * 3600, "HTTP 500: 50000 system busy", LONG_ANSWER)
    store.mark_delivered([meta[1]], A + 10, "ref")
    store.mark_dead(
        [Dead(meta[2], orjson.dumps(DEAD_BODY))],
        "Invalid parameter (#100): em is not a valid hash",
        HOSTILE_ANSWER,
        None,
    )
    store.mark_delivered([meta[3]], A + 30, "ref")

    store.insert_conversions(
        [
            conversion(4),
            conversion(5, event="Lead"),
            conversion(6, test_event_code="TEST42"),
        ],
        B,
    )
    tiktok = by_n(store.claim("tiktok", 10, B + 1, LEASE))
    meta = by_n(store.claim("meta", 10, B + 1, LEASE))
    assert sorted(tiktok) == sorted(meta) == [4, 5, 6]
    store.mark_delivered([tiktok[4]], B + 60, "ref")
    store.mark_delivered([tiktok[6]], B + 5, "ref")  # a test event: in no figure
    store.mark_expired([meta[4]], "older than meta's 7-day window; not sent")
    store.release([meta[5]], B + 1)
    store.mark_dead(
        [Dead(meta[6], b'{"event": "Purchase"}')], "test code refused", '{"error": {}}', None
    )
    # refused source input: two in the range (newest first on the page), one before it
    store.record_rejection(
        "shopify",
        orjson.dumps(
            {
                "error": "unauthorized",
                "errors": [{"path": "X-Shopify-Hmac-Sha256", "reason": "bad"}],
            }
        ),
        A + 5,
        delivery_id="wh-1",
    )
    store.record_rejection(
        "csv",
        orjson.dumps(
            {
                "error": "invalid_rows",
                "errors": [
                    {"line": 3, "path": "value", "reason": "must not be negative"},
                    {"line": 4, "path": "currency", "reason": "unknown"},
                ],
            }
        ),
        B + 5,
    )
    store.record_rejection("stripe", b'{"error": "x", "errors": []}', at(date(2027, 1, 10)))


# --- the data function, on both backends --------------------------------------------------------
class TestPercentiles:
    def test_nearest_rank_takes_observed_values(self) -> None:
        """Nearest rank: the value at rank ceil(p/100 × n), never an interpolation."""
        values = [float(v) for v in range(1, 101)]
        assert nearest_rank(values, 50) == 50.0
        assert nearest_rank(values, 90) == 90.0
        assert nearest_rank(values, 99) == 99.0
        assert nearest_rank([2.0, 4.0, 60.0], 50) == 4.0
        assert nearest_rank([2.0, 4.0, 60.0], 90) == 60.0  # interpolation would say 48.8
        assert nearest_rank([7.0], 99) == 7.0
        assert nearest_rank([], 50) is None

    def test_buckets_are_hours_for_one_day_and_days_otherwise(self) -> None:
        """One day: 24 hourly buckets; a longer range: one bucket per UTC day."""
        kind, width, labels = bucket_labels(D0, D0)
        assert (kind, width, len(labels)) == ("hour", 3600, 24)
        assert labels[0] == "2027-01-13 00:00"
        assert labels[-1] == "2027-01-13 23:00"
        assert bucket_labels(D0, D1) == ("day", 86400, ["2027-01-13", "2027-01-14"])


class TestOverviewFigures:
    def test_every_figure_of_a_two_day_range(self, store: Store) -> None:
        """Received, delivered, state, latency and last errors are exactly the seed's."""
        seed(store)
        data = overview(store, D0, D1, DESTINATIONS)
        assert data.bucket == "day"
        assert data.buckets == ["2027-01-13", "2027-01-14"]
        assert data.destinations == ["tiktok", "meta"]
        assert data.received == {
            "CompletePayment": [2, 1],
            "Lead": [0, 1],
            "ViewContent": [1, 0],
        }
        assert data.received_total == 4 + 1
        assert data.test_events == 1
        assert data.refused == 2
        assert [(r.source, r.delivery_id, r.error, r.summary) for r in data.last_refused] == [
            ("csv", None, "invalid_rows", "line 3: value: must not be negative (+1 more)"),
            ("shopify", "wh-1", "unauthorized", "X-Shopify-Hmac-Sha256: bad"),
        ]
        assert data.delivered == {
            "tiktok": {"CompletePayment": [2, 1]},
            "meta": {"CompletePayment": [1, 0], "ViewContent": [1, 0]},
        }
        assert (data.delivered_total("tiktok"), data.delivered_total("meta")) == (3, 2)
        assert data.queue == {"tiktok": 2, "meta": 1}  # n3 pending + n5 in flight; n5 pending
        assert data.retrying == {"tiktok": 1, "meta": 0}
        assert data.dead == {"tiktok": 0, "meta": 1}  # the dead test event is not counted
        assert data.expired == {"tiktok": 0, "meta": 1}
        assert data.latency == {
            "tiktok": Latency(base=3, p50=4.0, p90=60.0, p99=60.0, max=60.0),
            "meta": Latency(base=2, p50=10.0, p90=30.0, p99=30.0, max=30.0),
        }
        ids = dict(
            store.read(
                "SELECT c.event_id || '/' || o.destination, o.id FROM outbox o"
                " JOIN conversions c ON c.id = o.conversion_id"
            )
        )
        assert data.last_errors == [
            ErrorRow(
                ids["ViewContent-3/tiktok"],
                "tiktok",
                "ViewContent",
                "ViewContent-3",
                "pending",
                1,
                B + 10 * 3600,
                "HTTP 500: 50000 system busy",
                LONG_ANSWER[:499] + "…",
            ),
            ErrorRow(
                ids["CompletePayment-4/meta"],
                "meta",
                "CompletePayment",
                "CompletePayment-4",
                "expired",
                1,
                B,
                "older than meta's 7-day window; not sent",
                None,
            ),
            ErrorRow(
                ids["CompletePayment-2/meta"],
                "meta",
                "CompletePayment",
                "CompletePayment-2",
                "dead",
                1,
                A,
                "Invalid parameter (#100): em is not a valid hash",
                HOSTILE_ANSWER,
            ),
        ]
        assert len(data.last_errors[0].response or "") == 500

    def test_one_day_is_bucketed_per_hour(self, store: Store) -> None:
        """A one-day range puts each count in its UTC hour."""
        seed(store)
        data = overview(store, D0, D0, DESTINATIONS)
        assert data.bucket == "hour"
        ten = [0] * 24
        ten[10] = 1
        assert data.received == {"CompletePayment": [2 * v for v in ten], "ViewContent": ten}
        assert data.delivered == {
            "tiktok": {"CompletePayment": [2 * v for v in ten]},
            "meta": {"CompletePayment": ten, "ViewContent": ten},
        }
        assert data.test_events == 0
        assert data.latency["tiktok"] == Latency(base=2, p50=2.0, p90=4.0, p99=4.0, max=4.0)
        assert data.latency["meta"] == Latency(base=2, p50=10.0, p90=30.0, p99=30.0, max=30.0)

    def test_bucket_edges_are_half_open(self, store: Store) -> None:
        """A conversion at 00:00:00 belongs to that day; 23:59:59.5 to the day before."""
        store.insert_conversions([conversion(1)], at(D1))
        store.insert_conversions([conversion(2)], at(D1) - 0.5)
        store.insert_conversions([conversion(3)], at(D1, 24))  # next day: outside
        data = overview(store, D0, D1, DESTINATIONS)
        assert data.received == {"CompletePayment": [1, 1]}
        hours = overview(store, D1, D1, DESTINATIONS).received["CompletePayment"]
        assert hours[0] == 1
        assert sum(hours) == 1

    def test_last_errors_are_ordered_by_when_they_failed(self, store: Store) -> None:
        """A retry due tomorrow that failed first comes after a dead letter that failed later:
        the order is outbox.failed_at, not due_at."""
        store.insert_conversions([conversion(1), conversion(2)], A)
        ids = by_n(store.claim("tiktok", 10, A + 1, LEASE))
        store.mark_retry([ids[1]], A + 86_400, "HTTP 503", None, failed_at=A + 5)
        store.mark_dead([Dead(ids[2], b"{}")], "40002", None, None, failed_at=A + 9)
        data = overview(store, D0, D0, DESTINATIONS)
        assert [(e.event_id, e.due_at) for e in data.last_errors] == [
            ("CompletePayment-2", A + 9),
            ("CompletePayment-1", A + 5),
        ]

    def test_empty_store_lists_configured_destinations_with_zeros(self, store: Store) -> None:
        """No data: zeros per configured destination and no latency (None, base 0)."""
        data = overview(store, D0, D1, DESTINATIONS)
        assert data.received == {}
        assert data.received_total == 0
        assert data.queue == {"tiktok": 0, "meta": 0}
        assert data.latency["meta"] == Latency(0, None, None, None, None)
        assert data.last_errors == []

    def test_json_twin_holds_the_same_figures(self, store: Store) -> None:
        """to_json() carries every figure (the API and the browser test read it)."""
        seed(store)
        data = overview(store, D0, D1, DESTINATIONS)
        doc = orjson.loads(orjson.dumps(data.to_json()))
        assert doc["totals"] == {
            "received": 5,
            "test_events": 1,
            "delivered": {"tiktok": 3, "meta": 2},
            "queue": {"tiktok": 2, "meta": 1},
            "retrying": {"tiktok": 1, "meta": 0},
            "dead": {"tiktok": 0, "meta": 1},
            "expired": {"tiktok": 0, "meta": 1},
        }
        assert doc["latency"]["tiktok"] == {
            "base": 3,
            "p50": 4.0,
            "p90": 60.0,
            "p99": 60.0,
            "max": 60.0,
        }
        assert [e["event_id"] for e in doc["last_errors"]] == [
            "ViewContent-3",
            "CompletePayment-4",
            "CompletePayment-2",
        ]


# --- the page and its JSON twin over real HTTP -------------------------------------------------
class Running(Gateway):
    """The seeded gateway, with what these tests read back."""

    def expected(self, start: date, end: date) -> Any:
        store = open_store(self.settings.database_url)
        try:
            return overview(store, start, end, DESTINATIONS)
        finally:
            store.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    """A gateway (no worker) on a seeded SQLite store, with an admin key and a password."""
    with seeded_gateway(tmp_path, seed) as gw:
        yield Running(gw.url, gw.settings, gw.admin_key, gw.http)


FIGURE = re.compile(r'<span class="figure" data-figure="([^"]+)">([^<]*)</span>')


def figures(html: str) -> dict[str, str]:
    return dict(FIGURE.findall(html))


def shown(value: Any) -> str:
    return "—" if value is None else str(value)


class TestOverviewPage:
    def test_page_needs_an_admin(self, running: Running) -> None:
        """Logged out: the page redirects to /login, the JSON answers 401."""
        page = running.http.get("/admin", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login?next=/admin")
        assert running.http.get("/admin/api/overview").status_code == 401

    def test_page_figures_equal_the_data_function(self, running: Running) -> None:
        """Every total, latency and bucket figure on the page is the data function's."""
        page = running.http.get("/admin?from=2027-01-13&to=2027-01-14", headers=running.admin)
        assert page.status_code == 200, page.text
        found = figures(page.text)
        data = running.expected(D0, D1)
        for key, value in figure_keys(data).items():
            assert found[key] == shown(value), key
        assert found["received"] == "5"
        assert found["test_events"] == "1"
        assert found["latency.tiktok.p90"] == "60.0"
        assert found["received.CompletePayment.2027-01-13"] == "2"
        assert found["received.Lead.2027-01-14"] == "1"
        assert found["received.ViewContent.total"] == "1"
        assert found["delivered.meta.ViewContent.2027-01-13"] == "1"
        assert found["delivered.tiktok.CompletePayment.total"] == "3"
        assert 'href="/admin/test-events"' in page.text
        assert "tiktok: based on all 3 deliveries" in page.text
        assert found["refused"] == "2"
        refused = page.text.split('data-testid="refused"', 1)[1].split("</table>", 1)[0]
        assert "line 3: value: must not be negative (+1 more)" in refused
        # no token on either destination: the page says events reach no platform
        assert "SANDBOX MODE: tiktok and meta have no token" in page.text

    def test_chart_bars_are_the_daily_totals(self, running: Running) -> None:
        """The over-time chart has one bar per day and leg, valued as the tables' totals."""
        page = running.http.get("/admin?from=2027-01-13&to=2027-01-14", headers=running.admin)
        data = running.expected(D0, D1)
        chart = page.text.split('data-testid="overview-chart"', 1)[1].split("</figure>", 1)[0]
        bars = re.findall(
            r'data-label="([^"]+)" data-day="([^"]+)" data-days="1" '
            r'data-value="(\d+)"',
            chart,
        )
        expected = []
        for label, counts in [
            ("Received", data.received),
            *((f"Delivered to {d}", data.delivered.get(d, {})) for d in data.destinations),
        ]:
            for i, day in enumerate(data.buckets):
                expected.append((label, day, str(sum(c[i] for c in counts.values()))))
        assert bars == expected
        assert ("Received", "2027-01-13", "3") in bars  # not vacuous: the seed's figures
        one_day = running.http.get("/admin?from=2027-01-13&to=2027-01-13", headers=running.admin)
        assert 'data-testid="overview-chart"' not in one_day.text  # hours: the table only

    def test_last_errors_are_escaped_and_cut(self, running: Running) -> None:
        """The platform's answer is shown escaped and at most 500 characters long."""
        page = running.http.get("/admin?from=2027-01-13&to=2027-01-14", headers=running.admin)
        assert "<script>alert(1)</script>" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert "x" * 600 not in page.text
        assert "Invalid parameter (#100): em is not a valid hash" in page.text
        table = page.text.split('data-testid="last-errors"', 1)[1]
        order = [
            table.index(e) for e in ("ViewContent-3", "CompletePayment-4", "CompletePayment-2")
        ]
        assert order == sorted(order)

    def test_json_twin_equals_the_data_function(self, running: Running) -> None:
        """GET /admin/api/overview answers the data function's figures for the range."""
        response = running.http.get(
            "/admin/api/overview", params={"from": "2027-01-13", "to": "2027-01-14"},
            headers=running.admin,
        )  # fmt: skip
        assert response.status_code == 200
        assert response.json() == orjson.loads(orjson.dumps(running.expected(D0, D1).to_json()))

    @pytest.mark.parametrize(
        ("query", "path", "reason"),
        [
            ("from=2027-13-01", "from", "not a date"),
            ("to=yesterday", "to", "not a date"),
            ("from=2027-01-14&to=2027-01-13", "from", "after to"),
            ("from=2020-01-01&to=2027-01-13", "from", "longer than 366 days"),
        ],
    )
    def test_bad_range_is_a_400_naming_the_parameter(
        self, running: Running, query: str, path: str, reason: str
    ) -> None:
        """A bad from/to answers 400 naming the parameter, on the page and in the JSON."""
        page = running.http.get(f"/admin?{query}", headers=running.admin)
        assert page.status_code == 400
        assert f"{path}: " in page.text
        assert reason in page.text
        api = running.http.get(f"/admin/api/overview?{query}", headers=running.admin)
        assert api.status_code == 400
        assert api.json()["errors"][0]["path"] == path
        assert reason in api.json()["errors"][0]["reason"]

    def test_session_login_shows_the_overview(self, running: Running) -> None:
        """A browser-style login (form token + password) opens the overview with a log-out form."""
        with httpx.Client(base_url=running.url, timeout=30) as client:
            form = client.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert token
            done = client.post(
                "/login", data={"csrf_token": token[1], "name": "admin", "password": PASSWORD}
            )
            assert done.status_code == 303
            page = client.get("/admin")
            assert page.status_code == 200
            assert 'data-figure="received"' in page.text
            assert 'action="/logout"' in page.text
