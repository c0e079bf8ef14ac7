"""Pure source logic: signatures, Shopify/Stripe mapping, minor units, ledger evidence.

No I/O here: the modules under test are pure by design, so these tests pin their exact output
(the whole canonical conversion and the TikTok body for the documented Shopify order).
"""

from __future__ import annotations

import base64
import copy
import time
from typing import Any

import orjson
import pytest
import stripe as stripe_sdk

from backchannel.destinations import tiktok
from backchannel.destinations.base import Target
from backchannel.events import Lead, normalize
from backchannel.sources import SourceError, csv_import, ledger, shopify, stripe
from backchannel.sources.ledger import Signal

from .helpers import SHOP, SHOPIFY_SECRET, STRIPE_SECRET, fixture, sha, shopify_signature

NOW = 1_795_645_402  # a fixed clock after every fixture's time
UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like"
    " Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
LANDING = (
    "https://jsmith.myshopify.com/products/ipod-nano?ttclid=E.C.P.v3jKpZbQ&utm_source=tiktok"
    "&utm_medium=paid&utm_campaign=bfcm"
)


def shopify_conversion(order: dict[str, Any] | None = None) -> dict[str, Any]:
    mapped = shopify.map_order(
        order or fixture("shopify_orders_create.json"), topic="orders/create", shop_domain=SHOP
    )
    assert mapped.conversion is not None
    return normalize(mapped.conversion, now=NOW).conversion.to_dict()


def stripe_event(name: str, **object_changes: Any) -> dict[str, Any]:
    event = fixture(name)
    event["data"]["object"].update(object_changes)
    return event


class TestShopifySignature:
    BODY = orjson.dumps(fixture("shopify_orders_create.json"))

    def test_good_signature_passes(self) -> None:
        """Shopify's recipe, base64(HMAC-SHA256(secret, raw body)), is accepted."""
        shopify.verify(self.BODY, shopify_signature(self.BODY), [SHOPIFY_SECRET])

    def test_signature_of_module_matches_independent_recipe(self) -> None:
        """Our signer and the test's independent one agree byte for byte."""
        assert shopify.signature(self.BODY, SHOPIFY_SECRET) == shopify_signature(self.BODY)

    @pytest.mark.parametrize(
        ("header", "reason"),
        [
            (None, "missing"),
            ("", "missing"),
            ("not base64!!", "not base64"),
            (base64.b64encode(b"x" * 32).decode(), "does not match"),
        ],
    )
    def test_bad_or_missing_signature_is_401(self, header: str | None, reason: str) -> None:
        """Missing, malformed and wrong signatures are refused with 401 and a reason."""
        with pytest.raises(SourceError) as caught:
            shopify.verify(self.BODY, header, [SHOPIFY_SECRET])
        assert caught.value.status == 401
        assert reason in caught.value.notes[0].reason

    def test_tampered_body_is_refused(self) -> None:
        """One changed byte of the body invalidates the signature."""
        tampered = self.BODY.replace(b'"598.94"', b'"998.94"', 1)
        with pytest.raises(SourceError):
            shopify.verify(tampered, shopify_signature(self.BODY), [SHOPIFY_SECRET])

    def test_any_configured_secret_passes_while_rotating(self) -> None:
        """With two secrets configured (rotation), a body signed by either passes."""
        shopify.verify(self.BODY, shopify_signature(self.BODY, "new"), ["old", "new"])


class TestShopifyMapping:
    def test_documented_order_maps_to_this_exact_conversion(self) -> None:
        """The whole canonical conversion of the documented orders/create payload."""
        assert shopify_conversion() == {
            "event": "CompletePayment",
            "event_time": 1795186800,  # processed_at 2026-11-20T10:00:00-05:00
            "event_id": "CompletePayment-820982911946154508",
            "event_id_source": "derived",
            "user": {
                "email": [sha("jon@example.com")],  # order.email wins over customer.email
                "email_forms": {},  # not a gmail address: Google's form is the same
                "phone": [sha("+16135550142")],  # customer.phone (order.phone is null)
                "phone_digits": [sha("16135550142")],
                "external_id": [sha("115310627314723954")],
                "first_name": sha("john"),
                "last_name": sha("smith"),
                "zip": sha("k2p0v6"),
                "city": "ottawa",
                "state": "on",
                "country": "ca",
                "ip": "81.2.69.160",
                "user_agent": UA,
                "locale": "en-US",
                "ttclid": "E.C.P.v3jKpZbQ",  # from landing_site
                "ttp": "2Xn1Rk3yJt0bZ5eYq7mW9aLcUfG",  # from note_attributes _ttp
                "fbclid": None,
                "fbc": None,
                "fbp": None,
                "ga_client_id": None,
                "gclid": None,
                "gbraid": None,
                "wbraid": None,
                "ids": {},
            },
            "source": "web",
            "order_id": "820982911946154508",
            "value": 598.94,
            "currency": "USD",
            "contents": [
                {
                    "id": "808950810",
                    "quantity": 1,
                    "price": 199.0,
                    "name": "IPod Nano - 8GB",
                    "category": None,
                    "brand": None,
                },
                {
                    "id": "457924702",
                    "quantity": 2,
                    "price": 204.97,
                    "name": "IPod Nano - 8GB",
                    "category": None,
                    "brand": "Apple",
                },
            ],
            "content_type": "product",
            "test_event_code": None,
            "limited_data_use": False,
            "opt_out": False,  # consent: sources never opt out on their own
            "page_url": LANDING,
            "page_referrer": "https://www.tiktok.com/",
            "session_id": "s_2b7c9f41d0",
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
        mapped = shopify.map_order(
            fixture("shopify_orders_create.json"), topic="orders/paid", shop_domain=SHOP
        )
        assert mapped.conversion is not None
        conversion = normalize(mapped.conversion, now=NOW).conversion
        body = tiktok.build_body([conversion], Target("https://t.example", "CPIXEL123"))
        assert body == {
            "event_source": "web",
            "event_source_id": "CPIXEL123",
            "data": [
                {
                    "event": "CompletePayment",
                    "event_time": 1795186800,
                    "event_id": "CompletePayment-820982911946154508",
                    "user": {
                        "email": sha("jon@example.com"),
                        "phone": sha("+16135550142"),
                        "external_id": sha("115310627314723954"),
                        "ttclid": "E.C.P.v3jKpZbQ",
                        "ttp": "2Xn1Rk3yJt0bZ5eYq7mW9aLcUfG",
                        "ip": "81.2.69.160",
                        "user_agent": UA,
                        "locale": "en-US",
                        "first_name": sha("john"),
                        "last_name": sha("smith"),
                        "zip_code": sha("k2p0v6"),
                        "city": "ottawa",
                        "state": "on",
                        "country": "ca",
                    },
                    "properties": {
                        "contents": [
                            {
                                "content_id": "808950810",
                                "quantity": 1,
                                "price": 199.0,
                                "content_name": "IPod Nano - 8GB",
                            },
                            {
                                "content_id": "457924702",
                                "quantity": 2,
                                "price": 204.97,
                                "content_name": "IPod Nano - 8GB",
                                "brand": "Apple",
                            },
                        ],
                        "content_ids": ["808950810", "457924702"],
                        "content_type": "product",
                        "value": 598.94,
                        "currency": "USD",
                        "order_id": "820982911946154508",
                    },
                    "limited_data_use": False,
                    "page": {"url": LANDING, "referrer": "https://www.tiktok.com/"},
                }
            ],
        }

    def test_both_topics_share_one_event_id(self) -> None:
        """orders/create and orders/paid of one order dedupe to one conversion."""
        order = fixture("shopify_orders_create.json")
        created = shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        paid = shopify.map_order(order, topic="orders/paid", shop_domain=SHOP)
        assert created.conversion == paid.conversion

    def test_configured_event_is_used(self) -> None:
        """shopify_event (e.g. PlaceAnOrder) replaces CompletePayment."""
        mapped = shopify.map_order(
            fixture("shopify_orders_create.json"),
            topic="orders/create",
            shop_domain=SHOP,
            event="PlaceAnOrder",
        )
        assert mapped.conversion is not None
        assert mapped.conversion["event"] == "PlaceAnOrder"

    def test_unknown_topic_is_400(self) -> None:
        """A topic other than orders/create|paid is refused with 400 and names the topic."""
        with pytest.raises(SourceError) as caught:
            shopify.map_order({}, topic="products/update", shop_domain=SHOP)
        assert caught.value.status == 400
        assert "products/update" in caught.value.notes[0].reason

    @pytest.mark.parametrize(
        ("changes", "path", "reason"),
        [
            ({"total_price": "-5.00"}, "total_price", "must not be negative"),
            ({"total_price": "abc"}, "total_price", "not a number"),
            ({"total_price": None}, "total_price", "required"),
            ({"currency": "XYZ"}, "currency", "unknown currency"),
            ({"currency": None}, "currency", "required"),
            ({"id": None}, "id", "required"),
            ({"total_price": "1e20"}, "total_price", "implausibly large"),
        ],
    )
    def test_absurd_or_missing_fields_are_422(
        self, changes: dict[str, Any], path: str, reason: str
    ) -> None:
        """Negative totals, unknown currencies and missing ids are refused naming the field."""
        order = fixture("shopify_orders_create.json")
        order.update(changes)
        with pytest.raises(SourceError) as caught:
            shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert caught.value.status == 422
        assert any(n.path == path and reason in n.reason for n in caught.value.notes)

    def test_test_orders_are_ignored(self) -> None:
        """Orders from Shopify's test gateway are not purchases and map to nothing."""
        order = fixture("shopify_orders_create.json") | {"test": True}
        mapped = shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert mapped.conversion is None
        assert mapped.ignored is not None
        assert "test order" in mapped.ignored

    def test_order_without_landing_site_has_no_tiktok_signal(self) -> None:
        """No landing_site and no cart attributes: no page, no signals."""
        order = fixture("shopify_orders_create.json") | {
            "landing_site": None,
            "note_attributes": [],
            "referring_site": None,
        }
        mapped = shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert mapped.signals == []
        assert mapped.conversion is not None
        assert "page" not in mapped.conversion
        assert "session_id" not in mapped.conversion


def signed(
    event: dict[str, Any], *, at: int | None = None, secret: str = STRIPE_SECRET
) -> tuple[bytes, str]:
    """The body and a Stripe-Signature header made by Stripe's own library."""
    body = orjson.dumps(event)
    header = stripe_sdk.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=at if at is not None else int(time.time())
    )
    return body, header


class TestStripeSignature:
    EVENT = fixture("stripe_invoice_paid.json")

    def test_header_signed_by_stripes_library_passes(self) -> None:
        """A header made by Stripe's official Python library verifies with our verifier."""
        body, header = signed(self.EVENT, at=NOW)
        stripe.verify(body, header, [STRIPE_SECRET], now=NOW)

    def test_our_signature_passes_stripes_own_verifier(self) -> None:
        """And the reverse: Stripe's library accepts what our signer produces."""
        body = orjson.dumps(self.EVENT)
        now = int(time.time())
        header = f"t={now},v1={stripe.sign(body, STRIPE_SECRET, now)}"
        assert stripe_sdk.WebhookSignature.verify_header(body, header, STRIPE_SECRET, 300)

    @pytest.mark.parametrize("offset", [301, -301, 10_000])
    def test_timestamp_outside_tolerance_is_refused(self, offset: int) -> None:
        """Stale (and future) timestamps beyond 300 s are refused even if correctly signed."""
        body, header = signed(self.EVENT, at=NOW - offset)
        with pytest.raises(SourceError) as caught:
            stripe.verify(body, header, [STRIPE_SECRET], now=NOW)
        assert caught.value.status == 401
        assert "tolerance" in caught.value.notes[0].reason

    def test_timestamp_at_the_edge_passes(self) -> None:
        """Exactly 300 s old is still inside the window."""
        body, header = signed(self.EVENT, at=NOW - 300)
        stripe.verify(body, header, [STRIPE_SECRET], now=NOW)

    @pytest.mark.parametrize(
        "header",
        [None, "", "t=123", "v1=abc", "t=x,v1=abc", "t=1795645402,v0=abc"],
    )
    def test_missing_or_malformed_header_is_401(self, header: str | None) -> None:
        """No header, no timestamp, no v1, or a non-numeric t: 401."""
        with pytest.raises(SourceError) as caught:
            stripe.verify(b"{}", header, [STRIPE_SECRET], now=NOW)
        assert caught.value.status == 401

    def test_wrong_secret_or_tampered_body_is_refused(self) -> None:
        """Another secret's signature, or a changed body, does not verify."""
        body, header = signed(self.EVENT, at=NOW, secret="whsec_other")
        with pytest.raises(SourceError):
            stripe.verify(body, header, [STRIPE_SECRET], now=NOW)
        body, header = signed(self.EVENT, at=NOW)
        with pytest.raises(SourceError):
            stripe.verify(body.replace(b"4900", b"9900", 1), header, [STRIPE_SECRET], now=NOW)

    def test_any_of_several_v1_signatures_passes(self) -> None:
        """During Stripe's secret roll a header carries several v1 values; one match is enough."""
        body, header = signed(self.EVENT, at=NOW)
        t, v1 = header.split(",")
        stripe.verify(body, f"{t},v1={'0' * 64},{v1}", [STRIPE_SECRET], now=NOW)


class TestStripeMapping:
    def test_first_paid_invoice_is_subscribe_with_its_value(self) -> None:
        """invoice.paid (subscription_create) -> Subscribe keyed on the subscription id."""
        mapped = stripe.map_event(fixture("stripe_invoice_paid.json"))
        assert mapped.conversion == {
            "event": "Subscribe",
            "order_id": "sub_1QdXoQ2eZvKYlo2CcWvGJ4xL",
            "source": "web",
            "user": {
                "email": "Founder@SaaS.example",
                "phone": "+1 512 555 0199",
                "external_id": "User-42",
                "zip": "78701",
                "city": "Austin",
                "country": "US",
            },
            "event_time": 1795299998,  # status_transitions.paid_at
            "value": 49.0,
            "currency": "USD",
            "session_id": "s_9f8e7d6c5b",
        }
        assert mapped.order
        assert mapped.signals == [Signal("utm_source", "TikTok", "metadata")]

    @pytest.mark.parametrize(
        ("code", "minor", "value"),
        [("jpy", 4900, 4900.0), ("kwd", 4900, 4.9), ("usd", 4999, 49.99), ("bhd", 12345, 12.345)],
    )
    def test_minor_units_use_the_currency_exponent(
        self, code: str, minor: int, value: float
    ) -> None:
        """JPY has 0 decimals, KWD/BHD 3, USD 2 (Stripe's amounts are in minor units)."""
        event = stripe_event("stripe_invoice_paid.json", currency=code, amount_paid=minor)
        mapped = stripe.map_event(event)
        assert mapped.conversion is not None
        assert mapped.conversion["value"] == value
        assert mapped.conversion["currency"] == code.upper()

    def test_contract_value_replaces_the_first_payment(self) -> None:
        """stripe_contract_value, when set, is Subscribe's value."""
        mapped = stripe.map_event(
            fixture("stripe_invoice_paid.json"), stripe.Events(contract_value=588.0)
        )
        assert mapped.conversion is not None
        assert mapped.conversion["value"] == 588.0

    @pytest.mark.parametrize(
        ("changes", "reason"),
        [
            ({"billing_reason": "subscription_cycle"}, "not a first subscription payment"),
            ({"amount_paid": 0}, "nothing paid yet"),
        ],
    )
    def test_renewals_and_free_first_invoices_are_ignored(
        self, changes: dict[str, Any], reason: str
    ) -> None:
        """Renewals and $0 (trial) first invoices make no Subscribe."""
        mapped = stripe.map_event(stripe_event("stripe_invoice_paid.json", **changes))
        assert mapped.conversion is None
        assert mapped.ignored is not None
        assert reason in mapped.ignored

    def test_subscription_created_active_is_subscribe_with_same_event_id(self) -> None:
        """customer.subscription.created shares the invoice's key, so only the first counts."""
        from_sub = stripe.map_event(fixture("stripe_subscription_created.json"))
        from_invoice = stripe.map_event(fixture("stripe_invoice_paid.json"))
        assert from_sub.conversion is not None
        assert from_invoice.conversion is not None
        assert from_sub.conversion["order_id"] == from_invoice.conversion["order_id"]
        assert from_sub.conversion["value"] == 49.0

    def test_trialing_subscription_is_ignored_until_it_turns_paid(self) -> None:
        """A trial is not a Subscribe; its update from trialing to active is."""
        trial = stripe_event("stripe_subscription_created.json", status="trialing")
        assert stripe.map_event(trial).ignored is not None
        update = stripe_event("stripe_subscription_created.json")
        update["type"] = "customer.subscription.updated"
        update["data"]["previous_attributes"] = {"status": "trialing"}
        mapped = stripe.map_event(update)
        assert mapped.conversion is not None
        assert mapped.conversion["event"] == "Subscribe"

    def test_customer_created_is_a_signup_not_an_order(self) -> None:
        """customer.created -> CompleteRegistration keyed on the customer, with metadata ids."""
        mapped = stripe.map_event(fixture("stripe_customer_created.json"))
        assert not mapped.order
        assert mapped.conversion == {
            "event": "CompleteRegistration",
            "order_id": "cus_RWb9k4ixUmZ3cY",
            "source": "web",
            "user": {
                "email": "Founder@SaaS.example",
                "phone": "+1 512 555 0199",
                "external_id": "User-42",
                "zip": "78701",
                "city": "Austin",
                "country": "US",
                "ttclid": "E.C.P.signup77",
            },
            "event_time": 1795299899,
            "session_id": "s_9f8e7d6c5b",
        }

    def test_lead_id_in_metadata_becomes_the_lead(self) -> None:
        """metadata lead_id / lead_event_source -> the canonical lead, and TikTok's body
        carries it as {lead_id, lead_event_source}."""
        event = fixture("stripe_invoice_paid.json")
        details = event["data"]["object"]["parent"]["subscription_details"]
        details["metadata"].update(lead_id="7301234567890123456", lead_event_source="HubSpot")
        mapped = stripe.map_event(event)
        assert mapped.conversion is not None
        assert mapped.conversion["lead"] == {"id": "7301234567890123456", "source": "HubSpot"}
        conversion = normalize(mapped.conversion, now=NOW).conversion
        body = tiktok.build_body([conversion], Target(base_url="", pixel="CPIX", token="t"))
        assert body["data"][0]["lead"] == {
            "lead_id": "7301234567890123456",
            "lead_event_source": "HubSpot",
        }

    def test_lead_source_defaults_to_stripe(self) -> None:
        """A lead_id without lead_event_source names Stripe, where the event happened."""
        event = fixture("stripe_customer_created.json")
        event["data"]["object"]["metadata"]["lead_id"] = "L-77"
        mapped = stripe.map_event(event)
        assert mapped.conversion is not None
        assert mapped.conversion["lead"] == {"id": "L-77", "source": "Stripe"}

    def test_no_lead_id_no_lead(self) -> None:
        """Without a lead_id in the metadata, the conversion has no lead key."""
        for name in ("stripe_invoice_paid.json", "stripe_subscription_created.json"):
            mapped = stripe.map_event(fixture(name))
            assert mapped.conversion is not None
            assert "lead" not in mapped.conversion

    def test_checkout_session_shares_the_customers_signup_key(self) -> None:
        """checkout.session.completed for the same customer maps to the same event_id."""
        checkout = stripe.map_event(fixture("stripe_checkout_session_completed.json"))
        customer = stripe.map_event(fixture("stripe_customer_created.json"))
        assert checkout.conversion is not None
        assert customer.conversion is not None
        assert checkout.conversion["order_id"] == customer.conversion["order_id"]
        assert checkout.conversion["user"]["external_id"] == "User-42"  # client_reference_id

    def test_guest_checkout_is_not_a_signup(self) -> None:
        """A checkout session without a customer is ignored with a reason."""
        event = stripe_event("stripe_checkout_session_completed.json", customer=None)
        assert stripe.map_event(event).ignored == (
            "checkout session without a customer: not a sign-up"
        )

    def test_unmapped_type_is_ignored_with_reason(self) -> None:
        """Event types we do not use come back as ignored, not as errors."""
        event = fixture("stripe_customer_created.json") | {"type": "charge.refunded"}
        assert stripe.map_event(event).ignored == "event type 'charge.refunded' is not mapped"

    @pytest.mark.parametrize(
        ("changes", "path"),
        [
            ({"currency": "zzz"}, "data.object.currency"),
            ({"amount_paid": -100}, "data.object.amount_paid"),
            ({"amount_paid": "49.00"}, "data.object.amount_paid"),
        ],
    )
    def test_bad_fields_of_mapped_events_are_422(self, changes: dict[str, Any], path: str) -> None:
        """Unknown currency, negative or non-integer amounts are refused naming the field."""
        with pytest.raises(SourceError) as caught:
            stripe.map_event(stripe_event("stripe_invoice_paid.json", **changes))
        assert caught.value.status == 422
        assert caught.value.notes[0].path == path

    def test_non_event_body_is_422(self) -> None:
        """A body that is not a Stripe event object is refused."""
        with pytest.raises(SourceError):
            stripe.map_event({"type": "invoice.paid"})


class TestLedgerEvidence:
    UTM = ledger.utm_sources("tiktok,tt,tiktokads")

    def conversion(self, url: str | None, ttclid: str | None = None) -> Any:
        item: dict[str, Any] = {"event": "CompletePayment", "order_id": 7, "value": 1.0}
        item["currency"] = "USD"
        if url:
            item["page"] = {"url": url}
        if ttclid:
            item["user"] = {"ttclid": ttclid}
        return normalize(item, now=NOW).conversion

    def test_ttclid_in_landing_site_is_evidence(self) -> None:
        """A ttclid in Shopify's landing_site attributes the order to TikTok, naming where."""
        found = ledger.evidence(ledger.url_signals("/p?ttclid=abc", "landing_site"), self.UTM)
        assert found == {"ttclid": "landing_site"}

    @pytest.mark.parametrize("utm", ["tiktok", "TikTok", "TT", "tiktokads"])
    def test_configured_utm_source_any_case_is_evidence(self, utm: str) -> None:
        """utm_source matching the configured values (case-insensitive) attributes it."""
        entry = ledger.api_entry(self.conversion(f"https://s.example/?utm_source={utm}"), self.UTM)
        assert entry is not None
        assert entry.attributed_tiktok
        assert orjson.loads(entry.evidence) == {"utm_source": "page.url"}

    def test_other_utm_source_and_no_click_id_is_not_attributed(self) -> None:
        """utm_source=google and no ttclid: an order, but not TikTok's."""
        entry = ledger.api_entry(self.conversion("https://s.example/?utm_source=google"), self.UTM)
        assert entry is not None
        assert not entry.attributed_tiktok
        assert entry.evidence == b"{}"

    def test_no_url_at_all_is_not_attributed(self) -> None:
        """No page URL, no click id: evidence is empty."""
        entry = ledger.api_entry(self.conversion(None), self.UTM)
        assert entry is not None
        assert not entry.attributed_tiktok

    def test_user_ttclid_without_url_is_evidence(self) -> None:
        """A ttclid sent in user.ttclid counts, named as such."""
        entry = ledger.api_entry(self.conversion(None, ttclid="E.C.P.1"), self.UTM)
        assert entry is not None
        assert orjson.loads(entry.evidence) == {"ttclid": "user.ttclid"}

    def test_custom_utm_values_replace_the_defaults(self) -> None:
        """tiktok_utm_sources is configurable: with 'tok' only, 'tiktok' no longer counts."""
        utm = ledger.utm_sources(" Tok ,")
        signals = ledger.url_signals("/?utm_source=tiktok", "landing_site")
        assert ledger.evidence(signals, utm) == {}
        assert ledger.evidence(ledger.url_signals("/?utm_source=TOK", "x"), utm) == {
            "utm_source": "x"
        }

    def test_landing_session_signals_count(self) -> None:
        """Signals from a landing session (passed by the caller) are evidence too."""
        found = ledger.evidence([Signal("ttclid", "E.C.P.9", "landing_session")], self.UTM)
        assert found == {"ttclid": "landing_session"}

    def test_events_that_are_not_orders_make_no_ledger_row(self) -> None:
        """AddToCart with an order id is not an order; neither is a sign-up."""
        item = {"event": "AddToCart", "order_id": 7, "value": 1.0, "currency": "USD"}
        assert ledger.api_entry(normalize(item, now=NOW).conversion, self.UTM) is None
        signup = normalize({"event": "CompleteRegistration", "order_id": "cus_1"}, now=NOW)
        assert ledger.entry(signup.conversion, "stripe", [], self.UTM) is None

    def test_copy_is_unchanged(self) -> None:
        """Mapping never mutates the webhook body it was given."""
        order = fixture("shopify_orders_create.json")
        before = copy.deepcopy(order)
        shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert order == before


class TestCsvLead:
    HEADER = "order_id,event_time,value,currency,email,lead_id,lead_event_source\n"

    def test_lead_columns_become_the_lead(self) -> None:
        """Columns lead_id and lead_event_source give the row's conversion its lead."""
        result = csv_import.plan(
            self.HEADER + "1001,2026-11-25T10:00:00Z,10,USD,a@example.com,7301234567,HubSpot\n",
            now=NOW,
        )
        assert result.errors == []
        [row] = result.rows
        assert row.conversion.lead == Lead("7301234567", "HubSpot")

    def test_tiktok_style_alias_and_no_source(self) -> None:
        """A 'TikTok Lead ID' column is read as lead_id; without a source none is invented."""
        text = (
            "order_id,event_time,value,currency,TikTok Lead ID\n1,2026-11-25T10:00:00Z,1,USD,L-5\n"
        )
        [row] = csv_import.plan(text, now=NOW).rows
        assert row.conversion.lead == Lead("L-5", None)

    def test_rows_without_a_lead_id_have_no_lead(self) -> None:
        """An empty lead_id cell gives no lead."""
        result = csv_import.plan(
            self.HEADER + "1002,2026-11-25T10:00:00Z,10,USD,b@example.com,,\n", now=NOW
        )
        assert result.rows[0].conversion.lead is None

    def test_source_without_lead_id_is_a_row_error(self) -> None:
        """A lead_event_source with no lead_id is refused naming lead.id, with its line."""
        result = csv_import.plan(
            self.HEADER + "1003,2026-11-25T10:00:00Z,10,USD,c@example.com,,HubSpot\n", now=NOW
        )
        assert result.rows == []
        assert result.error_lines() == ["line 2: lead.id: required"]
