"""Several properties in one install, end to end over real HTTP (issue 14).

Two properties, ``default`` and ``eu``, each with two TikTok pixels and a Meta pixel (six
connections, each with its own token), a real gateway with its worker, and a sandbox that
takes each pixel ONLY with its own connection's token (``pixel_tokens``): so an event sent to
the wrong pixel, or with the wrong property's token, is refused by the sandbox and never
counted. Then:

- events sent with each property's ingest key reach exactly that property's three pixels;
- the same order id in both properties is two conversions (the event_id is the one the browser
  Pixel derives, ``{event}-{order_id}``; the dedup key adds the property), each delivered to its
  own pixels once;
- cross-property keys are refused with 403 and the reason: a conversion naming another
  property's landing session, a site key used on another property's origin or naming another
  property's session; one property's key sees none of another's events;
- webhooks route by shop domain (Shopify) and account or signing secret (Stripe): another
  property's secret cannot write into it, an unknown shop or account is 403 and recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import stripe as stripe_sdk

from backchannel import credentials
from backchannel.config import Settings
from backchannel.delivery import RetryPolicy
from backchannel.ingest import FOREIGN_SESSION
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.store import open_store
from backchannel.store.base import DEFAULT_PROPERTY, Connection, Store
from backchannel.web.app import Options, create_app
from sources.helpers import fixture, php_json, shopify_signature, woo_headers, woo_order
from support.server import ServerThread

from .helpers import conversion, make_settings, wait_for

#: property -> connection label -> (destination, pixel, token)
CONNECTIONS: dict[str, dict[str, tuple[str, str, str]]] = {
    "default": {
        "tiktok": ("tiktok", "CDEFAULTPIX01", "token-default-tiktok-one"),
        "tiktok-2": ("tiktok", "CDEFAULTPIX02", "token-default-tiktok-two"),
        "meta": ("meta", "111111111111", "token-default-meta-0001"),
    },
    "eu": {
        "tiktok": ("tiktok", "CEUROPEPIX001", "token-eu-tiktok-one-01"),
        "tiktok-2": ("tiktok", "CEUROPEPIX002", "token-eu-tiktok-two-02"),
        "meta": ("meta", "222222222222", "token-eu-meta-00000001"),
    },
}
ORIGINS = {"default": "https://default.shop.example", "eu": "https://eu.shop.example"}
SHOPS = {"default": "default-shop.myshopify.com", "eu": "eu-shop.myshopify.com"}
SHOPIFY_SECRETS = {"default": "shpss_default_property_secret", "eu": "shpss_eu_property_secret"}
STRIPE_SECRETS = {"default": "whsec_default_property_secret", "eu": "whsec_eu_property_secret"}
WOO_SECRETS = {"default": "wc_default_property_secret", "eu": "wc_eu_property_secret"}
WOO_STORES = {"default": "https://default.shop.example/", "eu": "https://eu.shop.example/"}
EU_STRIPE_ACCOUNT = "acct_1EuropeShop"


@dataclass
class Install:
    url: str
    sandbox: str
    settings: Settings
    ids: dict[str, int]
    keys: dict[str, str]
    site_keys: dict[str, str]
    http: httpx.Client

    def store(self) -> Store:
        return open_store(self.settings.database_url)

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        store = self.store()
        try:
            return store.read(query, params)
        finally:
            store.close()

    def post(self, prop: str, body: Any) -> httpx.Response:
        return self.http.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {self.keys[prop]}"}
        )

    def collect(self, prop: str, origin: str, message: dict[str, Any]) -> httpx.Response:
        body = orjson.dumps({"key": self.site_keys[prop], **message})
        return self.http.post(
            "/v1/collect",
            content=body,
            headers={"Origin": origin, "Content-Type": "text/plain"},
        )

    def sandbox_events(self, destination: str, pixel: str) -> list[str]:
        found = httpx.get(
            f"{self.sandbox}/_sandbox/{destination}/events", params={"pixel": pixel, "limit": 500}
        ).json()["events"]
        return sorted(e["event_id"] for e in found)


def new_key(store: Store, scope: str, property_id: int) -> str:
    key = credentials.new_api_key(scope)
    prefix = credentials.key_display_prefix(key)
    store.add_key("k", scope, prefix, credentials.key_hash(key), time.time(), property_id)
    return key


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Install]:
    owners = {
        pixel: token for labels in CONNECTIONS.values() for _, pixel, token in labels.values()
    }
    with ServerThread(create_sandbox(SandboxConfig(pixel_tokens=owners))) as sandbox:
        settings = make_settings(tmp_path, tiktok_base_url=sandbox.url, meta_base_url=sandbox.url)
        cipher = credentials.load_cipher(settings)
        store = open_store(settings.database_url)
        try:
            eu = store.create_property("eu", time.time(), destinations=("tiktok", "meta"))
            assert eu is not None
            ids = {"default": DEFAULT_PROPERTY, "eu": eu}
            keys, site_keys = {}, {}
            for prop, labels in CONNECTIONS.items():
                for label, (destination, pixel, token) in labels.items():
                    store.set_connection(
                        Connection(
                            destination,
                            pixel,
                            credentials.encrypt(cipher, token),
                            token[-4:],
                            None,
                            time.time(),
                            property_id=ids[prop],
                            label=label,
                        )
                    )
                keys[prop] = new_key(store, "ingest", ids[prop])
                site_keys[prop] = new_key(store, "collect", ids[prop])
                store.bind(ids[prop], "origin", ORIGINS[prop])
                store.bind(ids[prop], "shopify", SHOPS[prop])
                for source, secrets in (("shopify", SHOPIFY_SECRETS), ("stripe", STRIPE_SECRETS)):
                    store.set_source_secret(
                        source,
                        credentials.encrypt(cipher, secrets[prop]),
                        time.time(),
                        property_id=ids[prop],
                    )
                store.set_source_secret(
                    "woocommerce",
                    credentials.encrypt(cipher, WOO_SECRETS[prop]),
                    time.time(),
                    WOO_STORES[prop],
                    property_id=ids[prop],
                )
            store.bind(eu, "stripe", EU_STRIPE_ACCOUNT)
        finally:
            store.close()
        options = Options(worker=True, sandbox=False, retry=RetryPolicy(base=0.05, cap=0.5))
        with (
            ServerThread(create_app(settings, options)) as gateway,
            httpx.Client(base_url=gateway.url, timeout=30) as http,
        ):
            yield Install(gateway.url, sandbox.url, settings, ids, keys, site_keys, http)


def settled(install: Install) -> bool:
    rows = install.sql("SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'in_flight')")
    return rows[0][0] == 0


class TestDelivery:
    def test_each_property_s_events_reach_only_its_own_pixels(self, install: Install) -> None:
        """Three orders of the default property and four of eu's (orders 1001 and 1002 in
        both): each pixel gets exactly its property's orders, once, with its own token."""
        orders = {"default": [1001, 1002, 1003], "eu": [1001, 1002, 2001, 2002]}
        for prop, numbers in orders.items():
            response = install.post(prop, {"events": [conversion(n) for n in numbers]})
            assert response.status_code == 202, response.text
            assert response.json()["accepted"] == len(numbers)
        wait_for(lambda: settled(install), timeout=60, what="every row delivered")
        assert install.sql("SELECT DISTINCT status FROM outbox") == [("delivered",)]
        for prop, labels in CONNECTIONS.items():
            expected = sorted(f"CompletePayment-{n}" for n in orders[prop])
            for destination, pixel, _ in labels.values():
                assert install.sandbox_events(destination, pixel) == expected, (prop, pixel)
        for destination in ("tiktok", "meta"):
            stats = httpx.get(f"{install.sandbox}/_sandbox/{destination}/stats").json()
            assert stats["duplicates"] == 0
            assert stats["rejected_requests"] == 0  # no token ever went to another's pixel
        # the same order id in two properties: two conversions, three rows each
        assert install.sql(
            "SELECT property_id, COUNT(*) FROM conversions WHERE event_id = ?"
            " GROUP BY property_id ORDER BY property_id",
            "CompletePayment-1001",
        ) == [(DEFAULT_PROPERTY, 1), (install.ids["eu"], 1)]
        for prop in CONNECTIONS:
            seen = install.http.get(
                "/v1/events/CompletePayment-1001",
                headers={"Authorization": f"Bearer {install.keys[prop]}"},
            ).json()
            assert sorted((d["destination"], d["connection"]) for d in seen["deliveries"]) == [
                ("meta", "meta"),
                ("tiktok", "tiktok"),
                ("tiktok", "tiktok-2"),
            ]
        # a key never sees another property's events, nor sends a duplicate into it
        assert (
            install.http.get(
                "/v1/events/CompletePayment-1003",
                headers={"Authorization": f"Bearer {install.keys['eu']}"},
            ).status_code
            == 404
        )
        again = install.post("eu", conversion(1003))
        assert again.json()["events"][0]["status"] == "accepted"  # eu's own first 1003


class TestCrossPropertyRefusals:
    def test_a_conversion_naming_another_property_s_session_is_403(self, install: Install) -> None:
        seen = install.collect(
            "default",
            ORIGINS["default"],
            {"session_id": "sess-default-1", "url": "https://x.example/"},
        )
        assert seen.status_code == 204, seen.text
        refused = install.post("eu", conversion(3001, session_id="sess-default-1"))
        assert refused.status_code == 403
        assert refused.json() == {
            "error": "forbidden",
            "errors": [{"path": "session_id", "reason": FOREIGN_SESSION}],
        }
        batch = install.post(
            "eu", {"events": [conversion(3002), conversion(3003, session_id="sess-default-1")]}
        )
        assert batch.status_code == 403
        assert batch.json()["errors"][0]["path"] == "events[1].session_id"
        assert install.sql("SELECT COUNT(*) FROM conversions") == [(0,)]
        mine = install.post("default", conversion(3001, session_id="sess-default-1"))
        assert mine.status_code == 202, mine.text

    def test_site_keys_write_only_into_their_property(self, install: Install) -> None:
        """A site key on another property's origin, or naming its session, is 403."""
        wrong_origin = install.collect("eu", ORIGINS["default"], {"session_id": "sess-eu-1"})
        assert wrong_origin.status_code == 403
        assert "belongs to another property" in wrong_origin.json()["errors"][0]["reason"]
        own = install.collect("eu", ORIGINS["eu"], {"session_id": "sess-eu-1"})
        assert own.status_code == 204, own.text
        foreign = install.collect("default", ORIGINS["default"], {"session_id": "sess-eu-1"})
        assert foreign.status_code == 403
        assert foreign.json()["errors"][0]["path"] == "session_id"
        unknown = install.collect("eu", "https://elsewhere.example", {"session_id": "sess-eu-2"})
        assert unknown.status_code == 403
        assert install.sql("SELECT session_id, property_id FROM landing_sessions") == [
            ("sess-eu-1", install.ids["eu"])
        ]

    def test_shopify_routes_by_shop_and_refuses_unknown_shops(self, install: Install) -> None:
        order = fixture("shopify_orders_create.json")

        def send(shop: str, secret: str, order_id: int, webhook: str) -> httpx.Response:
            body = orjson.dumps({**order, "id": order_id})
            return install.http.post(
                "/v1/sources/shopify",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Shopify-Topic": "orders/create",
                    "X-Shopify-Shop-Domain": shop,
                    "X-Shopify-Webhook-Id": webhook,
                    "X-Shopify-Hmac-Sha256": shopify_signature(body, secret),
                },
            )

        ok = send(SHOPS["eu"], SHOPIFY_SECRETS["eu"], 5001, "w-1")
        assert ok.status_code == 200, ok.text
        # the default property's secret cannot write into eu (its shop names eu)
        forged = send(SHOPS["eu"], SHOPIFY_SECRETS["default"], 5002, "w-2")
        assert forged.status_code == 401
        unknown = send("stranger.myshopify.com", SHOPIFY_SECRETS["eu"], 5003, "w-3")
        assert unknown.status_code == 403
        assert unknown.json()["error"] == "unknown_shop"
        assert "stranger.myshopify.com" in unknown.json()["errors"][0]["reason"]
        assert install.sql("SELECT property_id, order_id FROM orders ORDER BY id") == [
            (install.ids["eu"], "5001")
        ]
        rejected = install.sql(
            "SELECT source, property_id, reason FROM ingest_rejections ORDER BY id"
        )
        assert [(s, p) for s, p, _ in rejected] == [
            ("shopify", install.ids["eu"]),
            ("shopify", None),
        ]
        assert b"unknown_shop" in bytes(rejected[1][2])

    def test_stripe_routes_by_account_or_signing_secret(self, install: Install) -> None:
        event = fixture("stripe_customer_created.json")

        def send(secret: str, account: str | None, event_id: str) -> httpx.Response:
            item = {**event, "id": event_id}
            if account is not None:
                item["account"] = account
            body = orjson.dumps(item)
            header = stripe_sdk.WebhookSignature.generate_signature_header(
                body.decode(), secret, timestamp=int(time.time())
            )
            return install.http.post(
                "/v1/sources/stripe",
                content=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": header},
            )

        eu, default = install.ids["eu"], DEFAULT_PROPERTY
        assert send(STRIPE_SECRETS["eu"], EU_STRIPE_ACCOUNT, "evt_1").status_code == 200
        assert send(STRIPE_SECRETS["default"], None, "evt_2").status_code == 200  # its secret
        wrong = send(STRIPE_SECRETS["default"], EU_STRIPE_ACCOUNT, "evt_3")
        assert wrong.status_code == 403
        assert wrong.json()["error"] == "wrong_property"
        unknown = send(STRIPE_SECRETS["eu"], "acct_1Stranger", "evt_4")
        assert unknown.status_code == 403
        assert unknown.json()["error"] == "unknown_account"
        unsigned = send("whsec_nobody_s_secret", None, "evt_5")
        assert unsigned.status_code == 401
        assert install.sql("SELECT property_id, origin FROM conversions ORDER BY id") == [
            (eu, "stripe"),
            (default, "stripe"),
        ]
        # refused before a property could be named: recorded without one
        rejected = install.sql("SELECT property_id, reason FROM ingest_rejections ORDER BY id")
        assert [p for p, _ in rejected] == [None, None, None]
        assert [orjson.loads(bytes(r))["error"] for _, r in rejected] == [
            "wrong_property",
            "unknown_account",
            "bad_signature",
        ]

    def test_woocommerce_routes_by_its_store_url(self, install: Install) -> None:
        """X-WC-Webhook-Source names the property whose stored store URL it is; another
        property's secret cannot sign for it; a store of no property is 403 and recorded."""

        def send(store: str, secret: str, order_id: int, delivery: str) -> httpx.Response:
            body = php_json(woo_order(id=order_id))
            headers = woo_headers(body, secret=secret, store=store, delivery_id=delivery)
            return install.http.post("/v1/sources/woocommerce", content=body, headers=headers)

        ok = send(WOO_STORES["eu"], WOO_SECRETS["eu"], 7001, "d-1")
        assert ok.status_code == 200, ok.text
        forged = send(WOO_STORES["eu"], WOO_SECRETS["default"], 7002, "d-2")
        assert forged.status_code == 401
        unknown = send("https://stranger.example/", WOO_SECRETS["eu"], 7003, "d-3")
        assert unknown.status_code == 403
        assert unknown.json()["error"] == "unknown_store"
        assert install.sql("SELECT property_id, order_id FROM orders ORDER BY id") == [
            (install.ids["eu"], "7001")
        ]
        assert install.sql(
            "SELECT property_id FROM ingest_rejections WHERE source = 'woocommerce' ORDER BY id"
        ) == [(install.ids["eu"],), (None,)]
