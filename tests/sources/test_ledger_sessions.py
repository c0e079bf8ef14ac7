"""The order ledger counts the landing session's signals, over real HTTP to a real gateway.

A landing session is recorded the way bc.js records it (``POST /v1/collect`` with a site key);
then an order naming that session arrives from ``/v1/events``, a Shopify, Stripe or WooCommerce
webhook, or a CSV import, and the committed ``orders`` row is read from the SQLite file.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from serve.helpers import add_key

from .conftest import StartGateway
from .helpers import Gateway, fixture, with_meta, woo_order
from .test_webhooks import ORDER_ID, SUB, stripe_signed

SID = "Sess-LedgerLanding-01"
SHOP = "https://shop.example"
RECENT = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def shop(start_gateway: StartGateway) -> Gateway:
    """A gateway that also accepts bc.js page views from the shop's origin."""
    return start_gateway(collect_origins=(SHOP,))


def land(gateway: Gateway, *, utm_source: str | None = "tiktok", **fields: Any) -> None:
    """One landing page view of session SID, as bc.js sends it (site key in the body)."""
    site = add_key(gateway.settings, "site", "collect")
    body: dict[str, Any] = {"key": site, "session_id": SID, "url": SHOP + "/", "landing": True}
    if utm_source is not None:
        body["utm"] = {"source": utm_source, "medium": "paid"}
    body.update(fields)
    response = gateway.http.post(
        "/v1/collect",
        content=orjson.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": SHOP},
    )
    assert response.status_code == 204, response.text


def api_order(gateway: Gateway, order_id: int, **fields: Any) -> None:
    body: dict[str, Any] = {
        "event": "CompletePayment",
        "order_id": order_id,
        "value": 25,
        "currency": "USD",
        "user": {"email": "jane@example.com"},
    }
    body.update(fields)
    response = gateway.http.post(
        "/v1/events", headers={"Authorization": f"Bearer {gateway.key}"}, json=body
    )
    assert response.status_code == 202, response.text


def evidence(gateway: Gateway, order_id: str) -> tuple[int, dict[str, str], str | None]:
    """(attributed_tiktok, evidence, session_id) of one ledger row."""
    ((attributed, found, session),) = gateway.query(
        "SELECT attributed_tiktok, evidence, session_id FROM orders WHERE order_id = ?",
        (order_id,),
    )
    return attributed, orjson.loads(found), session


class TestApiOrders:
    def test_session_id_brings_the_sessions_utm_source(self, shop: Gateway) -> None:
        """A CompletePayment naming a tiktok-UTM session is attributed by the landing session."""
        land(shop)
        api_order(shop, 7001, session_id=SID)
        assert evidence(shop, "7001") == (1, {"utm_source": "landing_session"}, SID)

    def test_google_session_is_not_attributed(self, shop: Gateway) -> None:
        """A session that came from utm_source=google gives no TikTok evidence."""
        land(shop, utm_source="google")
        api_order(shop, 7002, session_id=SID)
        assert evidence(shop, "7002") == (0, {}, SID)

    def test_orders_own_ttclid_names_the_order(self, shop: Gateway) -> None:
        """Both carry a ttclid: the evidence names the order's; the session adds its UTM."""
        land(shop, ttclid="E.C.P.SESSION")
        api_order(shop, 7003, session_id=SID, user={"ttclid": "E.C.P.ORDER"})
        assert evidence(shop, "7003") == (
            1,
            {"ttclid": "user.ttclid", "utm_source": "landing_session"},
            SID,
        )

    def test_what_stitching_filled_in_is_the_sessions(self, shop: Gateway) -> None:
        """A ttclid and page.url copied from the session are reported as the session's."""
        land(shop, utm_source=None, ttclid="E.C.P.CLICK", url=SHOP + "/?ttclid=E.C.P.CLICK")
        api_order(shop, 7004, session_id=SID)
        (stitched,) = shop.query("SELECT stitched FROM conversions")[0]
        assert orjson.loads(stitched)["fields"]["ttclid"] == "session"
        assert evidence(shop, "7004") == (1, {"ttclid": "landing_session"}, SID)
        assert "E.C.P.CLICK" not in repr(shop.query("SELECT * FROM orders"))

    def test_email_match_brings_the_session_too(self, shop: Gateway) -> None:
        """A later order with only the email joins the session it was seen on, and its UTM."""
        land(shop)
        api_order(shop, 7005, session_id=SID)
        api_order(shop, 7006)
        assert evidence(shop, "7006") == (1, {"utm_source": "landing_session"}, SID)

    def test_unknown_session_adds_nothing(self, shop: Gateway) -> None:
        """A session id nobody recorded: the order is kept with its own (empty) evidence."""
        land(shop)
        api_order(shop, 7007, session_id="Nobody-Knows-This", user={})
        assert evidence(shop, "7007") == (0, {}, "Nobody-Knows-This")


def shopify_order(session: str, *, landing_site: bool = False) -> dict[str, Any]:
    order = fixture("shopify_orders_create.json")
    if not landing_site:
        del order["landing_site"]
    order["note_attributes"] = [{"name": "_bc_session", "value": session}]
    return order


class TestShopifyOrders:
    def test_cart_attribute_session_brings_the_sessions_utm_source(self, shop: Gateway) -> None:
        """orders/create with _bc_session in the cart attributes: landing-session evidence."""
        land(shop)
        response = shop.shopify(shopify_order(SID))
        assert response.status_code == 200, response.text
        assert evidence(shop, ORDER_ID) == (1, {"utm_source": "landing_session"}, SID)

    def test_google_session_is_not_attributed(self, shop: Gateway) -> None:
        """The same order after a google landing: not TikTok-attributed."""
        land(shop, utm_source="google")
        assert shop.shopify(shopify_order(SID)).status_code == 200
        assert evidence(shop, ORDER_ID) == (0, {}, SID)

    def test_orders_landing_site_keeps_precedence(self, shop: Gateway) -> None:
        """The order's landing_site carries ttclid and utm_source: the evidence names it."""
        land(shop, ttclid="E.C.P.SESSION")
        assert shop.shopify(shopify_order(SID, landing_site=True)).status_code == 200
        assert evidence(shop, ORDER_ID) == (
            1,
            {"ttclid": "landing_site", "utm_source": "landing_site"},
            SID,
        )


def woocommerce_order(session: str) -> dict[str, Any]:
    """The paid WooCommerce order naming ``session`` in its meta, with no click of its own."""
    return with_meta(
        woo_order(),
        _bc_session_id=session,
        _bc_ttclid=None,
        _bc_ttp=None,
        _wc_order_attribution_session_entry=None,
        _wc_order_attribution_utm_source=None,
    )


class TestWooCommerceOrders:
    def test_meta_session_brings_the_sessions_signals(self, shop: Gateway) -> None:
        """An order with _bc_session_id in meta_data: the session's ttclid and UTM count,
        and the stored conversion took the session's ttclid and _ttp."""
        land(shop, ttclid="E.C.P.WOO", ttp="ttp.woo")
        response = shop.woocommerce(woocommerce_order(SID))
        assert response.status_code == 200, response.text
        assert evidence(shop, "727") == (
            1,
            {"ttclid": "landing_session", "utm_source": "landing_session"},
            SID,
        )
        ((payload, stitched),) = shop.query("SELECT payload, stitched FROM conversions")
        user = orjson.loads(payload)["user"]
        assert (user["ttclid"], user["ttp"]) == ("E.C.P.WOO", "ttp.woo")
        assert orjson.loads(stitched)["matched_by"] == "session_id"

    def test_google_session_is_not_attributed(self, shop: Gateway) -> None:
        """The same order after a google landing: not TikTok-attributed."""
        land(shop, utm_source="google")
        assert shop.woocommerce(woocommerce_order(SID)).status_code == 200
        assert evidence(shop, "727") == (0, {}, SID)

    def test_unpaid_order_keeps_its_session_until_paid(self, shop: Gateway) -> None:
        """A pending order is ledgered with its session id; once paid, the session's
        evidence is there too."""
        land(shop)
        pending = woocommerce_order(SID) | {"status": "pending", "date_paid_gmt": None}
        assert shop.woocommerce(pending, delivery_id="d-1").status_code == 200
        assert evidence(shop, "727") == (0, {}, SID)
        paid = shop.woocommerce(woocommerce_order(SID), topic="order.updated", delivery_id="d-2")
        assert paid.json()["status"] == "accepted"
        assert evidence(shop, "727") == (1, {"utm_source": "landing_session"}, SID)


def invoice_paid(session: str) -> dict[str, Any]:
    event = fixture("stripe_invoice_paid.json")
    details = event["data"]["object"]["parent"]["subscription_details"]
    details["metadata"] = {"backchannel_session_id": session, "external_id": "User-42"}
    return event


class TestStripeSubscriptions:
    def test_metadata_session_brings_the_sessions_utm_source(self, shop: Gateway) -> None:
        """invoice.paid whose metadata names the session: landing-session evidence."""
        land(shop)
        response = shop.stripe(*stripe_signed(invoice_paid(SID)))
        assert response.status_code == 200, response.text
        assert evidence(shop, SUB) == (1, {"utm_source": "landing_session"}, SID)

    def test_google_session_is_not_attributed(self, shop: Gateway) -> None:
        """The same subscription after a google landing: not TikTok-attributed."""
        land(shop, utm_source="google")
        assert shop.stripe(*stripe_signed(invoice_paid(SID))).status_code == 200
        assert evidence(shop, SUB) == (0, {}, SID)


class TestCsvImport:
    def test_session_id_column_brings_the_sessions_utm_source(
        self, shop: Gateway, tmp_path: Path
    ) -> None:
        """`backchannel import` with a session_id column: the named session's UTM counts,
        and the conversion is stitched from it like an API conversion naming its session."""
        land(shop, ttclid="E.C.P.LANDED", ttp="ttp.landed")
        work = tmp_path / "import"
        work.mkdir()
        (work / "orders.csv").write_text(
            "order_id,event_time,value,currency,session_id,utm_source\n"
            f"9001,{RECENT},10.00,USD,{SID},\n"
            f"9002,{RECENT},10.00,USD,Nobody-Knows-This,\n"
            f"9003,{RECENT},10.00,USD,{SID},tiktok\n",
            encoding="utf-8",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        env["BACKCHANNEL_DATABASE_URL"] = shop.settings.database_url
        env["BACKCHANNEL_SECRET_KEY"] = shop.settings.secret_key or ""
        done = subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "import", "orders.csv"],
            capture_output=True,
            cwd=work,
            env=env,
            timeout=300,
            check=False,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert orjson.loads(done.stdout.strip().splitlines()[-1])["attributed_tiktok"] == 2
        landed = {"ttclid": "landing_session", "utm_source": "landing_session"}
        assert evidence(shop, "9001") == (1, landed, SID)
        assert evidence(shop, "9002") == (0, {}, "Nobody-Knows-This")
        assert evidence(shop, "9003") == (
            1,
            {"utm_source": "column", "ttclid": "landing_session"},
            SID,
        )
        rows = shop.query(
            "SELECT order_id, payload, stitched FROM conversions WHERE origin = 'csv'"
            " ORDER BY order_id"
        )
        stitched = {
            order: (orjson.loads(payload)["user"], None if how is None else orjson.loads(how))
            for order, payload, how in rows
        }
        user, how = stitched["9001"]
        assert (user["ttclid"], user["ttp"]) == ("E.C.P.LANDED", "ttp.landed")
        assert how["matched_by"] == "session_id"
        assert how["fields"]["ttclid"] == how["fields"]["ttp"] == "session"
        user, how = stitched["9002"]  # an unknown session: nothing filled, nothing claimed
        assert (user["ttclid"], how) == (None, None)
