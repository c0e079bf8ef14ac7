"""WooCommerce order webhooks: the pure mapping, then real HTTP to a real gateway (SQLite).

The body is the documented REST v3 order (tests/sources/fixtures/woocommerce_order_processing.json,
from the WooCommerce REST API docs' "Retrieve an order" example with a storefront checkout's
fields and meta added; see docs/platforms/woocommerce.md), encoded and signed the way
``WC_Webhook::deliver()`` does. Expected values are written out by hand; hashes are computed
here with hashlib.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from backchannel import config
from backchannel.destinations import tiktok
from backchannel.destinations.base import Target
from backchannel.events import normalize
from backchannel.sources import SourceError, ledger, woocommerce
from backchannel.store import open_store

from .conftest import StartGateway
from .helpers import (
    WOO_DELIVERY,
    WOO_SECRET,
    WOO_STORE,
    Gateway,
    fixture,
    php_json,
    sha,
    with_meta,
    woo_order,
    woo_signature,
)

NOW = 1_795_645_402  # a fixed clock after the fixture's dates
PAID_AT = 1764358088  # date_paid_gmt 2025-11-28T19:28:08 (UTC)
CREATED_AT = 1764358082  # date_created_gmt 2025-11-28T19:28:02 (UTC)
UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
LANDING = (
    "https://shop.example.com/product/woo-single-1/?ttclid=E.C.P.WooClick77&utm_source=tiktok"
    "&utm_medium=paid&utm_campaign=bfcm"
)
EVENT_ID = "CompletePayment-727"
SESSION = "Wk9vU2Vzc2lvbi0wMDAwMQ"


def mapped(order: dict[str, Any] | None = None, **options: Any) -> woocommerce.Mapped:
    options.setdefault("topic", "order.created")
    options.setdefault("store_url", WOO_STORE)
    return woocommerce.map_order(
        order if order is not None else fixture("woocommerce_order_processing.json"), **options
    )


def conversion_of(order: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    result = mapped(order, **options)
    assert result.conversion is not None
    return result.conversion


def refused(order: Any, **options: Any) -> SourceError:
    with pytest.raises(SourceError) as caught:
        mapped(order, **options)
    return caught.value


class TestSignatureAndPing:
    BODY = php_json(fixture("woocommerce_order_processing.json"))

    def test_signature_is_base64_hmac_sha256_of_the_raw_body(self) -> None:
        """WooCommerce's recipe passes; our signer agrees with the independent one."""
        woocommerce.verify(self.BODY, woo_signature(self.BODY), [WOO_SECRET])
        assert woocommerce.signature(self.BODY, WOO_SECRET) == woo_signature(self.BODY)

    def test_body_is_verified_as_sent_with_escaped_slashes(self) -> None:
        """The signed bytes are PHP's (``\\/``): the same JSON re-encoded does not verify."""
        assert b"https:\\/\\/shop.example.com" in self.BODY
        reencoded = orjson.dumps(orjson.loads(self.BODY))
        with pytest.raises(SourceError):
            woocommerce.verify(reencoded, woo_signature(self.BODY), [WOO_SECRET])

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            (None, "missing"),
            ("  ", "missing"),
            ("not base64!!", "not base64"),
            (base64.b64encode(b"x" * 32).decode(), "does not match"),
        ],
    )
    def test_bad_or_missing_signature_is_401(self, header: str | None, reason: str) -> None:
        """Missing, malformed and wrong signatures: 401 naming X-WC-Webhook-Signature."""
        with pytest.raises(SourceError) as caught:
            woocommerce.verify(self.BODY, header, [WOO_SECRET])
        assert caught.value.status == 401
        assert caught.value.notes[0].path == "X-WC-Webhook-Signature"
        assert reason in caught.value.notes[0].reason

    def test_any_configured_secret_passes_while_rotating(self) -> None:
        """Two secrets configured: a body signed by either passes."""
        woocommerce.verify(self.BODY, woo_signature(self.BODY, "new"), ["old", "new"])

    @pytest.mark.parametrize("body", [b"webhook_id=12", b"webhook_id=4711\n", b" webhook_id=1 "])
    def test_ping_bodies(self, body: bytes) -> None:
        """WC_Webhook::deliver_ping()'s body, ``webhook_id=<id>``, is a ping."""
        assert woocommerce.is_ping(body)

    @pytest.mark.parametrize(
        "body",
        [b'{"webhook_id":12}', b"webhook_id=", b"webhook_id=12&id=1", b"webhook_id=x", b""],
    )
    def test_other_bodies_are_not_pings(self, body: bytes) -> None:
        """Anything but exactly ``webhook_id=<digits>`` goes through the signature check."""
        assert not woocommerce.is_ping(body)


class TestStoreCheck:
    @pytest.mark.parametrize(
        "header",
        [
            "https://shop.example.com/",
            "https://shop.example.com",
            "http://SHOP.example.com/",
            "https://shop.example.com:443/",
        ],
    )
    def test_the_same_shop_passes(self, header: str) -> None:
        """Trailing slash, scheme, host case and the default port do not make another shop."""
        woocommerce.check_store(WOO_STORE, header)

    @pytest.mark.parametrize(
        "header",
        [
            "https://staging.shop.example.com/",
            "https://shop.example.com/staging/",
            "https://shop.example.com:8443/",
            None,
            "not a url",
        ],
    )
    def test_another_shop_is_403(self, header: str | None) -> None:
        """A staging copy, a subfolder install, another port, or no header: 403 wrong_store."""
        with pytest.raises(SourceError) as caught:
            woocommerce.check_store(WOO_STORE, header)
        assert (caught.value.status, caught.value.code) == (403, "wrong_store")
        assert caught.value.notes[0].path == "X-WC-Webhook-Source"

    def test_no_store_configured_accepts_any(self) -> None:
        """Without a configured store URL the header is not checked."""
        woocommerce.check_store(None, "https://anything.example/")

    def test_subfolder_install_is_its_own_path(self) -> None:
        """A shop installed under /shop/ is matched with its path."""
        woocommerce.check_store("https://example.com/shop/", "https://example.com/shop")


class TestMapping:
    def test_documented_order_maps_to_this_exact_conversion(self) -> None:
        """The whole canonical conversion of the processing order, normalized."""
        found = normalize(conversion_of(), now=NOW).conversion.to_dict()
        assert found == {
            "event": "CompletePayment",
            "event_time": PAID_AT,  # date_paid_gmt: the order counts when it is paid
            "event_id": EVENT_ID,
            "event_id_source": "derived",
            "user": {
                "email": [sha("john.doe@example.com")],
                # Reddit's rule drops the dot (docs/platforms/reddit.md §5); Google's keeps it
                "email_forms": {"reddit": [sha("johndoe@example.com")]},
                "phone": [sha("+14155552671")],  # (415) 555-2671 in the billing country US
                "phone_digits": [sha("14155552671")],
                "external_id": [],  # customer_id 0: a guest
                "first_name": sha("john"),
                "last_name": sha("doe"),
                "zip": sha("94103"),
                "city": "sanfrancisco",
                "state": "ca",
                "country": "us",
                "ip": "81.2.69.160",
                "user_agent": UA,
                "locale": None,
                "ttclid": "E.C.P.WooClick77",  # meta _bc_ttclid
                "ttp": "2Pj5ZxQWooTtpCookie.tt.1",  # meta _bc_ttp
                "fbclid": None,
                "fbc": None,
                "fbp": "fb.1.1732811441000.1234567890",  # meta _bc_fbp
                "ga_client_id": None,
                "gclid": None,
                "gbraid": None,
                "wbraid": None,
                "ids": {},
            },
            "source": "web",
            "order_id": "727",
            "value": 29.35,  # total, a string in the payload
            "currency": "USD",
            "contents": [
                {  # variation_id 0: the product
                    "id": "93",
                    "quantity": 2,
                    "price": 3.0,
                    "name": "Woo Single #1",
                    "category": None,
                    "brand": None,
                },
                {  # a variation: its own id; the name's &ndash; decoded
                    "id": "23",
                    "quantity": 1,
                    "price": 12.0,
                    "name": "Ship Your Idea \u2013 Color: Black, Size: M Test",
                    "category": None,
                    "brand": None,
                },
            ],
            "content_type": "product",
            "test_event_code": None,
            "limited_data_use": False,
            "opt_out": False,
            "page_url": LANDING,  # _wc_order_attribution_session_entry
            "page_referrer": "https://www.tiktok.com/",  # _wc_order_attribution_referrer
            "session_id": SESSION,  # meta _bc_session_id
            "shop_id": None,
            "query": None,
            "description": None,
            "consent": None,
            "lead": None,
            "num_items": None,
            "delivery_category": None,
            "predicted_ltv": None,
            "travel": None,
            "vehicle": None,
        }

    def test_documented_order_gives_this_exact_tiktok_body(self) -> None:
        """What TikTok receives for that order, field by field."""
        found = normalize(conversion_of(), now=NOW).conversion
        body = tiktok.build_body([found], Target("https://t.example", "CPIXEL123"))
        assert body["data"] == [
            {
                "event": "CompletePayment",
                "event_time": PAID_AT,
                "event_id": EVENT_ID,
                "user": {
                    "email": sha("john.doe@example.com"),
                    "phone": sha("+14155552671"),
                    "ttclid": "E.C.P.WooClick77",
                    "ttp": "2Pj5ZxQWooTtpCookie.tt.1",
                    "ip": "81.2.69.160",
                    "user_agent": UA,
                    "first_name": sha("john"),
                    "last_name": sha("doe"),
                    "zip_code": sha("94103"),
                    "city": "sanfrancisco",
                    "state": "ca",
                    "country": "us",
                },
                "properties": {
                    "contents": [
                        {
                            "content_id": "93",
                            "quantity": 2,
                            "price": 3.0,
                            "content_name": "Woo Single #1",
                        },
                        {
                            "content_id": "23",
                            "quantity": 1,
                            "price": 12.0,
                            "content_name": "Ship Your Idea \u2013 Color: Black, Size: M Test",
                        },
                    ],
                    "content_ids": ["93", "23"],
                    "content_type": "product",
                    "currency": "USD",
                    "value": 29.35,
                    "order_id": "727",
                },
                "limited_data_use": False,
                "page": {"url": LANDING, "referrer": "https://www.tiktok.com/"},
            }
        ]

    def test_event_id_is_derived_from_the_order_id_like_every_source(self) -> None:
        """event_id = "{event}-{id}" from the numeric id (not ``number``), as Shopify's and
        bc.eventId's; a configured event name changes the prefix."""
        order = fixture("woocommerce_order_processing.json") | {"id": 1001, "number": "WC-9"}
        assert normalize(conversion_of(order), now=NOW).conversion.event_id == (
            "CompletePayment-1001"
        )
        named = conversion_of(order, event="Purchase")
        assert normalize(named, now=NOW).conversion.event_id == "Purchase-1001"

    def test_order_attribution_and_meta_are_ledger_evidence(self) -> None:
        """The landing URL's ttclid and the Order Attribution utm_source name where found."""
        result = mapped()
        assert ledger.evidence(result.signals, ledger.utm_sources("tiktok")) == {
            "ttclid": "order_attribution",
            "utm_source": "order_attribution",
        }
        bare = with_meta(
            fixture("woocommerce_order_processing.json"),
            _wc_order_attribution_session_entry=None,
            _wc_order_attribution_utm_source=None,
        )
        assert ledger.evidence(mapped(bare).signals, ledger.utm_sources("tiktok")) == {
            "ttclid": "meta_data"
        }

    @pytest.mark.parametrize("status", ["processing", "completed"])
    def test_paid_statuses_are_sent(self, status: str) -> None:
        """processing and completed map to a conversion to send (no ledger_only reason)."""
        result = mapped(fixture("woocommerce_order_processing.json") | {"status": status})
        assert result.ledger_only is None
        assert result.ignored is None
        assert result.conversion is not None

    @pytest.mark.parametrize("status", ["pending", "on-hold", "failed", "cancelled", "refunded"])
    def test_unpaid_statuses_are_ledger_only(self, status: str) -> None:
        """Other statuses: the order for the ledger (created time), a reason, nothing sent."""
        order = fixture("woocommerce_order_processing.json") | {
            "status": status,
            "date_paid_gmt": None,
        }
        result = mapped(order)
        assert result.ledger_only is not None
        assert f"status {status!r}" in result.ledger_only
        assert result.conversion is not None
        assert (result.conversion["order_id"], result.conversion["value"]) == ("727", 29.35)
        assert result.conversion["event_time"] == CREATED_AT

    def test_paid_statuses_are_configurable(self) -> None:
        """A shop whose paid status is custom (a plugin's "shipped") configures it."""
        order = fixture("woocommerce_order_processing.json") | {"status": "shipped"}
        assert mapped(order).ledger_only is not None
        assert mapped(order, paid_statuses=("shipped",)).ledger_only is None
        assert mapped(fixture("woocommerce_order_processing.json"), paid_statuses=("shipped",))

    def test_paid_without_a_payment_date_uses_the_modification_time(self) -> None:
        """A paid order without date_paid_gmt: the update that made it paid, else creation."""
        order = fixture("woocommerce_order_processing.json") | {"date_paid_gmt": None}
        assert conversion_of(order)["event_time"] == PAID_AT  # date_modified_gmt, same second
        order |= {"date_modified_gmt": None}
        assert conversion_of(order)["event_time"] == CREATED_AT

    @pytest.mark.parametrize("status", ["checkout-draft", "draft", "auto-draft"])
    def test_checkout_drafts_are_ignored(self, status: str) -> None:
        """A Checkout block draft is a cart, not an order: ignored, not even ledgered."""
        result = mapped(fixture("woocommerce_order_processing.json") | {"status": status})
        assert result.conversion is None
        assert result.ignored is not None
        assert "draft" in result.ignored

    @pytest.mark.parametrize("topic", ["order.deleted", "product.created", ""])
    def test_unknown_topic_is_400(self, topic: str) -> None:
        """Only order.created / order.updated are handled; others name the header."""
        error = refused(fixture("woocommerce_order_processing.json"), topic=topic)
        assert (error.status, error.code) == (400, "unknown_topic")
        assert error.notes[0].path == "X-WC-Webhook-Topic"

    def test_missing_fields_are_422_naming_each(self) -> None:
        """No id, total, currency or status: every one named in one answer."""
        order = fixture("woocommerce_order_processing.json")
        for key in ("id", "total", "currency", "status"):
            del order[key]
        error = refused(order)
        assert error.status == 422
        assert [n.path for n in error.notes] == ["status", "id", "total", "currency"]

    def test_bad_values_are_422_naming_each(self) -> None:
        """A negative total, an unknown currency, a fractional quantity, a bad date."""
        order = fixture("woocommerce_order_processing.json")
        order |= {"total": "-5.00", "currency": "ZZZ", "date_paid_gmt": "yesterday"}
        order["line_items"][1]["quantity"] = 1.5
        error = refused(order)
        assert [(n.path, n.reason) for n in error.notes] == [
            ("total", "must not be negative"),
            ("currency", "unknown currency 'ZZZ' (not ISO 4217)"),
            ("line_items[1].quantity", "must be a whole number >= 0"),
            ("date_paid_gmt", "not an ISO-8601 date-time: 'yesterday'"),
        ]

    def test_body_that_is_not_an_object_is_422(self) -> None:
        """A JSON array is not an order."""
        assert refused([1, 2]).notes[0].path == "(body)"

    def test_content_id_prefers_variation_then_product_then_sku(self) -> None:
        """variation_id 0 means none; product_id 0 (a deleted product) falls to the SKU."""
        order = fixture("woocommerce_order_processing.json")
        order["line_items"][0] |= {"product_id": 0, "sku": "WOO-1"}
        order["line_items"][1] |= {"quantity": 0}  # removed by an order edit
        assert conversion_of(order)["contents"] == [
            {"id": "WOO-1", "quantity": 2, "price": 3.0, "name": "Woo Single #1"}
        ]

    def test_meta_session_id_and_no_landing_leave_page_url_to_stitching(self) -> None:
        """A named session fills page.url with its landing page when stitched: none is set."""
        order = with_meta(
            fixture("woocommerce_order_processing.json"),
            _wc_order_attribution_session_entry=None,
            _wc_order_attribution_referrer=None,
        )
        found = conversion_of(order)
        assert found["session_id"] == SESSION
        assert "page" not in found

    def test_no_session_and_no_landing_use_the_store_url(self) -> None:
        """Without either, the shop's URL (X-WC-Webhook-Source) is the page: Meta needs one."""
        order = with_meta(
            fixture("woocommerce_order_processing.json"),
            _wc_order_attribution_session_entry=None,
            _wc_order_attribution_referrer=None,
            _bc_session_id=None,
        )
        assert conversion_of(order)["page"] == {"url": WOO_STORE}
        assert "page" not in conversion_of(order, store_url=None)

    def test_unusable_meta_values_are_dropped(self) -> None:
        """A list value, a session id over 128 and a ttclid over 1024 characters are left out
        (a cut identifier would match nobody); the order itself is kept."""
        order = with_meta(
            fixture("woocommerce_order_processing.json"),
            _bc_session_id="s" * 129,
            _bc_ttclid="E" * 1025,
            _bc_ttp=None,
            _wc_order_attribution_session_entry=None,
        )
        order["meta_data"].append({"id": 1, "key": "_bc_ttp", "value": ["a", "b"]})
        found = conversion_of(order)
        assert "session_id" not in found
        assert "ttclid" not in found["user"]
        assert "ttp" not in found["user"]

    def test_registered_customer_is_the_external_id(self) -> None:
        """customer_id > 0 (a WordPress user) is the external id; 0 is a guest."""
        order = fixture("woocommerce_order_processing.json") | {"customer_id": 42}
        assert conversion_of(order)["user"]["external_id"] == "42"

    def test_shipping_address_when_billing_has_none(self) -> None:
        """A checkout that asked for no billing address: the shipping one is used."""
        order = fixture("woocommerce_order_processing.json")
        for key in ("address_1", "city", "state", "postcode", "country"):
            order["billing"][key] = ""
        order["shipping"] |= {"city": "Oakland", "postcode": "94607"}
        user = conversion_of(order)["user"]
        assert (user["city"], user["zip"], user["country"]) == ("Oakland", "94607", "US")

    def test_admin_order_without_ip_or_user_agent(self) -> None:
        """REST and admin orders have "" for both: left out, not sent as empty strings."""
        order = fixture("woocommerce_order_processing.json") | {
            "customer_ip_address": "",
            "customer_user_agent": "",
        }
        user = conversion_of(order)["user"]
        assert "ip" not in user
        assert "user_agent" not in user


class TestWebhook:
    def test_paid_order_is_committed_with_outbox_and_ledger(self, gateway: Gateway) -> None:
        """200 after the conversion, one outbox row per destination and the ledger row."""
        response = gateway.woocommerce(woo_order())
        assert response.status_code == 200, response.text
        assert response.json() | {"index": 0} == {
            "index": 0,
            "status": "accepted",
            "event": "CompletePayment",
            "event_id": EVENT_ID,
            "source": "woocommerce",
        }
        assert gateway.conversions() == [
            ("CompletePayment", EVENT_ID, "woocommerce", "727", SESSION)
        ]
        assert gateway.query("SELECT destination FROM outbox ORDER BY destination") == [
            ("meta",),
            ("tiktok",),
        ]
        (row,) = gateway.ledger()
        assert row[:7] == ("woocommerce", "727", 29.35, "USD", "CompletePayment", EVENT_ID, 1)
        assert orjson.loads(row[7]) == {
            "ttclid": "order_attribution",
            "utm_source": "order_attribution",
        }
        assert gateway.query("SELECT source, delivery_id, status FROM source_deliveries") == [
            ("woocommerce", WOO_DELIVERY, "processed")
        ]

    def test_raw_email_phone_and_name_never_reach_the_database(self, gateway: Gateway) -> None:
        """The billing email, phone and last name are stored only as hashes."""
        gateway.woocommerce(woo_order())
        dump = gateway.db_path.read_bytes() + b"".join(
            bytes(p) for (p,) in gateway.query("SELECT payload FROM conversions")
        )
        for plain in (b"john.doe@example.com", b"555-2671", b"4155552671", b"Doe"):
            assert plain not in dump

    def test_bad_signature_is_401_and_nothing_stored(self, gateway: Gateway) -> None:
        """Signed with another secret: 401; no conversion, ledger row or delivery record."""
        response = gateway.woocommerce(woo_order(), secret="not-the-secret")
        assert response.status_code == 401
        assert response.json()["error"] == "bad_signature"
        assert gateway.conversions() == []
        assert gateway.ledger() == []
        assert gateway.query("SELECT * FROM outbox") == []
        assert gateway.query("SELECT * FROM source_deliveries") == []
        (rejection,) = gateway.rejections()
        assert (rejection["source"], rejection["delivery_id"]) == ("woocommerce", WOO_DELIVERY)
        assert rejection["reason"]["errors"][0]["path"] == "X-WC-Webhook-Signature"

    def test_missing_signature_is_401(self, gateway: Gateway) -> None:
        """No X-WC-Webhook-Signature on an order body: 401 "missing"."""
        response = gateway.woocommerce(woo_order(), signature=None)
        assert response.status_code == 401
        assert response.json()["errors"] == [
            {"path": "X-WC-Webhook-Signature", "reason": "missing"}
        ]
        assert gateway.ledger() == []

    def test_tampered_body_is_401(self, gateway: Gateway) -> None:
        """The total raised after signing: refused."""
        body = php_json(woo_order())
        signature = woo_signature(body)
        tampered = body.replace(b'"29.35"', b'"99.35"', 1)
        assert tampered != body
        response = gateway.woocommerce(tampered, signature=signature)
        assert response.status_code == 401
        assert gateway.ledger() == []

    def test_ping_is_200_and_stores_nothing(self, start_gateway: StartGateway) -> None:
        """WC_Webhook::deliver_ping(): form body, no signature, no X-WC headers -> exactly
        200, nothing stored; also before any secret is configured."""
        for gateway in (start_gateway(), start_gateway(woocommerce_webhook_secret=None)):
            response = gateway.http.post(
                "/v1/sources/woocommerce",
                content=b"webhook_id=12",
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "User-Agent": "WooCommerce/9.8.5 Hookshot (WordPress/6.8.1)",
                },
            )
            assert response.status_code == 200
            assert response.json() == {"status": "ping"}
            for table in ("conversions", "orders", "source_deliveries", "ingest_rejections"):
                assert gateway.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]  # noqa: S608

    def test_no_secret_configured_is_503_naming_the_command(
        self, start_gateway: StartGateway
    ) -> None:
        """An order before any secret is set: 503 (WooCommerce retries), not a 500, with
        the command that fixes it."""
        gateway = start_gateway(woocommerce_webhook_secret=None)
        response = gateway.woocommerce(woo_order())
        assert response.status_code == 503
        answer = response.json()
        assert answer["error"] == "not_configured"
        reason = answer["errors"][0]["reason"]
        assert "no WooCommerce webhook secret configured" in reason
        assert "backchannel source set woocommerce --store-url" in reason
        assert "BACKCHANNEL_WOOCOMMERCE_WEBHOOK_SECRET" in reason
        assert gateway.ledger() == []

    def test_same_order_resent_adds_nothing(self, gateway: Gateway) -> None:
        """Same delivery id (fast path), a new delivery id (WooCommerce's retry), and a later
        order.updated to completed: one conversion, two outbox rows, one ledger row."""
        order = woo_order()
        assert gateway.woocommerce(order).json()["status"] == "accepted"
        same = gateway.woocommerce(order)
        assert same.json() == {"status": "duplicate", "delivery_id": WOO_DELIVERY}
        retry = gateway.woocommerce(order, delivery_id="a-new-hash-per-attempt")
        assert retry.json()["status"] == "duplicate"
        completed = woo_order("completed")
        later = gateway.woocommerce(completed, topic="order.updated", delivery_id="d-3")
        assert later.status_code == 200
        assert later.json()["status"] == "duplicate"
        assert len(gateway.conversions()) == 1
        assert len(gateway.query("SELECT id FROM outbox")) == 2
        assert len(gateway.ledger()) == 1

    def test_pending_then_processing_counts_once_at_processing(self, gateway: Gateway) -> None:
        """pending: ledger only (no event_id), nothing queued; the processing update sends
        it and completes the ledger row; completed after that adds nothing."""
        pending = gateway.woocommerce(woo_order("pending"), delivery_id="d-1")
        assert pending.status_code == 200
        assert pending.json() == {
            "ignored": "status 'pending' is not paid (processing, completed): the order is in"
            " the ledger, nothing is sent",
            "order_id": "727",
            "ledger": "recorded",
            "source": "woocommerce",
        }
        assert gateway.conversions() == []
        assert gateway.query("SELECT * FROM outbox") == []
        assert [r[:6] for r in gateway.ledger()] == [
            ("woocommerce", "727", 29.35, "USD", "CompletePayment", None)
        ]
        again = gateway.woocommerce(woo_order("on-hold"), topic="order.updated", delivery_id="d-2")
        assert again.json()["ledger"] == "already recorded"
        paid = gateway.woocommerce(woo_order(), topic="order.updated", delivery_id="d-3")
        assert paid.json()["status"] == "accepted"
        assert [c[1] for c in gateway.conversions()] == [EVENT_ID]
        assert [r[5] for r in gateway.ledger()] == [EVENT_ID]
        done = gateway.woocommerce(woo_order("completed"), topic="order.updated", delivery_id="d-4")
        assert done.json()["status"] == "duplicate"
        assert len(gateway.query("SELECT id FROM outbox")) == 2
        assert gateway.query(
            "SELECT delivery_id, status FROM source_deliveries ORDER BY delivery_id"
        ) == [("d-1", "ignored"), ("d-2", "ignored"), ("d-3", "processed"), ("d-4", "processed")]

    @pytest.mark.parametrize("status", ["cancelled", "refunded", "failed"])
    def test_unpaid_end_states_send_nothing_but_are_in_the_ledger(
        self, gateway: Gateway, status: str
    ) -> None:
        """Cancelled, refunded or failed before it was paid: the ledger has the order (no
        event_id); no conversion, no outbox row."""
        gateway.woocommerce(woo_order("pending"), delivery_id="d-1")
        response = gateway.woocommerce(woo_order(status), topic="order.updated", delivery_id="d-2")
        assert response.status_code == 200
        assert f"status {status!r}" in response.json()["ignored"]
        assert gateway.conversions() == []
        assert gateway.query("SELECT * FROM outbox") == []
        assert [(r[1], r[5]) for r in gateway.ledger()] == [("727", None)]

    def test_refund_after_payment_changes_nothing(self, gateway: Gateway) -> None:
        """A refund of a sent order: no second event, the ledger row keeps its event_id."""
        gateway.woocommerce(woo_order(), delivery_id="d-1")
        refunded = gateway.woocommerce(
            woo_order("refunded"), topic="order.updated", delivery_id="d-2"
        )
        assert refunded.json()["ledger"] == "already recorded"
        assert len(gateway.conversions()) == 1
        assert [r[5] for r in gateway.ledger()] == [EVENT_ID]

    def test_checkout_draft_is_ignored_entirely(self, gateway: Gateway) -> None:
        """The Checkout block's draft delivered by order.updated: 200 ignored, no ledger row."""
        response = gateway.woocommerce(woo_order("checkout-draft"), topic="order.updated")
        assert response.status_code == 200
        assert "draft" in response.json()["ignored"]
        assert gateway.ledger() == []

    def test_malformed_json_is_400(self, gateway: Gateway) -> None:
        """A signed body that is not JSON: 400 bad_json."""
        response = gateway.woocommerce(b'{"id": 727,')
        assert response.status_code == 400
        assert response.json()["error"] == "bad_json"

    def test_missing_field_is_422_naming_it_and_the_next_order_lands(
        self, gateway: Gateway
    ) -> None:
        """No currency: 422 naming it, recorded with the delivery id; a good order after it."""
        bad = woo_order()
        del bad["currency"]
        response = gateway.woocommerce(bad, delivery_id="d-bad")
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {"path": "currency", "reason": "required: an ISO 4217 currency code"}
        ]
        assert gateway.rejections()[0]["delivery_id"] == "d-bad"
        assert gateway.woocommerce(woo_order(), delivery_id="d-good").status_code == 200
        assert [r[1] for r in gateway.ledger()] == ["727"]

    def test_unpaid_order_is_checked_like_a_sent_one(self, gateway: Gateway) -> None:
        """A ledger-only order goes through the same normalization: a control character in
        its id is a 422 naming order_id, and no ledger row."""
        response = gateway.woocommerce(woo_order("pending", id="72\u00007"))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["path"] == "order_id"
        assert gateway.ledger() == []

    def test_control_characters_in_meta_are_dropped_not_fatal(self, gateway: Gateway) -> None:
        """A meta value with a NUL (a mangled cookie) is left out; the order still counts."""
        order = with_meta(woo_order(), _bc_session_id="abc\u0000def")
        response = gateway.woocommerce(order)
        assert response.status_code == 200, response.text
        assert gateway.conversions()[0][4] is None

    def test_unknown_topic_is_400(self, gateway: Gateway) -> None:
        """order.deleted sent here: 400 unknown_topic (a misconfigured webhook)."""
        response = gateway.woocommerce({"id": 727}, topic="order.deleted")
        assert response.status_code == 400
        assert response.json()["error"] == "unknown_topic"
        assert gateway.ledger() == []

    def test_webhook_from_another_store_is_403(self, start_gateway: StartGateway) -> None:
        """A staging copy (same webhook, same secret) is refused once the store is set."""
        gateway = start_gateway(woocommerce_store_url=WOO_STORE)
        staging = gateway.woocommerce(woo_order(), store="https://staging.shop.example.com/")
        assert staging.status_code == 403
        assert staging.json()["error"] == "wrong_store"
        assert gateway.ledger() == []
        assert gateway.woocommerce(woo_order()).status_code == 200


class TestSourceSetCommand:
    def run(
        self, gateway: Gateway, *args: str, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
        env["BACKCHANNEL_DATABASE_URL"] = gateway.settings.database_url
        env["BACKCHANNEL_SECRET_KEY"] = gateway.settings.secret_key or ""
        return subprocess.run(
            [sys.executable, "-m", "backchannel.cli", "source", *args],
            input=stdin,
            capture_output=True,
            cwd=Path(gateway.db_path).parent,
            env=env,
            timeout=120,
            check=False,
            text=True,
        )

    def test_set_records_secret_encrypted_and_the_store(self, start_gateway: StartGateway) -> None:
        """`source set woocommerce --store-url` (secret on stdin): webhooks from that shop
        verify with it, another shop is refused, the secret is not on disk in clear."""
        gateway = start_gateway(woocommerce_webhook_secret=None)
        done = self.run(
            gateway, "set", "woocommerce", "--store-url", WOO_STORE, stdin="stored-woo-secret\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "woocommerce: webhook secret stored encrypted",
            f"woocommerce: webhooks accepted from {WOO_STORE} only",
        ]
        store = open_store(gateway.settings.database_url)
        try:
            assert store.get_source_store_url("woocommerce") == WOO_STORE
        finally:
            store.close()
        accepted = gateway.woocommerce(woo_order(), secret="stored-woo-secret")
        assert accepted.status_code == 200, accepted.text
        other = gateway.woocommerce(
            woo_order(), secret="stored-woo-secret", store="https://copy.example.net/"
        )
        assert other.status_code == 403
        assert b"stored-woo-secret" not in gateway.db_path.read_bytes()

    def test_store_url_is_required_the_first_time(self, start_gateway: StartGateway) -> None:
        """Without --store-url and none stored: exit 2 naming the flag; nothing stored."""
        gateway = start_gateway(woocommerce_webhook_secret=None)
        done = self.run(gateway, "set", "woocommerce", stdin="s\n")
        assert done.returncode == 2
        assert "--store-url: required for woocommerce" in done.stderr
        store = open_store(gateway.settings.database_url)
        try:
            assert store.get_source_secret("woocommerce") is None
        finally:
            store.close()

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (("set", "stripe", "--store-url", WOO_STORE), "--store-url: only for woocommerce"),
            (("set", "woocommerce", "--store-url", "shop.example.com"), "not an http(s) URL"),
        ],
    )
    def test_bad_store_url_use_is_refused(
        self, start_gateway: StartGateway, args: tuple[str, ...], message: str
    ) -> None:
        """--store-url on another source, or not a URL: exit 2 with the reason."""
        done = self.run(start_gateway(), *args, stdin="s\n")
        assert done.returncode == 2
        assert message in done.stderr


class TestSettings:
    def env(self, tmp_path: Path, **values: str) -> dict[str, str]:
        env = {"BACKCHANNEL_DATABASE_URL": f"sqlite:///{tmp_path}/bc.db"}
        env.update({f"BACKCHANNEL_{k.upper()}": v for k, v in values.items()})
        return env

    def test_woocommerce_settings_from_the_environment(self, tmp_path: Path) -> None:
        """Secret, store URL, event and paid statuses (any case, spaces) are read."""
        settings = config.load(
            self.env(
                tmp_path,
                woocommerce_webhook_secret="s1,s2",
                woocommerce_store_url=WOO_STORE,
                woocommerce_event="Purchase",
                woocommerce_paid_statuses="processing, Completed ,shipped",
            ),
            config_path=tmp_path / "none.toml",
        )
        assert settings.woocommerce_webhook_secret == "s1,s2"
        assert "s1" not in repr(settings)
        assert settings.woocommerce_store_url == WOO_STORE
        assert settings.woocommerce_event == "Purchase"
        assert settings.paid_statuses == ("processing", "completed", "shipped")

    @pytest.mark.parametrize(
        ("name", "value", "message"),
        [
            ("woocommerce_store_url", "shop.example.com", "woocommerce_store_url"),
            ("woocommerce_paid_statuses", " , ", "woocommerce_paid_statuses"),
            ("woocommerce_event", "Complete-Payment!", "woocommerce_event"),
        ],
    )
    def test_bad_settings_are_refused_by_name(
        self, tmp_path: Path, name: str, value: str, message: str
    ) -> None:
        """A store URL that is not one, no paid status, an unsendable event name."""
        with pytest.raises(config.ConfigError) as caught:
            config.load(self.env(tmp_path, **{name: value}), config_path=tmp_path / "none.toml")
        assert message in str(caught.value)
