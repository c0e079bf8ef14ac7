"""Google's ids through ``/v1/collect`` and stitching, over real HTTP, on SQLite and PostgreSQL.

What bc.js sends for Google (the landing URL's gclid/gbraid/wbraid, the _ga cookie as read,
gtag calls mirrored with their transaction_id) must be stored, refused, and stitched into a
later conversion the same way on both backends: the columns come from migration 0011, written
once per dialect.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from backchannel.diagnostics.dedup import dedup_report
from backchannel.store import open_store
from backchannel.store.base import BrowserEvent, LedgerEntry, SessionUpdate
from backchannel.web.app import Options, create_app
from serve.helpers import add_key, make_settings
from store.helpers import conversion
from support.server import ServerThread

SID = "Sess-Google-AbCdEfGh"
SHOP = "https://shop.example"
GCLID = "EAIaIQobChMIq-fX4ZGbgQMVL4BQBh1AlAh7EAAYASABEgLGsvD_BwE"
GA_COOKIE = "GA1.1.1234567890.1700000000"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend (PostgreSQL: a fresh database on the test cluster)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/bc.db"
        return
    base = os.environ.get("BACKCHANNEL_TEST_POSTGRES_URL")
    if not base:
        pytest.fail("BACKCHANNEL_TEST_POSTGRES_URL is not set: run the suite with ./dev test")
    name = f"bc_google_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Gateway:
    def __init__(self, url: str, database_url: str, site_key: str, ingest_key: str) -> None:
        self.url, self.database_url = url, database_url
        self.site_key, self.ingest_key = site_key, ingest_key

    def collect(self, **fields: Any) -> httpx.Response:
        body = {"key": self.site_key, "session_id": SID, "url": SHOP + "/"}
        body.update(fields)
        return httpx.post(
            self.url + "/v1/collect",
            content=orjson.dumps(body),
            headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP},
        )

    def ingest(self, body: Any) -> httpx.Response:
        return httpx.post(
            self.url + "/v1/events",
            json=body,
            headers={"Authorization": f"Bearer {self.ingest_key}"},
        )

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the database behind the gateway's back (``?`` placeholders on both)."""
        if self.database_url.startswith("sqlite"):
            db = sqlite3.connect(self.database_url.removeprefix("sqlite:///"), timeout=30)
            try:
                return db.execute(query, params).fetchall()
            finally:
                db.close()
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query.replace("?", "%s"), params).fetchall()


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    settings = make_settings(tmp_path, database_url=database_url, collect_origins=(SHOP,))
    site = add_key(settings, "site", "collect")
    ingest = add_key(settings, "shop", "ingest")
    with ExitStack() as stack:
        server = stack.enter_context(
            ServerThread(create_app(settings, Options(worker=False, sandbox=False)))
        )
        yield Gateway(server.url, database_url, site, ingest)


def google_columns(gateway: Gateway) -> list[tuple[Any, ...]]:
    return gateway.rows(
        "SELECT ga_client_id, gclid, gbraid, wbraid FROM landing_sessions WHERE session_id = ?",
        SID,
    )


class TestCollect:
    def test_google_ids_are_stored_with_the_ga_cookie_normalized(self, gateway: Gateway) -> None:
        response = gateway.collect(
            landing=True, gclid=GCLID, gbraid="GB-1", wbraid="WB-1", ga_client_id=GA_COOKIE
        )
        assert response.status_code == 204, response.text
        assert google_columns(gateway) == [("1234567890.1700000000", GCLID, "GB-1", "WB-1")]

    def test_a_later_page_keeps_what_it_does_not_carry(self, gateway: Gateway) -> None:
        """Merged like ttclid: a message without Google's ids leaves the stored ones."""
        assert gateway.collect(landing=True, gclid=GCLID).status_code == 204
        assert gateway.collect(ga_client_id="1234567890.1700000000").status_code == 204
        assert google_columns(gateway) == [("1234567890.1700000000", GCLID, None, None)]

    @pytest.mark.parametrize(
        ("fields", "path", "reason"),
        [
            ({"gclid": "x" * 513}, "gclid", "512"),
            ({"wbraid": ""}, "wbraid", "at least 1"),
            ({"gbraid": "GB\x00"}, "gbraid", "control character"),
            ({"ga_client_id": "GA1.1.1\n.2"}, "ga_client_id", "control character"),
            ({"ga_client_id": "1" * 129}, "ga_client_id", "128"),
        ],
    )
    def test_bad_google_fields_are_422_and_nothing_is_stored(
        self, gateway: Gateway, fields: dict[str, Any], path: str, reason: str
    ) -> None:
        response = gateway.collect(**fields)
        assert response.status_code == 422
        errors = response.json()["errors"]
        assert any(e["path"] == path and reason in e["reason"] for e in errors), errors
        assert google_columns(gateway) == []

    def test_gtag_calls_are_mirrored_with_their_platform(self, gateway: Gateway) -> None:
        """The gtag mirror's rows say "google"; TikTok's (no platform sent) say "tiktok"."""
        events = [
            {"event": "CompletePayment", "event_id": "CompletePayment-1001"},
            {"event": "purchase", "event_id": "1001", "platform": "google"},
        ]
        assert gateway.collect(page_view=False, pixel="loaded", events=events).status_code == 204
        assert gateway.rows(
            "SELECT event, event_id, platform, pixel_status FROM browser_events ORDER BY id"
        ) == [
            ("CompletePayment", "CompletePayment-1001", "tiktok", "loaded"),
            ("purchase", "1001", "google", None),
        ]


class TestStitching:
    def test_a_conversion_naming_its_session_gets_googles_ids(self, gateway: Gateway) -> None:
        """Filled where the conversion lacks them, and the provenance says "session"."""
        assert gateway.collect(landing=True, gclid=GCLID, ga_client_id=GA_COOKIE).status_code == 204
        order = {
            "event": "CompletePayment",
            "order_id": "1001",
            "value": 59.9,
            "currency": "USD",
            "session_id": SID,
            "user": {"email": "jane@example.com"},
        }
        response = gateway.ingest(order)
        assert response.status_code == 202, response.text
        [(payload, stitched)] = gateway.rows("SELECT payload, stitched FROM conversions")
        user = orjson.loads(bytes(payload))["user"]
        assert (user["gclid"], user["ga_client_id"]) == (GCLID, "1234567890.1700000000")
        fields = orjson.loads(stitched)["fields"]
        assert (fields["gclid"], fields["ga_client_id"]) == ("session", "session")
        assert "gbraid" not in fields


class TestTikTokReportsReadTikToksMirrorOnly:
    """The dedup page's TikTok verdict and the gap report judge the TikTok Pixel: a gtag call
    mirrored with the same id, or in the same session under the same name, is not TikTok's
    browser leg (it is Google's)."""

    def test_a_google_row_is_neither_the_pixels_leg_nor_a_mismatch(self, database_url: str) -> None:
        received = datetime(2027, 1, 14, 12, tzinfo=UTC).timestamp()
        store = open_store(database_url)
        try:
            item = conversion(1, session_id="sG", event_time=int(received))
            item.ledger = LedgerEntry(
                source="shopify",
                order_id="1",
                order_time=int(received),
                value=1.0,
                currency="USD",
                event="CompletePayment",
                event_id="CompletePayment-1",
                session_id="sG",
                attributed_tiktok=False,
                evidence=b"{}",
            )
            assert store.insert_conversions([item], received) == [True]
            google = {"at": received, "platform": "google"}
            store.record_collect(
                [SessionUpdate(session_id="sG", at=received, landing=True)],
                [  # contrived on purpose: Google's rows that would pass for TikTok's
                    BrowserEvent("sG", "CompletePayment", "CompletePayment-1", **google),
                    BrowserEvent("sG", "CompletePayment", "1", **google),
                ],
            )
            [row] = dedup_report(store, date(2027, 1, 10), date(2027, 1, 15)).rows
            tiktok = row.legs["tiktok"]
            assert (tiktok.same_id, tiktok.mismatch) == (False, False)
            # they are Google's tag's: the one carrying the order id is GA4's and Google
            # Ads' browser leg (their key is the order id, the transaction_id)
            assert (row.legs["ga4"].same_id, row.legs["google_ads"].same_id) == (True, True)
            [gap] = store.gap_rows(int(received) - 60, int(received) + 60)
            assert gap.pixel_fired is False
            # the same rows as TikTok's are the Pixel's leg
            store.record_collect(
                [], [BrowserEvent("sG", "CompletePayment", "CompletePayment-1", received)]
            )
            [row] = dedup_report(store, date(2027, 1, 10), date(2027, 1, 15)).rows
            assert row.legs["tiktok"].same_id is True
            [gap] = store.gap_rows(int(received) - 60, int(received) + 60)
            assert gap.pixel_fired is True
        finally:
            store.close()
