"""A shopper in real Chromium: land from a TikTok ad, browse, buy; then check both legs.

What is proved end to end: bc.js keeps the ttclid across pages, sees the Pixel load (or be
blocked), mirrors its CompletePayment call; the shop's backend posts the order with only the
session cookie and the email; the gateway stitches the landing session in (ttclid, the
browser's user agent, the Pixel's _ttp cookie) before storing; the worker delivers it to the
TikTok sandbox; and the Pixel and the server leg carry the same event_id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serve.helpers import TIKTOK_PIXEL, sha, wait_for

from .conftest import Stack

pytestmark = pytest.mark.browser

CLICK = "E2E.CLICK.4f9a-123"
EMAIL = "Shopper@Example.com"
ORDER = "1001"
EVENT_ID = f"CompletePayment-{ORDER}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def shop_and_buy(stack: Stack, context: Any, tmp_path: Path) -> dict[str, Any]:
    """Land with ?ttclid&utm, go to the product, check out, reach the thank-you page."""
    page = context.new_page()
    page.goto(f"{stack.shop_url}/?ttclid={CLICK}&utm_source=tiktok&utm_campaign=spring")
    page.wait_for_load_state("load")
    session_id = page.evaluate("bc.sessionId()")
    wait_for(lambda: stack.session(session_id), what="the landing page view to be stored")
    page.click("#to-product")
    page.wait_for_url("**/product")
    assert "ttclid" not in page.url  # the click id is gone from the URL from here on
    page.click("#buy")
    page.wait_for_url("**/checkout")
    page.fill("#email", EMAIL)
    page.click("#pay")
    page.wait_for_url(f"**/thanks?order={ORDER}")
    page.wait_for_load_state("load")
    shot = tmp_path / "thank-you.png"
    page.screenshot(path=str(shot), full_page=True)
    cookies = {c["name"]: c["value"] for c in context.cookies(stack.shop_url)}
    return {
        "session_id": session_id,
        "user_agent": page.evaluate("navigator.userAgent"),
        "cookies": cookies,
        "screenshot": shot,
        "pixel_status_in_page": page.evaluate("bc.pixelStatus()"),
    }


def delivered(stack: Stack, destination: str) -> dict[str, Any]:
    events = wait_for(
        lambda: stack.sandbox.events(destination, event_id=EVENT_ID),
        what=f"{EVENT_ID} to reach the {destination} sandbox",
    )
    assert len(events) == 1
    return events[0]


class TestPixelLoaded:
    def test_server_leg_carries_the_browser_identifiers(
        self, stack: Stack, browser: Any, tmp_path: Path
    ) -> None:
        """The stored and delivered conversion has the landing ttclid, the browser's UA and _ttp."""
        seen = shop_and_buy(stack, browser, tmp_path)
        ttp = seen["cookies"]["_ttp"]
        assert seen["cookies"]["_bc_ttclid"] == CLICK
        stored, provenance = wait_for(lambda: stack.conversion(EVENT_ID), what="the conversion")
        user = stored["user"]
        assert (user["ttclid"], user["ttp"], user["user_agent"]) == (CLICK, ttp, seen["user_agent"])
        assert user["email"] == [sha(EMAIL.lower())]
        assert stored["session_id"] == seen["session_id"]
        assert stored["page_url"].endswith(
            f"/?ttclid={CLICK}&utm_source=tiktok&utm_campaign=spring"
        )
        assert provenance["matched_by"] == "session_id"
        assert provenance["fields"] == {
            "ttclid": "session",
            "ttp": "session",
            "user_agent": "session",
            "page_url": "session",
            # the shop's other Pixels (their stand-ins) set their first-party cookies too
            "fbp": "session",
            "sc_cookie1": "session",
            "rdt_uuid": "session",
        }  # ip: the browser's 127.0.0.1 is not public, so it is (rightly) not sent
        tiktok = delivered(stack, "tiktok")
        assert tiktok["user"]["ttclid"] == CLICK
        assert tiktok["user"]["ttp"] == ttp
        assert tiktok["user"]["user_agent"] == seen["user_agent"]
        assert tiktok["page"]["url"] == stored["page_url"]
        meta = delivered(stack, "meta")
        assert meta["user_data"]["client_user_agent"] == seen["user_agent"]

    def test_pixel_and_server_share_the_event_id(
        self, stack: Stack, browser: Any, tmp_path: Path
    ) -> None:
        """The Pixel stand-in fired CompletePayment with the event_id the server leg delivered."""
        seen = shop_and_buy(stack, browser, tmp_path)
        hits = wait_for(
            lambda: [h for h in stack.pixel_hits() if h["event"] == "CompletePayment"],
            what="the Pixel's CompletePayment",
        )
        assert [h["event_id"] for h in hits] == [EVENT_ID]
        assert delivered(stack, "tiktok")["event_id"] == EVENT_ID
        mirrored = wait_for(
            lambda: stack.rows(
                "SELECT session_id, event, event_id FROM browser_events WHERE event_id = ?"
                " AND platform = 'tiktok'",  # the other Pixels' mirrors carry the id too
                EVENT_ID,
            ),
            what="bc.js's mirror of the Pixel call",
        )
        assert mirrored == [(seen["session_id"], "CompletePayment", EVENT_ID)]

    def test_pixel_instance_calls_are_mirrored(self, stack: Stack, browser: Any) -> None:
        """Multi-pixel pages call ttq.instance(code).track(...): bc.js mirrors those too, once,
        whether the call is queued on the stub (before events.js loads) or made after."""
        page = browser.new_page()
        call = "ttq.instance('" + TIKTOK_PIXEL + "').track('AddToCart', {}, {event_id: '%s'});"
        page.add_init_script(
            "window.addEventListener('DOMContentLoaded', function () {"
            + call.replace("%s", "AddToCart-early")
            + "});"
        )
        page.goto(f"{stack.shop_url}/")
        page.wait_for_load_state("load")
        late = call.replace("%s", "AddToCart-late")
        page.evaluate(late + late + "bc.flush()")
        query = "SELECT event, event_id FROM browser_events WHERE event = ? ORDER BY event_id"
        rows = wait_for(
            lambda: rows if len(rows := stack.rows(query, "AddToCart")) >= 2 else None,
            what="both instance calls mirrored",
        )
        assert rows == [("AddToCart", "AddToCart-early"), ("AddToCart", "AddToCart-late")]
        hits = wait_for(
            lambda: [h for h in stack.pixel_hits() if h["event"] == "AddToCart"] or None,
            what="the Pixel stand-in's instance hits",
        )
        assert {h["pixel"] for h in hits} == {TIKTOK_PIXEL}  # the page's calls still reach it

    def test_session_records_the_landing(self, stack: Stack, browser: Any, tmp_path: Path) -> None:
        """The landing session holds ttclid, UTMs, UA family, load time, and pixel 'loaded'."""
        seen = shop_and_buy(stack, browser, tmp_path)
        session = wait_for(
            lambda: (s := stack.session(seen["session_id"])) and s["page_views"] >= 4 and s,
            what="four page views",
        )
        assert seen["pixel_status_in_page"] == "loaded"
        assert session["pixel_status"] == "loaded"
        assert (session["ttclid"], session["utm_source"], session["utm_campaign"]) == (
            CLICK,
            "tiktok",
            "spring",
        )
        assert session["ttp"] == seen["cookies"]["_ttp"]
        assert session["user_agent"] == seen["user_agent"]
        assert session["browser"] == "Chrome"
        assert session["os"] == "Linux"
        assert session["ip"] == "127.0.0.1"  # from the shop proxy's X-Forwarded-For
        assert session["landing_url"].endswith(
            f"/?ttclid={CLICK}&utm_source=tiktok&utm_campaign=spring"
        )
        assert session["last_url"].endswith(f"/thanks?order={ORDER}")
        assert 0 <= session["load_time_ms"] < 30_000

    def test_thank_you_page_screenshot(self, stack: Stack, browser: Any, tmp_path: Path) -> None:
        """The thank-you page renders: its screenshot is a non-empty PNG."""
        shot = shop_and_buy(stack, browser, tmp_path)["screenshot"]
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 1000


class TestPixelBlocked:
    def test_blocked_pixel_is_recorded_and_the_server_leg_still_delivers(
        self, stack: Stack, browser: Any, tmp_path: Path
    ) -> None:
        """With the Pixel's script blocked: session 'blocked', the order still reaches TikTok."""
        browser.route("**/static/tiktok-pixel.js*", lambda route: route.abort("blockedbyclient"))
        seen = shop_and_buy(stack, browser, tmp_path)
        assert "_ttp" not in seen["cookies"]  # the Pixel never ran, so it set no cookie
        assert seen["pixel_status_in_page"] == "blocked"
        session = wait_for(lambda: stack.session(seen["session_id"]), what="the session")
        assert session["pixel_status"] == "blocked"
        assert stack.pixel_hits() == []
        tiktok = delivered(stack, "tiktok")
        assert tiktok["user"]["ttclid"] == CLICK
        assert tiktok["user"]["user_agent"] == seen["user_agent"]
        assert "ttp" not in tiktok["user"]
        # bc.js still saw the page *try* to fire CompletePayment (into the Pixel's stub queue)
        mirrored = wait_for(
            lambda: stack.rows(
                "SELECT event_id, pixel_status FROM browser_events WHERE event_id = ?"
                " AND platform = 'tiktok'",
                EVENT_ID,
            ),
            what="the mirrored (unsent) Pixel call",
        )
        assert [row[0] for row in mirrored] == [EVENT_ID]
