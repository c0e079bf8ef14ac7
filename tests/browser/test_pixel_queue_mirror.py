"""bc.js's mirror of the queue-function Pixels (fbq, snaptr, pintrk, rdt) in real Chromium.

Each Pixel snippet makes ``window.<name>`` a stub that queues calls until the platform's
library loads, and the library then hooks the stub (Meta, Snap, Reddit) or replaces it
(the Pinterest stand-in does, the harder case). What is proved, on a page where bc.js comes
AFTER the snippets (the stub already queued calls) and the libraries load late: every
purchase call is mirrored exactly once under its platform with the id its platform pairs on,
whether it was made before bc.js ran, before the library loaded, or after; page events and
calls whose name the server would refuse are not mirrored; the Pixel (its stand-in) still
receives every call; nothing the page gives a Pixel besides the event name and the dedup id
(an email for advanced matching, a value) reaches Backchannel; and a Pixel bc.js cannot hook
(a non-configurable global) keeps working, unmirrored, with no error on the page.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from serve.helpers import wait_for

from .conftest import Stack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from shop.app import PIXEL_SNIPPETS

pytestmark = pytest.mark.browser

EMAIL = "advanced.matching@example.com"
#: platform -> the call that fires its purchase with a dedup id (%s) and an email beside it
PURCHASE = {
    "meta": "fbq('track', 'Purchase', {value: 5, em: '" + EMAIL + "'}, {eventID: '%s'});",
    "snapchat": "snaptr('track', 'PURCHASE', {user_email: '" + EMAIL + "',"
    " client_dedup_id: '%s'});",
    "pinterest": "pintrk('track', 'checkout', {em: '" + EMAIL + "', event_id: '%s'});",
    "reddit": "rdt('track', 'Purchase', {email: '" + EMAIL + "', conversionId: '%s'});",
}
#: platform -> (its purchase event name, what its stand-in records the dedup id under)
NAMES = {
    "meta": ("Purchase", "event_id"),
    "snapchat": ("PURCHASE", "client_dedup_id"),
    "pinterest": ("checkout", "event_id"),
    "reddit": ("Purchase", "conversion_id"),
}
STANDINS = {name: PIXEL_SNIPPETS[name][1] for name in PURCHASE}


def calls(stage: str) -> str:
    """Every platform's purchase, its id ``<platform>-<stage>``."""
    return "".join(code.replace("%s", f"{name}-{stage}") for name, code in PURCHASE.items())


def late_page(stack: Stack) -> str:
    """The snippets first (each init'ing with an email, and queueing a purchase), then bc.js."""
    snippets = "\n".join(
        code.replace("{url}", url).replace("{id}", account)
        for code, url, account in (PIXEL_SNIPPETS[name] for name in PURCHASE)
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>late</title>
{snippets}
<script>
  fbq('init', '1234567890123', {{em: '{EMAIL}'}});
  {calls("before-bc")}
</script>
<script src="/bc.js" data-key="{stack.site_key}"></script>
</head><body><p>bc.js after the Pixels</p></body></html>"""


def mirrored(stack: Stack, platform: str) -> list[tuple[Any, ...]]:
    return stack.rows(
        "SELECT event, event_id FROM browser_events WHERE platform = ? ORDER BY event_id",
        platform,
    )


class TestQueuePixels:
    def test_bc_js_after_the_snippets_and_libraries_loading_late(
        self, stack: Stack, browser: Any
    ) -> None:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        beacons: list[str] = []
        page.on(
            "request",
            lambda r: beacons.append(r.post_data or "") if "/v1/collect" in r.url else None,
        )
        late = f"{stack.shop_url}/late"
        page.route(
            late, lambda route: route.fulfill(body=late_page(stack), content_type="text/html")
        )
        for url in STANDINS.values():  # the libraries are held back for now
            page.route(f"**{url}*", lambda route: route.abort())
        page.goto(late)
        page.wait_for_load_state("load")
        page.evaluate(calls("before-lib"))
        for url in STANDINS.values():
            page.unroute(f"**{url}*")
            page.add_script_tag(url=f"{stack.shop_url}{url}")
        page.evaluate(
            calls("after-lib")
            + calls("after-lib")  # a repeat: the Pixel gets it twice, the mirror keeps one
            + "fbq('track', 'AddToCart');"  # no eventID: mirrored without an id
            + "fbq('trackSingle', '1234567890123', 'Purchase', {}, {eventID: 'meta-single'});"
            + "fbq('trackCustom', 'Add-To-Cart', {}, {eventID: 'bad-name'});"  # refused name
            + "snaptr('track', 'PAGE_VIEW'); rdt('track', 'PageVisit');"  # page events
            + "bc.flush();"
        )
        stages = ("after-lib", "before-bc", "before-lib")
        for platform, (name, _) in NAMES.items():
            want = [(name, f"{platform}-{stage}") for stage in stages]
            if platform == "meta":
                want = [("AddToCart", None), *want, ("Purchase", "meta-single")]
            count = len(want)
            rows = wait_for(
                lambda p=platform, n=count: r if len(r := mirrored(stack, p)) >= n else None,
                what=f"the {platform} calls mirrored",
            )
            assert sorted(rows, key=lambda r: (r[1] or "", r[0])) == sorted(
                want, key=lambda r: (r[1] or "", r[0])
            ), platform
        # the Pixels (stand-ins) received every call, once each (the repeat twice)
        hits = page.evaluate("window.__standinHits")
        for platform, (_, key) in NAMES.items():
            sent = [h[key] for h in hits[platform] if h[key] and h[key].startswith(platform)]
            expected = [f"{platform}-{s}" for s in ("before-bc", "before-lib")]
            expected += [f"{platform}-after-lib"] * 2
            if platform == "meta":
                expected.append("meta-single")
            assert sent == expected, platform
        assert errors == []
        assert beacons
        assert not [b for b in beacons if EMAIL in b or '"value"' in b]

    def test_a_pixel_bc_js_cannot_hook_keeps_working(self, stack: Stack, browser: Any) -> None:
        """rdt defined non-configurable before bc.js: bc.js leaves it alone (nothing mirrored,
        no error), the page's calls still reach it, and the other Pixels are mirrored."""
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.add_init_script(
            "window.__rdtCalls = [];"
            "Object.defineProperty(window, 'rdt', {configurable: false, writable: true,"
            " value: function () { window.__rdtCalls.push([].slice.call(arguments)); }});"
        )
        page.goto(f"{stack.shop_url}/")
        page.wait_for_load_state("load")
        page.evaluate(
            "rdt('track', 'Purchase', {conversionId: 'R-1'});"
            "fbq('track', 'Purchase', {}, {eventID: 'M-1'});"
            "bc.flush();"
        )
        wait_for(lambda: mirrored(stack, "meta"), what="fbq's call mirrored")
        assert mirrored(stack, "meta") == [("Purchase", "M-1")]
        assert mirrored(stack, "reddit") == []
        assert page.evaluate("window.__rdtCalls.length") >= 1
        assert ["track", "Purchase", {"conversionId": "R-1"}] in page.evaluate("window.__rdtCalls")
        assert errors == []
