"""Google's ids through the browser leg, in real Chromium on the demo shop.

What is proved end to end: bc.js keeps gclid/gbraid from the landing URL in its first-party
cookies, reads the _ga cookie (and, lacking a gclid, the one in Google's _gcl_aw), the landing
session stores them (the _ga cookie as the GA4 client id), and the shop's later order, which
carries only the session cookie and the email, is stitched with them. And bc.js mirrors the
thank-you page's gtag('event', 'purchase', {transaction_id}) with the transaction_id as the
event id, while the page's Google tag (a stand-in of gtag.js, examples/shop/static/
gtag-standin.js, since the real one cannot be fetched here) still receives every call.
"""

from __future__ import annotations

from typing import Any

import pytest

from serve.helpers import wait_for

from .conftest import Stack

pytestmark = pytest.mark.browser

GCLID = "EAIaIQobChMIq-fX4ZGbgQMVL4BQBh1AlAh7EAAYASABEgLGsvD_BwE"
GBRAID = "0AAAAAo-GBRAID-e2e"
GA_COOKIE = "GA1.1.1234567890.1700000000"
CLIENT_ID = "1234567890.1700000000"
ORDER = "1001"


def land_and_buy(stack: Stack, context: Any, landing_query: str) -> dict[str, Any]:
    """Land on ``/?<landing_query>``, browse, check out, reach the thank-you page."""
    page = context.new_page()
    page.goto(f"{stack.shop_url}/?{landing_query}")
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


def set_cookie(context: Any, stack: Stack, name: str, value: str) -> None:
    """A cookie another tag set on an earlier visit (gtag.js's _ga, the linker's _gcl_aw)."""
    context.add_cookies([{"name": name, "value": value, "url": stack.shop_url}])


class TestGoogleIds:
    def test_landing_click_ids_and_ga_cookie_reach_the_session_and_the_order(
        self, stack: Stack, browser: Any
    ) -> None:
        set_cookie(browser, stack, "_ga", GA_COOKIE)
        seen = land_and_buy(stack, browser, f"gclid={GCLID}&gbraid={GBRAID}")
        assert (seen["cookies"]["_bc_gclid"], seen["cookies"]["_bc_gbraid"]) == (GCLID, GBRAID)
        assert "_bc_wbraid" not in seen["cookies"]
        session = stack.session(seen["session_id"])
        assert session is not None
        assert (session["gclid"], session["gbraid"], session["wbraid"]) == (GCLID, GBRAID, None)
        assert session["ga_client_id"] == CLIENT_ID
        stored, provenance = wait_for(
            lambda: stack.conversion(f"CompletePayment-{ORDER}"), what="the conversion"
        )
        user = stored["user"]
        assert (user["gclid"], user["gbraid"], user["ga_client_id"]) == (GCLID, GBRAID, CLIENT_ID)
        assert user["wbraid"] is None
        assert provenance["matched_by"] == "session_id"
        fields = provenance["fields"]
        assert (fields["gclid"], fields["gbraid"], fields["ga_client_id"]) == ("session",) * 3

    def test_the_linkers_gclid_stands_in_when_the_url_has_none(
        self, stack: Stack, browser: Any
    ) -> None:
        """_gcl_aw = GCL.<seconds>.<gclid> (Conversion Linker): its gclid is the fallback."""
        set_cookie(browser, stack, "_gcl_aw", f"GCL.1694180392.{GCLID}")
        page = browser.new_page()
        page.goto(f"{stack.shop_url}/")
        page.wait_for_load_state("load")
        session_id = page.evaluate("bc.sessionId()")
        session = wait_for(lambda: stack.session(session_id), what="the page view")
        assert session["gclid"] == GCLID
        assert session["ga_client_id"] is None  # no _ga cookie: nothing sent


class TestGtagMirror:
    def test_the_purchase_is_mirrored_with_its_transaction_id(
        self, stack: Stack, browser: Any
    ) -> None:
        """The thank-you page's gtag purchase: a browser_events row of platform "google" whose
        event_id is the transaction_id; the gtag.js stand-in still got the call."""
        seen = land_and_buy(stack, browser, f"gclid={GCLID}")
        query = (
            "SELECT session_id, event, event_id, platform FROM browser_events"
            " WHERE platform = 'google'"
        )
        rows = wait_for(lambda: stack.rows(query), what="the mirrored gtag purchase")
        assert rows == [(seen["session_id"], "purchase", ORDER, "google")]
        hits = wait_for(
            lambda: [h for h in stack.gtag_hits() if h["event"] == "purchase"] or None,
            what="the gtag.js stand-in's purchase",
        )
        assert [h["params"]["transaction_id"] for h in hits] == [ORDER]
        # TikTok's mirror of the same order is still TikTok's
        tiktok = stack.rows(
            "SELECT event_id FROM browser_events WHERE platform = 'tiktok' AND event = ?",
            "CompletePayment",
        )
        assert tiktok == [(f"CompletePayment-{ORDER}",)]

    def test_calls_before_bc_js_before_and_after_gtag_js_are_mirrored_once(
        self, stack: Stack, browser: Any
    ) -> None:
        """A call queued on the data layer before bc.js ran, one made before the (stand-in)
        gtag.js loaded and one after: each mirrored once; calls without a transaction_id,
        and gtag's own js/config commands, are not; gtag.js still received every call."""
        page = browser.new_page()
        page.add_init_script(  # runs before any of the page's scripts, bc.js included
            "window.dataLayer = window.dataLayer || [];"
            "(function () { dataLayer.push(arguments); })"
            "('event', 'purchase', {transaction_id: 'T-before-bc'});"
        )
        standin = "**/static/gtag-standin.js*"
        page.route(standin, lambda route: route.abort())  # gtag.js held back for now
        page.goto(f"{stack.shop_url}/")
        page.wait_for_load_state("load")
        page.unroute(standin)
        page.evaluate("gtag('event', 'purchase', {transaction_id: 'T-before-gtag'})")
        page.add_script_tag(url=f"{stack.shop_url}/static/gtag-standin.js?id=G-DEMO000000")
        page.evaluate(
            "gtag('event', 'purchase', {transaction_id: 'T-after-gtag', value: 5});"
            "gtag('event', 'purchase', {transaction_id: 'T-after-gtag'});"  # a repeat
            "gtag('event', 'add_to_cart', {value: 5});"  # no transaction_id
            "gtag('event', 'conversion', {send_to: 'AW-1/x', transaction_id: 1002});"
            "bc.flush();"
        )
        query = "SELECT event, event_id FROM browser_events WHERE platform = 'google'"
        rows = wait_for(
            lambda: rows if len(rows := stack.rows(query)) >= 4 else None,
            what="four mirrored gtag calls",
        )
        assert sorted(rows) == [
            ("conversion", "1002"),
            ("purchase", "T-after-gtag"),
            ("purchase", "T-before-bc"),
            ("purchase", "T-before-gtag"),
        ]
        sent = [h["params"].get("transaction_id") for h in page.evaluate("window.__gtagHits")]
        assert sent == ["T-before-bc", "T-before-gtag", "T-after-gtag", "T-after-gtag", None, 1002]
        # still the array gtag.js walks: every push landed in it (the 6 events, js, config)
        assert page.evaluate("dataLayer.length") == 8
