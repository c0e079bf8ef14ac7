"""Shopify and Stripe webhooks over real HTTP to a real gateway, checked in the SQLite file.

Each test signs (or mis-signs) a documented payload, posts it over loopback, and reads what
was committed: conversion, outbox rows, ledger row, delivery record, rejection note.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import stripe as stripe_sdk
from cryptography.fernet import Fernet

from backchannel import credentials
from backchannel.store import open_store

from .conftest import StartGateway
from .helpers import STRIPE_SECRET, Gateway, fixture, shopify_signature

ORDER_ID = "820982911946154508"
EVENT_ID = f"CompletePayment-{ORDER_ID}"
SUB = "sub_1QdXoQ2eZvKYlo2CcWvGJ4xL"


def stripe_signed(event: dict[str, Any], at: int | None = None) -> tuple[bytes, str]:
    body = orjson.dumps(event)
    header = stripe_sdk.WebhookSignature.generate_signature_header(
        body.decode(), STRIPE_SECRET, timestamp=at if at is not None else int(time.time())
    )
    return body, header


class TestShopifyWebhook:
    def test_signed_order_is_committed_with_outbox_and_ledger(self, gateway: Gateway) -> None:
        """200 only after conversion, one outbox row per destination and the ledger row."""
        response = gateway.shopify(fixture("shopify_orders_create.json"))
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "accepted"
        assert response.json()["event_id"] == EVENT_ID
        assert gateway.conversions() == [
            ("CompletePayment", EVENT_ID, "shopify", ORDER_ID, "s_2b7c9f41d0")
        ]
        assert gateway.query("SELECT destination FROM outbox ORDER BY destination") == [
            ("meta",),
            ("tiktok",),
        ]
        (row,) = gateway.ledger()
        assert row[:7] == ("shopify", ORDER_ID, 598.94, "USD", "CompletePayment", EVENT_ID, 1)
        assert orjson.loads(row[7]) == {"ttclid": "landing_site", "utm_source": "landing_site"}
        assert gateway.query("SELECT source, status FROM source_deliveries") == [
            ("shopify", "processed")
        ]

    def test_raw_email_and_phone_never_reach_the_database(self, gateway: Gateway) -> None:
        """The order's plaintext email and phone are nowhere in the stored rows."""
        gateway.shopify(fixture("shopify_orders_create.json"))
        dump = orjson.dumps(gateway.query("SELECT payload FROM conversions")[0][0].decode())
        for plain in (b"jon@example.com", b"Jon@Example.com", b"613 555 0142", b"6135550142"):
            assert plain not in dump

    def test_bad_signature_is_401_and_nothing_stored(self, gateway: Gateway) -> None:
        """A wrong HMAC: 401, no conversion, no ledger row; a rejection note is kept."""
        response = gateway.shopify(fixture("shopify_orders_create.json"), secret="wrong")
        assert response.status_code == 401
        assert response.json()["error"] == "bad_signature"
        assert gateway.conversions() == []
        assert gateway.ledger() == []
        (rejection,) = gateway.rejections()
        assert rejection["source"] == "shopify"
        assert rejection["reason"]["error"] == "bad_signature"

    def test_missing_signature_is_401(self, gateway: Gateway) -> None:
        """No X-Shopify-Hmac-Sha256 header at all: 401."""
        response = gateway.shopify(fixture("shopify_orders_create.json"), signature=None)
        assert response.status_code == 401
        assert response.json()["errors"][0] == {
            "path": "X-Shopify-Hmac-Sha256",
            "reason": "missing",
        }
        assert gateway.conversions() == []

    def test_tampered_body_is_401(self, gateway: Gateway) -> None:
        """A body changed after signing (total raised) is refused."""
        body = orjson.dumps(fixture("shopify_orders_create.json"))
        signature = shopify_signature(body)
        tampered = body.replace(b'"598.94"', b'"998.94"', 1)
        response = gateway.shopify(tampered, signature=signature)
        assert response.status_code == 401
        assert gateway.ledger() == []

    def test_redelivery_with_same_webhook_id_is_idempotent(self, gateway: Gateway) -> None:
        """Shopify's retry of one delivery: 200 duplicate, still one conversion and one order."""
        order = fixture("shopify_orders_create.json")
        assert gateway.shopify(order).status_code == 200
        again = gateway.shopify(order)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"
        assert len(gateway.conversions()) == 1
        assert len(gateway.ledger()) == 1
        assert len(gateway.query("SELECT id FROM outbox")) == 2

    def test_orders_paid_after_create_is_a_duplicate_by_order_id(self, gateway: Gateway) -> None:
        """A different delivery (orders/paid) of the same order: event_id dedup, one ledger row."""
        order = fixture("shopify_orders_create.json")
        gateway.shopify(order, webhook_id="w-create")
        paid = gateway.shopify(order, topic="orders/paid", webhook_id="w-paid")
        assert paid.status_code == 200
        assert paid.json()["status"] == "duplicate"
        assert len(gateway.conversions()) == 1
        assert len(gateway.ledger()) == 1

    def test_unknown_topic_is_400_and_recorded(self, gateway: Gateway) -> None:
        """A topic we do not handle: 400 with the reason; recorded for diagnostics."""
        response = gateway.shopify(fixture("shopify_orders_create.json"), topic="carts/update")
        assert response.status_code == 400
        assert response.json()["error"] == "unknown_topic"
        assert gateway.rejections()[0]["reason"]["error"] == "unknown_topic"
        assert gateway.conversions() == []

    def test_malformed_json_is_400(self, gateway: Gateway) -> None:
        """A signed body that is not JSON: 400 naming the parse error."""
        response = gateway.shopify(b'{"id": 1,')
        assert response.status_code == 400
        assert response.json()["error"] == "bad_json"

    def test_absurd_values_are_422_and_the_next_order_still_lands(self, gateway: Gateway) -> None:
        """A negative total is refused with its reason; a good order right after is stored."""
        bad = fixture("shopify_orders_create.json") | {"total_price": "-1.00", "id": 1}
        response = gateway.shopify(bad, webhook_id="w-bad")
        assert response.status_code == 422
        assert response.json()["errors"] == [
            {"path": "total_price", "reason": "must not be negative"}
        ]
        good = gateway.shopify(fixture("shopify_orders_create.json"), webhook_id="w-good")
        assert good.status_code == 200
        assert [row[1] for row in gateway.ledger()] == [ORDER_ID]
        assert gateway.rejections()[0]["reason"]["errors"][0]["path"] == "total_price"

    def test_test_orders_are_acknowledged_and_ignored(self, gateway: Gateway) -> None:
        """Shopify test orders get 200 {"ignored"} and leave no conversion or ledger row."""
        response = gateway.shopify(fixture("shopify_orders_create.json") | {"test": True})
        assert response.status_code == 200
        assert "test order" in response.json()["ignored"]
        assert gateway.conversions() == []
        assert gateway.ledger() == []

    def test_no_secret_configured_is_503(self, start_gateway: StartGateway) -> None:
        """Without a secret nothing can be verified: 503 so Shopify retries later."""
        gateway = start_gateway(shopify_webhook_secret=None)
        response = gateway.shopify(fixture("shopify_orders_create.json"))
        assert response.status_code == 503
        assert response.json()["error"] == "not_configured"

    def test_secret_stored_encrypted_is_used(self, start_gateway: StartGateway) -> None:
        """A secret set in the store (as `source set` does) verifies webhooks; not in plaintext."""
        gateway = start_gateway(shopify_webhook_secret=None)
        store = open_store(gateway.settings.database_url)
        cipher = credentials.load_cipher(gateway.settings)
        store.set_source_secret("shopify", credentials.encrypt(cipher, "stored-secret"), 1.0)
        store.close()
        response = gateway.shopify(fixture("shopify_orders_create.json"), secret="stored-secret")
        assert response.status_code == 200, response.text
        assert b"stored-secret" not in gateway.db_path.read_bytes()

    def test_wrong_key_for_stored_secret_is_503_not_500(self, start_gateway: StartGateway) -> None:
        """A stored secret that does not decrypt (key changed) is a 503 naming the problem."""
        gateway = start_gateway(shopify_webhook_secret=None)
        store = open_store(gateway.settings.database_url)
        other = credentials.load_cipher(
            gateway.settings.__class__(secret_key=Fernet.generate_key().decode())
        )
        store.set_source_secret("shopify", credentials.encrypt(other, "s"), 1.0)
        store.close()
        response = gateway.shopify(fixture("shopify_orders_create.json"), secret="s")
        assert response.status_code == 503


class TestStripeWebhook:
    def test_signed_first_invoice_is_subscribe_in_ledger(self, gateway: Gateway) -> None:
        """invoice.paid signed by Stripe's library: Subscribe stored, ledger row attributed."""
        response = gateway.stripe(*stripe_signed(fixture("stripe_invoice_paid.json")))
        assert response.status_code == 200, response.text
        assert response.json()["event_id"] == f"Subscribe-{SUB}"
        assert gateway.conversions() == [
            ("Subscribe", f"Subscribe-{SUB}", "stripe", SUB, "s_9f8e7d6c5b")
        ]
        (row,) = gateway.ledger()
        assert row[:7] == ("stripe", SUB, 49.0, "USD", "Subscribe", f"Subscribe-{SUB}", 1)
        assert orjson.loads(row[7]) == {"utm_source": "metadata"}

    def test_lead_id_in_metadata_is_stored_as_the_lead(self, gateway: Gateway) -> None:
        """Issue 16: a subscription's metadata lead_id / lead_event_source arrive as the
        stored conversion's lead (the Subscribe is the lead's deep-funnel signal)."""
        event = fixture("stripe_invoice_paid.json")
        details = event["data"]["object"]["parent"]["subscription_details"]
        details["metadata"].update(lead_id="7301234567890123456", lead_event_source="HubSpot")
        response = gateway.stripe(*stripe_signed(event))
        assert response.status_code == 200, response.text
        [(payload,)] = gateway.query("SELECT payload FROM conversions")
        assert orjson.loads(payload)["lead"] == {"id": "7301234567890123456", "source": "HubSpot"}

    def test_stale_timestamp_is_401(self, gateway: Gateway) -> None:
        """A correctly signed event older than 300 s is refused (replay protection)."""
        body, header = stripe_signed(fixture("stripe_invoice_paid.json"), int(time.time()) - 600)
        response = gateway.stripe(body, header)
        assert response.status_code == 401
        assert "tolerance" in response.json()["errors"][0]["reason"]
        assert gateway.conversions() == []

    def test_missing_and_bad_signature_are_401(self, gateway: Gateway) -> None:
        """No header, or a header for another body: 401 and nothing stored."""
        body, header = stripe_signed(fixture("stripe_invoice_paid.json"))
        assert gateway.stripe(body, None).status_code == 401
        assert gateway.stripe(body + b" ", header).status_code == 401
        assert gateway.conversions() == []
        assert len(gateway.rejections()) == 2

    def test_unmapped_event_is_200_ignored(self, gateway: Gateway) -> None:
        """charge.succeeded is acknowledged with the reason and stores no conversion."""
        event = fixture("stripe_customer_created.json") | {"type": "charge.succeeded"}
        response = gateway.stripe(*stripe_signed(event))
        assert response.status_code == 200
        assert response.json() == {"ignored": "event type 'charge.succeeded' is not mapped"}
        assert gateway.conversions() == []
        assert gateway.query("SELECT status FROM source_deliveries") == [("ignored",)]

    def test_redelivered_event_is_a_duplicate(self, gateway: Gateway) -> None:
        """Stripe retries with the same evt_ id: 200 duplicate, one conversion."""
        event = fixture("stripe_invoice_paid.json")
        assert gateway.stripe(*stripe_signed(event)).status_code == 200
        again = gateway.stripe(*stripe_signed(event))
        assert again.json() == {"status": "duplicate", "delivery_id": event["id"]}
        assert len(gateway.conversions()) == 1

    def test_signup_events_of_one_customer_count_once(self, gateway: Gateway) -> None:
        """customer.created then checkout.session.completed: one CompleteRegistration."""
        first = gateway.stripe(*stripe_signed(fixture("stripe_customer_created.json")))
        second = gateway.stripe(*stripe_signed(fixture("stripe_checkout_session_completed.json")))
        assert first.json()["status"] == "accepted"
        assert second.json()["status"] == "duplicate"
        assert [c[0] for c in gateway.conversions()] == ["CompleteRegistration"]
        assert gateway.ledger() == []  # a sign-up is not an order

    def test_subscription_created_after_invoice_is_a_duplicate(self, gateway: Gateway) -> None:
        """The first paid signal wins; the other Subscribe source is a duplicate."""
        gateway.stripe(*stripe_signed(fixture("stripe_invoice_paid.json")))
        later = gateway.stripe(*stripe_signed(fixture("stripe_subscription_created.json")))
        assert later.json()["status"] == "duplicate"
        assert len(gateway.ledger()) == 1

    def test_configured_events_and_contract_value(self, start_gateway: StartGateway) -> None:
        """stripe_subscribe_event and stripe_contract_value change what is stored."""
        gateway = start_gateway(stripe_subscribe_event="Purchase", stripe_contract_value="588")
        response = gateway.stripe(*stripe_signed(fixture("stripe_invoice_paid.json")))
        assert response.json()["event_id"] == f"Purchase-{SUB}"
        assert gateway.ledger()[0][2:5] == (588.0, "USD", "Purchase")

    def test_bad_currency_is_422_and_recorded_with_event_id(self, gateway: Gateway) -> None:
        """An unknown currency: 422 with the path; the rejection keeps the evt_ id."""
        event = fixture("stripe_invoice_paid.json")
        event["data"]["object"]["currency"] = "zzz"
        response = gateway.stripe(*stripe_signed(event))
        assert response.status_code == 422
        assert response.json()["errors"][0]["path"] == "data.object.currency"
        assert gateway.rejections()[0]["delivery_id"] == event["id"]


class TestApiLedger:
    def test_api_order_lands_in_ledger_with_evidence(self, gateway: Gateway) -> None:
        """POST /v1/events CompletePayment with order_id: ledger row, ttclid from page.url."""
        response = gateway.http.post(
            "/v1/events",
            headers={"Authorization": f"Bearer {gateway.key}"},
            json={
                "event": "CompletePayment",
                "order_id": 5001,
                "value": 20,
                "currency": "eur",
                "page": {"url": "https://shop.example/thanks?ttclid=E.C.P.77"},
            },
        )
        assert response.status_code == 202, response.text
        (row,) = gateway.ledger()
        assert row[:7] == ("api", "5001", 20.0, "EUR", "CompletePayment", "CompletePayment-5001", 1)
        assert orjson.loads(row[7]) == {"ttclid": "page.url"}

    def test_non_order_events_and_repeats_add_no_ledger_rows(self, gateway: Gateway) -> None:
        """AddToCart makes no ledger row; the same order sent twice makes one."""
        auth = {"Authorization": f"Bearer {gateway.key}"}
        cart = {"event": "AddToCart", "order_id": 1, "value": 5, "currency": "USD"}
        order = {"event": "Purchase", "order_id": 2, "value": 5, "currency": "USD"}
        for body in (cart, order, order):
            assert gateway.http.post("/v1/events", headers=auth, json=body).status_code == 202
        assert [(r[1], r[6]) for r in gateway.ledger()] == [("2", 0)]
