"""Shared by the sources tests: fixtures on disk, secrets, signing, a gateway handle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from backchannel.config import Settings

FIXTURES = Path(__file__).parent / "fixtures"
SHOPIFY_SECRET = "shpss_test_9c1e6b0f4a7d2e8b3c5f1a0d6e9b2c4f"
STRIPE_SECRET = "whsec_test_Q2xhc3NpY1NlY3JldEZvclRlc3RzT25seQ"
SHOP = "jsmith.myshopify.com"
WOO_SECRET = "wcSecretForTests0123456789abcdefABCDEF"
WOO_STORE = "https://shop.example.com/"
WOO_DELIVERY = "1f0e3dad99908345f7439f8ffabdffc4"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def shopify_signature(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    """Computed independently of backchannel.sources.shopify (Shopify's documented recipe)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def php_json(document: Any) -> bytes:
    """JSON as WooCommerce's ``wp_json_encode`` writes it (PHP ``json_encode`` defaults:
    compact, non-ASCII as ``\\uXXXX``, ``/`` escaped as ``\\/``): the exact bytes it signs."""
    return (
        json.dumps(document, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()
    )


def woo_signature(body: bytes, secret: str = WOO_SECRET) -> str:
    """Computed independently of backchannel.sources (WC_Webhook::generate_signature)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def woo_headers(
    body: bytes,
    *,
    topic: str = "order.created",
    delivery_id: str | None = WOO_DELIVERY,
    signature: str | None = "auto",
    secret: str = WOO_SECRET,
    store: str | None = WOO_STORE,
) -> dict[str, str]:
    """The headers WC_Webhook::deliver() sends (docs/platforms/woocommerce.md, section 2)."""
    resource, _, event = topic.partition(".")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "WooCommerce/9.8.5 Hookshot (WordPress/6.8.1)",
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-ID": "12",
    }
    if store is not None:
        headers["X-WC-Webhook-Source"] = store
    if delivery_id is not None:
        headers["X-WC-Webhook-Delivery-ID"] = delivery_id
    if signature == "auto":
        headers["X-WC-Webhook-Signature"] = woo_signature(body, secret)
    elif signature is not None:
        headers["X-WC-Webhook-Signature"] = signature
    return headers


def woo_order(status: str = "processing", **changes: Any) -> dict[str, Any]:
    """The documented order fixture in ``status``, its dates an hour ago (inside every
    destination's window); unpaid statuses have no payment date."""
    order = fixture("woocommerce_order_processing.json")
    created = datetime.fromtimestamp(time.time() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    paid = datetime.fromtimestamp(time.time() - 3000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    order.update(
        status=status,
        date_created_gmt=created,
        date_modified_gmt=paid,
        date_paid_gmt=paid if status in ("processing", "completed") else None,
    )
    order.update(changes)
    return order


def with_meta(order: dict[str, Any], **values: str | None) -> dict[str, Any]:
    """``order`` with meta_data keys set (a value) or removed (None)."""
    kept = [m for m in order["meta_data"] if m["key"] not in values]
    for index, (key, value) in enumerate(values.items()):
        if value is not None:
            kept.append({"id": 20000 + index, "key": key, "value": value})
    return order | {"meta_data": kept}


@dataclass
class Gateway:
    """A running gateway with webhook secrets configured, and a plain (unauthenticated) client."""

    url: str
    settings: Settings
    db_path: Path
    http: httpx.Client
    key: str

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def shopify(
        self,
        order: dict[str, Any] | bytes,
        *,
        topic: str = "orders/create",
        webhook_id: str | None = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        signature: str | None = "auto",
        secret: str = SHOPIFY_SECRET,
    ) -> httpx.Response:
        body = order if isinstance(order, bytes) else orjson.dumps(order)
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Shop-Domain": SHOP,
            "X-Shopify-API-Version": "2025-10",
        }
        if webhook_id is not None:
            headers["X-Shopify-Webhook-Id"] = webhook_id
        if signature == "auto":
            headers["X-Shopify-Hmac-Sha256"] = shopify_signature(body, secret)
        elif signature is not None:
            headers["X-Shopify-Hmac-Sha256"] = signature
        return self.http.post("/v1/sources/shopify", content=body, headers=headers)

    def woocommerce(self, order: dict[str, Any] | bytes, **header_options: Any) -> httpx.Response:
        """POST an order webhook as WooCommerce delivers it (see :func:`woo_headers`)."""
        body = order if isinstance(order, bytes) else php_json(order)
        return self.http.post(
            "/v1/sources/woocommerce", content=body, headers=woo_headers(body, **header_options)
        )

    def stripe(self, body: bytes, signature: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if signature is not None:
            headers["Stripe-Signature"] = signature
        return self.http.post("/v1/sources/stripe", content=body, headers=headers)

    def conversions(self) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT event, event_id, origin, order_id, session_id FROM conversions ORDER BY id"
        )

    def ledger(self) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT source, order_id, value, currency, event, event_id, attributed_tiktok,"
            " evidence FROM orders ORDER BY id"
        )

    def rejections(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT source, delivery_id, reason FROM ingest_rejections ORDER BY id")
        return [{"source": s, "delivery_id": d, "reason": orjson.loads(r)} for s, d, r in rows]
