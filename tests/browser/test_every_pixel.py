"""Every Pixel's browser leg, in real Chromium on the demo shop, with all seven destinations.

What is proved end to end, for TikTok, Meta, GA4, Google Ads, Snapchat, Pinterest and Reddit:
bc.js keeps each platform's click id from the landing URL and reads its first-party cookie
(set by the platform's library: here each library's stand-in in examples/shop/static, since
the real ones cannot be fetched); the landing session holds them; the shop's order, which
carries only the session cookie and an email, is stitched with them and delivered once to
each platform's sandbox with that platform's own keys; bc.js mirrors each Pixel's purchase
call with the id its platform deduplicates on, and that mirror row and the delivered event
share the id; and the Dedup page, rendered in Chromium for a logged-in admin, says "both
legs" for the order at each of the seven.

Expected values are written out here (the landing URL's click ids, the cookies read back
from the browser, where each platform's body keeps its keys), not taken from the code under
test.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from backchannel import destinations as registry
from serve.helpers import wait_for

from .conftest import Stack, set_admin_password

pytestmark = pytest.mark.browser

#: the landing URL's click ids, one per platform that has one (GA4 has none)
CLICKS = {
    "ttclid": "E2E.TT.click-7",
    "fbclid": "IwAR2e2eFbClick7",
    "gclid": "EAIaIQobChMI-e2e-gclid-7",
    "ScCid": "7b3a7917-a82a-47e8-9728-e1b3b045abb2",
    "epik": "dj0yJnU9e2eEpikClick7",
    "rdt_cid": "rdt-e2e-click-7",
}
#: gtag.js's cookie from an earlier visit (its stand-in sets none)
GA_COOKIE = "GA1.1.1234567890.1700000000"
GA_CLIENT_ID = "1234567890.1700000000"
ORDER = "1001"
EVENT_ID = f"CompletePayment-{ORDER}"
PASSWORD = "correct horse battery staple 7"

#: each destination's Pixel mirror (its PIXEL_MIRROR), the name its Pixel fires the
#: purchase under on the thank-you page, and the id that call carries
MIRRORED = {
    "tiktok": ("tiktok", "CompletePayment", EVENT_ID),
    "meta": ("meta", "Purchase", EVENT_ID),
    "ga4": ("google", "purchase", ORDER),  # gtag's transaction_id: the order id
    "google_ads": ("google", "purchase", ORDER),
    "snapchat": ("snapchat", "PURCHASE", EVENT_ID),
    "pinterest": ("pinterest", "checkout", EVENT_ID),
    "reddit": ("reddit", "Purchase", EVENT_ID),
}


def pairing_id(destination: str, event: dict[str, Any]) -> str:
    """Where each platform's delivered event keeps the id it pairs with its Pixel's call
    (docs/platforms/*.md): hand-written, one line per platform."""
    return str(
        {
            "tiktok": lambda e: e["event_id"],
            "meta": lambda e: e["event_id"],
            "ga4": lambda e: e["params"]["transaction_id"],
            "google_ads": lambda e: e["orderId"],
            "snapchat": lambda e: e["event_id"],
            "pinterest": lambda e: e["event_id"],
            "reddit": lambda e: e["metadata"]["conversion_id"],
        }[destination](event)
    )


def land_and_buy(stack: Stack, context: Any) -> dict[str, Any]:
    """Land with every click id in the URL (and _ga from an earlier visit), browse, buy."""
    context.add_cookies([{"name": "_ga", "value": GA_COOKIE, "url": stack.shop_url}])
    page = context.new_page()
    query = "&".join(f"{k}={v}" for k, v in CLICKS.items())
    page.goto(f"{stack.shop_url}/?{query}")
    page.wait_for_load_state("load")
    session_id = page.evaluate("bc.sessionId()")
    wait_for(lambda: stack.session(session_id), what="the landing page view to be stored")
    page.click("#to-product")
    page.wait_for_url("**/product")
    page.click("#buy")
    page.wait_for_url("**/checkout")
    page.fill("#email", "shopper@example.com")
    page.click("#pay")
    page.wait_for_url(f"**/thanks?order={ORDER}")
    page.wait_for_load_state("load")
    page.evaluate("bc.flush()")
    cookies = {c["name"]: c["value"] for c in context.cookies(stack.shop_url)}
    return {"session_id": session_id, "cookies": cookies, "page": page}


def delivered(stack: Stack, destination: str) -> list[dict[str, Any]]:
    """Every event the destination's sandbox accepted (its emulator's inspection API)."""
    return wait_for(
        lambda: stack.sandbox.events(destination) or None,
        what=f"the order to reach the {destination} sandbox",
        timeout=60,
    )


def mirror_rows(stack: Stack, platform: str) -> list[tuple[Any, ...]]:
    return stack.rows(
        "SELECT session_id, event, event_id FROM browser_events WHERE platform = ?"
        " AND event_id IS NOT NULL ORDER BY id",
        platform,
    )


class TestEveryPixel:
    def test_each_platforms_click_id_and_cookie_reach_the_session(
        self, stack_all: Stack, browser: Any
    ) -> None:
        """The landing session holds every platform's click id (from the URL) and cookie
        (as each library stand-in set it, read back from the browser)."""
        seen = land_and_buy(stack_all, browser)
        cookies = seen["cookies"]
        assert re.fullmatch(r"fb\.1\.\d{13}\." + re.escape(CLICKS["fbclid"]), cookies["_fbc"])
        assert cookies["_epik"] == CLICKS["epik"]
        session = stack_all.session(seen["session_id"])
        assert session is not None
        named = {k: session[k] for k in ("ttclid", "ttp", "fbclid", "fbp", "fbc", "gclid")}
        assert named == {
            "ttclid": CLICKS["ttclid"],
            "ttp": cookies["_ttp"],
            "fbclid": CLICKS["fbclid"],
            "fbp": cookies["_fbp"],
            "fbc": cookies["_fbc"],
            "gclid": CLICKS["gclid"],
        }
        assert session["ga_client_id"] == GA_CLIENT_ID
        assert orjson.loads(session["ids"]) == {
            "sc_click_id": CLICKS["ScCid"],
            "sc_cookie1": cookies["_scid"],
            "pin_epik": CLICKS["epik"],
            "rdt_cid": CLICKS["rdt_cid"],
            "rdt_uuid": cookies["_rdt_uuid"],
        }

    def test_each_mirror_row_and_its_delivered_event_share_one_id(
        self, stack_all: Stack, browser: Any
    ) -> None:
        """Per destination: bc.js mirrored its Pixel's purchase (under its mirror name, with
        the id the Pixel was given), the Pixel's stand-in was asked to send that id, and the
        event delivered to the destination's sandbox carries the same id where the platform
        pairs on it."""
        seen = land_and_buy(stack_all, browser)
        for destination, (platform, name, dedup_id) in MIRRORED.items():
            rows = wait_for(
                lambda p=platform: mirror_rows(stack_all, p) or None,
                what=f"the {platform} mirror row",
            )
            assert rows == [(seen["session_id"], name, dedup_id)], destination
            [event] = delivered(stack_all, destination)
            assert pairing_id(destination, event) == dedup_id, destination
        # what each Pixel (stand-in) was asked to send: the same ids (its page events,
        # fired on each of the four pages, carry none and are not mirrored)
        for name, key in (
            ("meta", "event_id"),
            ("snapchat", "client_dedup_id"),
            ("pinterest", "event_id"),
            ("reddit", "conversion_id"),
        ):
            sent = [h[key] for h in stack_all.standin_hits(name) if h[key] is not None]
            assert sent == [EVENT_ID], name


def platform_keys(destination: str, event: dict[str, Any]) -> dict[str, Any]:
    """Where each platform's delivered event keeps its click id and first-party cookie
    (docs/platforms/*.md), hand-written: GA4 takes no click id (only the _ga client id),
    Google Ads no cookie (only the gclid); Pinterest's _epik cookie is the epik click id."""
    return {
        "tiktok": lambda e: {"ttclid": e["user"]["ttclid"], "ttp": e["user"]["ttp"]},
        "meta": lambda e: {"fbc": e["user_data"]["fbc"], "fbp": e["user_data"]["fbp"]},
        "ga4": lambda e: {"client_id": e["client_id"]},
        "google_ads": lambda e: {"gclid": e["gclid"]},
        "snapchat": lambda e: {
            "sc_click_id": e["user_data"]["sc_click_id"],
            "sc_cookie1": e["user_data"]["sc_cookie1"],
        },
        "pinterest": lambda e: {"click_id": e["user_data"]["click_id"]},
        "reddit": lambda e: {"click_id": e["click_id"], "uuid": e["user"]["uuid"]},
    }[destination](event)


class TestDoneWhen:
    def test_one_order_reaches_all_seven_once_and_the_dedup_page_says_both_legs(
        self, stack_all: Stack, browser: Any, tmp_path: Path
    ) -> None:
        """Issue 15's "done when": one order placed in the demo shop in Chromium reaches all
        seven sandboxes exactly once with each platform's own keys, and the Dedup page (in
        Chromium, logged in) shows "both legs" for each of them."""
        assert stack_all.settings is not None
        seen = land_and_buy(stack_all, browser)
        cookies = seen["cookies"]
        expected = {
            "tiktok": {"ttclid": CLICKS["ttclid"], "ttp": cookies["_ttp"]},
            "meta": {"fbc": cookies["_fbc"], "fbp": cookies["_fbp"]},
            "ga4": {"client_id": GA_CLIENT_ID},
            "google_ads": {"gclid": CLICKS["gclid"]},
            "snapchat": {"sc_click_id": CLICKS["ScCid"], "sc_cookie1": cookies["_scid"]},
            "pinterest": {"click_id": CLICKS["epik"]},
            "reddit": {"click_id": CLICKS["rdt_cid"], "uuid": cookies["_rdt_uuid"]},
        }
        assert set(expected) == set(registry.NAMES)  # all seven, and only them
        for destination in registry.NAMES:
            [event] = delivered(stack_all, destination)
            assert platform_keys(destination, event) == expected[destination], destination
        # exactly once: every outbox row delivered (one per destination), and no sandbox
        # received anything more a moment later
        # (the sandbox holds an event a moment before the worker marks its row delivered)
        all_delivered = sorted((d, "delivered") for d in registry.NAMES)
        wait_for(
            lambda: (
                stack_all.rows("SELECT destination, status FROM outbox ORDER BY destination")
                == all_delivered
            ),
            what="every outbox row delivered",
        )
        time.sleep(1.0)
        for destination in registry.NAMES:
            assert len(stack_all.sandbox.events(destination)) == 1, destination
            assert stack_all.sandbox.stats(destination)["duplicates"] == 0, destination
        # the Dedup page, as an admin sees it in the browser
        set_admin_password(stack_all.settings, PASSWORD)
        page = seen["page"]
        page.goto(f"{stack_all.gateway_url}/login?next=/admin/dedup")
        page.fill("input[name=name]", "admin")  # the first password's member (members.py)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/admin/dedup*")
        cells = page.locator("[data-testid=dedup] [data-destination]")
        verdicts = {
            cells.nth(i).get_attribute("data-destination"): (
                cells.nth(i).get_attribute("data-verdict"),
                cells.nth(i).inner_text(),
            )
            for i in range(cells.count())
        }
        assert verdicts == dict.fromkeys(registry.NAMES, ("both", "both legs"))
        assert page.locator("[data-testid=dedup] tbody tr").count() == 1
        assert page.locator("[role=alert]").count() == 0
        page.screenshot(path=str(tmp_path / "dedup.png"), full_page=True)
