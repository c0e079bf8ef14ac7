"""The Shopify custom pixel, pasted unchanged, in real Chromium: one stitched, deduplicated order.

What runs: the code ``backchannel snippet shopify`` prints (the CLI run as a subprocess against
the gateway's database), loaded byte for byte into a STAND-IN of Shopify's custom-pixel
sandbox (tests/browser/shopify_standin: a sandboxed iframe, the Web Pixels API surface the
pixel uses, storefront pages publishing ``page_viewed`` and ``checkout_completed``); a real
gateway with its delivery worker; the TikTok and Meta sandboxes over loopback; stand-ins of
TikTok's events.js and Meta's fbevents.js served by Playwright routes for their real URLs.

The story: a shopper lands from a TikTok ad (``?ttclid=…``, with TikTok's ``_ttp`` cookie
already set), later completes a checkout; Shopify's signed ``orders/create`` webhook for that
order arrives. Then the conversion delivered to TikTok carries the landing's ttclid and
``_ttp``, the Pixel stand-ins fired with the event_id the server leg delivered, and the
dedup view counts the order once, with both legs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from backchannel.events import normalize
from backchannel.sandbox import SandboxConfig
from backchannel.sandbox import create_app as create_sandbox
from backchannel.sources import shopify
from backchannel.web.app import Options, create_app
from serve.helpers import (
    FAST_RETRY,
    META_PIXEL,
    TIKTOK_PIXEL,
    Sandbox,
    add_key,
    db_path,
    make_settings,
    wait_for,
)
from sources.helpers import SHOP, SHOPIFY_SECRET, fixture, shopify_signature
from support.server import ServerThread

from .shopify_standin import META_FBEVENTS_JS, TIKTOK_EVENTS_JS, create_standin

pytestmark = pytest.mark.browser

CLICK = "E.C.P.shopify-pixel-7Qx"
TTP = "01HZTTPSTANDIN0000000000AB"  # as if TikTok's Pixel had set it on an earlier page
ORDER = 5396439498987  # the CL capture's order number (docs/platforms/shopify.md §4.2)
TOKEN = "84ad78572dae52a8cbea7d55371afe89"  # a checkout token, as in the RS fixture
EVENT_ID = f"CompletePayment-{ORDER}"
LANDING_PATH = f"/products/tee?ttclid={CLICK}&utm_source=tiktok&utm_campaign=spring"


def checkout(order_id: Any, token: str | None = TOKEN) -> dict[str, Any]:
    """``event.data`` of checkout_completed, shaped as the Web Pixels API documents it."""
    return {
        "checkout": {
            "token": token,
            "order": {"id": order_id, "customer": {"id": "7358220173425", "isFirstOrder": True}},
            "currencyCode": "USD",
            "totalPrice": {"amount": 59.0, "currencyCode": "USD"},
            "lineItems": [
                {
                    "id": "43751530397931",
                    "quantity": 2,
                    "title": "Backchannel Tee",
                    "variant": {
                        "id": "gid://shopify/ProductVariant/41327142600817",
                        "sku": "TEE-1",
                        "price": {"amount": 29.5, "currencyCode": "USD"},
                        "product": {"id": "7234590408817", "title": "Backchannel Tee"},
                    },
                }
            ],
        }
    }


@dataclass
class PixelStack:
    """Gateway (with worker), platform sandboxes, the storefront stand-in, the pasted code."""

    gateway_url: str
    standin_url: str
    db: Path
    sandbox: Sandbox
    admin_key: str
    custom_pixel: str

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def webhook(self, order: dict[str, Any]) -> httpx.Response:
        """A signed orders/create, as Shopify sends it (tests/sources shows the recipe)."""
        body = orjson.dumps(order)
        return httpx.post(
            self.gateway_url + "/v1/sources/shopify",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Shopify-Topic": "orders/create",
                "X-Shopify-Shop-Domain": SHOP,
                "X-Shopify-Webhook-Id": f"wh-{order['id']}",
                "X-Shopify-Hmac-Sha256": shopify_signature(body),
            },
            timeout=30,
        )


def print_snippet(database_url: str, secret_key: str, public_url: str, cwd: Path) -> str:
    """`backchannel snippet shopify`, run as the operator runs it; its stdout, unchanged."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKCHANNEL_")}
    env.update(
        {
            "BACKCHANNEL_DATABASE_URL": database_url,
            "BACKCHANNEL_SECRET_KEY": secret_key,
            "BACKCHANNEL_PUBLIC_URL": public_url,
            "BACKCHANNEL_TIKTOK_PIXEL": TIKTOK_PIXEL,
            "BACKCHANNEL_META_PIXEL": META_PIXEL,
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "backchannel.cli", "snippet", "shopify"],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode("utf-8")


@pytest.fixture
def pixel_stack(tmp_path: Path) -> Iterator[PixelStack]:
    with ExitStack() as s:
        sandbox_server = s.enter_context(
            ServerThread(
                create_sandbox(SandboxConfig(tiktok_pixel=TIKTOK_PIXEL, meta_pixel=META_PIXEL))
            )
        )
        sandbox = Sandbox(
            sandbox_server.url, s.enter_context(httpx.Client(base_url=sandbox_server.url))
        )
        settings = make_settings(
            tmp_path,
            tiktok_base_url=sandbox_server.url,
            meta_base_url=sandbox_server.url,
            tiktok_pixel=TIKTOK_PIXEL,
            meta_pixel=META_PIXEL,
            shopify_webhook_secret=SHOPIFY_SECRET,
        )
        admin_key = add_key(settings, "ops", "admin")
        gateway = s.enter_context(
            ServerThread(
                create_app(settings, Options(worker=True, sandbox=False, retry=FAST_RETRY))
            )
        )
        assert settings.secret_key is not None
        code = print_snippet(settings.database_url, settings.secret_key, gateway.url, tmp_path)
        standin = s.enter_context(ServerThread(create_standin(code)))
        yield PixelStack(gateway.url, standin.url, db_path(settings), sandbox, admin_key, code)


@pytest.fixture
def shopper(browser: Any) -> Any:
    """The browser context with TikTok's and Meta's script URLs served by their stand-ins."""
    browser.route(
        "https://analytics.tiktok.com/**",
        lambda route: route.fulfill(
            status=200, content_type="application/javascript", body=TIKTOK_EVENTS_JS
        ),
    )
    browser.route(
        "https://connect.facebook.net/**",
        lambda route: route.fulfill(
            status=200, content_type="application/javascript", body=META_FBEVENTS_JS
        ),
    )
    return browser


def sandbox_frame(page: Any) -> Any:
    """The custom pixel's sandbox iframe of ``page``."""
    return wait_for(
        lambda: next((f for f in page.frames if "/_standin/sandbox" in f.url), None),
        what="the pixel sandbox iframe",
    )


def hits(page: Any, name: str) -> list[dict[str, Any]]:
    """What a Pixel stand-in recorded in the sandbox (``__pixelHits`` or ``__fbqHits``)."""
    found: list[dict[str, Any]] = sandbox_frame(page).evaluate(f"window.{name} || []")
    return found


def sandbox_errors(page: Any) -> list[str]:
    errors: list[str] = sandbox_frame(page).evaluate("window.__standinErrors")
    return errors


def land(stack: PixelStack, context: Any) -> tuple[Any, str]:
    """A shopper lands from a TikTok ad with TikTok's _ttp cookie; returns (page, session)."""
    context.add_cookies([{"name": "_ttp", "value": TTP, "url": stack.standin_url}])
    page = context.new_page()
    page.goto(stack.standin_url + LANDING_PATH)
    rows = wait_for(
        lambda: stack.rows("SELECT session_id FROM landing_sessions WHERE ttclid = ?", CLICK),
        what="the landing page view to be stored",
    )
    return page, rows[0][0]


def complete_checkout(stack: PixelStack, page: Any, data: dict[str, Any]) -> None:
    """Reach the thank-you page and publish checkout_completed there."""
    page.goto(f"{stack.standin_url}/checkouts/cn/{TOKEN}/thank-you")
    page.evaluate("data => shopifyStandin.publish('checkout_completed', data)", data)


def webhook_order(order_id: int) -> dict[str, Any]:
    """The documented orders/create body for this order and checkout, placed just now: no
    cart attribute naming a session and no landing_site, so only the checkout token joins."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return fixture("shopify_orders_create.json") | {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "checkout_token": TOKEN,
        "note_attributes": [],
        "landing_site": None,
        "referring_site": None,
        "created_at": now,
        "processed_at": now,
    }


def server_event_id(webhook_id: Any) -> str:
    """The event_id the orders/create path derives for a webhook ``id`` (the real mapping and
    normalization, not a re-implementation)."""
    mapped = shopify.map_order(
        webhook_order(0) | {"id": webhook_id}, topic="orders/create", shop_domain=SHOP
    )
    assert mapped.conversion is not None
    return normalize(mapped.conversion, now=time.time()).conversion.event_id


class TestPastedPixel:
    def test_landing_checkout_and_webhook_give_one_stitched_deduplicated_order(
        self, pixel_stack: PixelStack, shopper: Any
    ) -> None:
        """ttclid + _ttp landing, checkout_completed, then the signed webhook: TikTok gets the
        order with the landing's ttclid and _ttp; the Pixel stand-ins fired its event_id; the
        dedup view shows both legs, counted once."""
        stack = pixel_stack
        page, session_id = land(stack, shopper)
        landing = stack.rows(
            "SELECT ttp, utm_source, utm_campaign, landing_url, pixel_status"
            " FROM landing_sessions WHERE session_id = ?",
            session_id,
        )
        assert landing == [(TTP, "tiktok", "spring", stack.standin_url + LANDING_PATH, "loaded")]
        cookies = {c["name"]: c["value"] for c in shopper.cookies(stack.standin_url)}
        assert cookies["_bc_sid"] == session_id  # first-party, through browser.cookie
        assert cookies["_bc_ttclid"] == CLICK
        assert page.evaluate("JSON.parse(localStorage.getItem('_bc_sid')).id") == session_id

        complete_checkout(stack, page, checkout(f"gid://shopify/OrderIdentity/{ORDER}"))
        assert wait_for(
            lambda: stack.rows(
                "SELECT session_id FROM checkout_sessions WHERE checkout_token = ?", TOKEN
            ),
            what="the pixel's checkout report",
        ) == [(session_id,)]
        tiktok_hits = wait_for(
            lambda: [h for h in hits(page, "__pixelHits") if h["kind"] == "track"],
            what="the TikTok Pixel stand-in's CompletePayment",
        )
        assert tiktok_hits == [
            {
                "pixel": TIKTOK_PIXEL,
                "kind": "track",
                "event": "CompletePayment",
                "properties": {
                    "value": 59,
                    "currency": "USD",
                    "content_type": "product",
                    "contents": [
                        {
                            "content_id": "41327142600817",
                            "content_name": "Backchannel Tee",
                            "quantity": 2,
                            "price": 29.5,
                        }
                    ],
                },
                "event_id": EVENT_ID,
            }
        ]
        meta_hits = wait_for(
            lambda: [h for h in hits(page, "__fbqHits") if h["name"] == "Purchase"],
            what="the Meta Pixel stand-in's Purchase",
        )
        assert [(h["call"], h["event_id"]) for h in meta_hits] == [("track", EVENT_ID)]
        assert sandbox_errors(page) == []
        mirrored = wait_for(
            lambda: stack.rows(
                "SELECT session_id, event, event_id, platform FROM browser_events"
                " WHERE event_id = ? ORDER BY platform",
                EVENT_ID,
            ),
            what="the browser leg reported to collect",
        )
        # both Pixels' calls, each under its platform with Meta's name for the event
        assert mirrored == [
            (session_id, "Purchase", EVENT_ID, "meta"),
            (session_id, "CompletePayment", EVENT_ID, "tiktok"),
        ]

        response = stack.webhook(webhook_order(ORDER))
        assert response.status_code == 200, response.text
        assert response.json()["event_id"] == EVENT_ID
        delivered = wait_for(
            lambda: stack.sandbox.events("tiktok", event_id=EVENT_ID),
            what="the server leg at the TikTok sandbox",
        )
        assert len(delivered) == 1
        assert delivered[0]["event_id"] == tiktok_hits[0]["event_id"]
        assert delivered[0]["user"]["ttclid"] == CLICK
        assert delivered[0]["user"]["ttp"] == TTP
        assert delivered[0]["page"]["url"] == stack.standin_url + LANDING_PATH
        meta = wait_for(
            lambda: stack.sandbox.events("meta", event_id=EVENT_ID), what="the Meta server leg"
        )
        assert [(m["event_name"], m["event_id"]) for m in meta] == [("Purchase", EVENT_ID)]

        def dedup() -> dict[str, Any] | None:
            today = datetime.now(UTC).date().isoformat()
            answer = httpx.get(
                stack.gateway_url + "/admin/api/dedup",
                params={"from": today, "to": today},
                headers={"Authorization": f"Bearer {stack.admin_key}"},
            )
            assert answer.status_code == 200, answer.text
            rows = [r for r in answer.json()["rows"] if r["event_id"] == EVENT_ID]
            legs = rows[0]["legs"] if rows else {}
            delivered = all(legs.get(d, {}).get("server_delivered") for d in ("tiktok", "meta"))
            return rows[0] if delivered else None

        row = wait_for(dedup, what="the dedup view's row for the order")
        assert (row["order_id"], row["session_id"]) == (str(ORDER), session_id)
        # both Pixels' calls were mirrored with the event_id: TikTok and Meta pair both legs
        for destination in ("tiktok", "meta"):
            leg = row["legs"][destination]
            assert (leg["same_id"], leg["mismatch"], leg["dedup_id"]) == (True, False, EVENT_ID)
            assert leg["verdict"] == "both"

    def test_the_pixels_event_id_equals_the_webhooks_for_each_id_form(
        self, pixel_stack: PixelStack, shopper: Any
    ) -> None:
        """checkout.order.id as an OrderIdentity gid, an Order gid, a bare number (string or
        number), padded: each fires the event_id the webhook path derives for that order; a
        gid of another type or no id fires nothing."""
        forms: list[tuple[Any, Any]] = [  # (checkout.order.id in the pixel, webhook id)
            (f"gid://shopify/OrderIdentity/{ORDER}", ORDER),
            ("gid://shopify/Order/820982911946154508", 820982911946154508),
            ("5210499102", 5210499102),  # the bare form of Shopify/cli#1630
            (1001, 1001),
            (" \tgid://shopify/OrderIdentity/0042\u00a0", "0042"),
            ("\u3000A-1001\x1c", "A-1001"),  # Python's strip takes U+001C; trim() would not
        ]
        refused = ["gid://shopify/Customer/7", None, 1.5]
        page, _ = land(pixel_stack, shopper)
        page.goto(f"{pixel_stack.standin_url}/checkouts/cn/{TOKEN}/thank-you")
        for pixel_id, _webhook_id in forms:
            page.evaluate(
                "data => shopifyStandin.publish('checkout_completed', data)",
                checkout(pixel_id, token=None),
            )
        for pixel_id in refused:
            page.evaluate(
                "data => shopifyStandin.publish('checkout_completed', data)",
                checkout(pixel_id, token=None),
            )
        page.evaluate("shopifyStandin.publish('checkout_completed', {checkout: {}})")
        fired = wait_for(
            lambda: (
                (t := [h for h in hits(page, "__pixelHits") if h["kind"] == "track"])
                and len(t) >= len(forms)
                and t
            ),
            what="one Pixel call per usable order id",
        )
        expected = [server_event_id(webhook_id) for _, webhook_id in forms]
        assert expected[:2] == [EVENT_ID, "CompletePayment-820982911946154508"]
        assert [h["event_id"] for h in fired] == expected
        # the refused ones: published after the usable ones, and nothing more was fired
        published = page.evaluate("shopifyStandin.published.length")
        assert published == 1 + len(forms) + len(refused) + 1
        time.sleep(0.5)  # let any (wrong) late call land before counting
        assert len([h for h in hits(page, "__pixelHits") if h["kind"] == "track"]) == len(forms)
        meta = [h["event_id"] for h in hits(page, "__fbqHits") if h["name"] == "Purchase"]
        assert meta == expected
        assert sandbox_errors(page) == []

    def test_a_blocked_tiktok_pixel_is_reported_and_the_checkout_still_is(
        self, pixel_stack: PixelStack, browser: Any
    ) -> None:
        """events.js blocked (an ad blocker): the session says 'blocked', no Pixel call is
        recorded as fired, and the checkout still maps the token to the session."""
        browser.route(
            "https://analytics.tiktok.com/**", lambda route: route.abort("blockedbyclient")
        )
        browser.route(
            "https://connect.facebook.net/**",
            lambda route: route.fulfill(
                status=200, content_type="application/javascript", body=META_FBEVENTS_JS
            ),
        )
        page, session_id = land(pixel_stack, browser)
        [(status,)] = pixel_stack.rows(
            "SELECT pixel_status FROM landing_sessions WHERE session_id = ?", session_id
        )
        assert status == "blocked"
        complete_checkout(pixel_stack, page, checkout(f"gid://shopify/OrderIdentity/{ORDER}"))
        assert wait_for(
            lambda: pixel_stack.rows(
                "SELECT session_id FROM checkout_sessions WHERE checkout_token = ?", TOKEN
            ),
            what="the pixel's checkout report",
        ) == [(session_id,)]
        assert hits(page, "__pixelHits") == []  # the stand-in never loaded
        # the call went into the stub's queue (the page did try), and was reported as such
        mirrored = wait_for(
            lambda: pixel_stack.rows(
                "SELECT event_id, pixel_status FROM browser_events WHERE event_id = ?"
                " AND platform = 'tiktok'",
                EVENT_ID,
            ),
            what="the reported (unsent) Pixel call",
        )
        assert mirrored == [(EVENT_ID, "blocked")]


class TestOtherPlatformsIds:
    """The ids other destinations declare reach the session through the pixel, as through
    bc.js. One is declared for the test (``xx_click_id`` from ``XxCid``, the ``_xx`` cookie),
    so this holds whatever destinations exist; the code is rendered in this process, with
    that declaration, by the function the CLI prints with."""

    def test_declared_click_id_and_cookie_reach_the_session(
        self, tmp_path: Path, shopper: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """?XxCid=… and the _xx cookie are sent as ids; a later page keeps the click id from
        the pixel's _bc_xx_click_id cookie."""
        from backchannel import identifiers, shopify_pixel
        from backchannel.destinations.base import Identifier

        declared = {
            **identifiers.generic(),
            "xx_click_id": Identifier("xx_click_id", "click", url_param="XxCid"),
            "xx_cookie": Identifier("xx_cookie", "browser", cookie="_xx"),
        }
        monkeypatch.setattr(identifiers, "generic", lambda: declared)
        settings = make_settings(tmp_path)
        key = add_key(settings, "shopify-pixel", "collect", allow_null_origin=True)
        with ExitStack() as s:
            gateway = s.enter_context(
                ServerThread(create_app(settings, Options(worker=False, sandbox=False)))
            )
            code = shopify_pixel.render(
                shopify_pixel.PixelConfig(
                    endpoint=shopify_pixel.collect_url(gateway.url),
                    key=key,
                    event="CompletePayment",
                    tiktok_pixel=None,
                    meta_pixel=None,
                    click_days=7,
                    platform_ids=shopify_pixel.platform_ids(),
                )
            )
            standin = s.enter_context(ServerThread(create_standin(code)))
            shopper.add_cookies([{"name": "_xx", "value": "xx-browser-1", "url": standin.url}])
            page = shopper.new_page()
            page.goto(standin.url + "/products/tee?XxCid=xx-click-9")
            db = db_path(settings)

            def sessions() -> list[tuple[str, dict[str, str]]]:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
                try:
                    rows = con.execute(
                        "SELECT session_id, ids FROM landing_sessions ORDER BY first_seen"
                    ).fetchall()
                finally:
                    con.close()
                return [(sid, orjson.loads(found or "{}")) for sid, found in rows]

            [(first, found)] = wait_for(sessions, what="the landing with its ids")
            assert found == {"xx_click_id": "xx-click-9", "xx_cookie": "xx-browser-1"}
            cookies = {c["name"]: c["value"] for c in shopper.cookies(standin.url)}
            assert cookies["_bc_xx_click_id"] == "xx-click-9"
            # a new visit (session gone) without the parameter: the click id comes from the
            # pixel's own cookie of the earlier landing
            shopper.clear_cookies(name="_bc_sid")
            page.evaluate("localStorage.removeItem('_bc_sid')")
            page.goto(standin.url + "/collections/all")
            later = wait_for(
                lambda: (rows := sessions()) and len(rows) == 2 and rows, what="a second session"
            )
            assert later[1][0] != first
            assert later[1][1] == {"xx_click_id": "xx-click-9", "xx_cookie": "xx-browser-1"}
            assert sandbox_errors(page) == []
