"""Shared by the sources tests: fixtures on disk, secrets, signing, a gateway handle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from backchannel.config import Settings

FIXTURES = Path(__file__).parent / "fixtures"
SHOPIFY_SECRET = "shpss_test_9c1e6b0f4a7d2e8b3c5f1a0d6e9b2c4f"
STRIPE_SECRET = "whsec_test_Q2xhc3NpY1NlY3JldEZvclRlc3RzT25seQ"
SHOP = "jsmith.myshopify.com"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((FIXTURES / name).read_bytes())
    return data


def shopify_signature(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    """Computed independently of backchannel.sources.shopify (Shopify's documented recipe)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


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
