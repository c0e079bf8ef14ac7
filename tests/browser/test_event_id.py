"""bc.eventId in the browser equals the event_id the gateway derives, for tricky order ids.

Why in a real browser: the twin functions live in two languages whose "trim" disagree
(JavaScript strips U+FEFF, Python strips U+001C-U+001F and U+0085), and whose strings differ
(UTF-16 vs code points). Only running bc.js's own code in Chromium shows they agree.
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.events import normalize
from backchannel.sessions import event_id

from .conftest import Stack

pytestmark = pytest.mark.browser

NOW = 1_800_000_000.0

ORDER_IDS: list[str | int] = [
    "1001",
    1001,
    0,
    -7,
    2**53 - 1,
    " 1001 ",
    "\t1001\n",
    "\u00a01001\u3000",  # no-break space and ideographic space: both languages strip them
    "\x1c1001\x1f",  # Python strips these, JavaScript's trim() does not
    "\x851001\x85",  # NEL: the same
    "\ufeff1001",  # BOM: JavaScript's trim() strips it, Python does not
    "order 1001",
    "Ünïcødé-订单-😀",
    "#1001/2?x=y&z",
    "1001\u200b",  # zero-width space: whitespace to neither
]
EVENTS = ["CompletePayment", " Purchase ", "Subscribe"]


def server_event_id(order_id: str | int, event: str) -> str:
    """The event_id the ingest path really stores for this order (not a re-implementation)."""
    document = {"event": event, "order_id": order_id, "value": 1, "currency": "USD"}
    return normalize(document, now=NOW).conversion.event_id


@pytest.fixture
def page(stack: Stack, browser: Any) -> Any:
    page = browser.new_page()
    page.goto(stack.shop_url + "/")
    page.wait_for_function("() => !!(window.bc && window.bc.eventId)")
    return page


class TestEventIdInTheBrowser:
    @pytest.mark.parametrize("event", EVENTS)
    def test_bc_event_id_matches_the_server(self, page: Any, event: str) -> None:
        """For every tricky order id, bc.eventId(order, event) == the stored event_id."""
        js_ids = [o if isinstance(o, str) else {"n": o} for o in ORDER_IDS]
        got = page.evaluate(
            "([ids, ev]) => ids.map(o => bc.eventId(typeof o === 'string' ? o : o.n, ev))",
            [js_ids, event],
        )
        expected = [server_event_id(o, event) for o in ORDER_IDS]
        assert got == expected
        assert expected == [event_id(o, event) for o in ORDER_IDS]  # the Python helper agrees

    def test_unsafe_numbers_are_refused(self, page: Any) -> None:
        """A float or a number past 2**53 throws instead of silently producing another id."""
        errors = page.evaluate(
            """() => [1.5, 2 ** 53, null, {}].map(v => {
                 try { bc.eventId(v, 'CompletePayment'); return null; }
                 catch (e) { return e.name; } })"""
        )
        assert errors == ["TypeError"] * 4

    def test_big_integers_as_bigint(self, page: Any) -> None:
        """A BigInt order id gives the same id as the server's arbitrary-size integer."""
        got = page.evaluate("() => bc.eventId(12345678901234567890n, 'CompletePayment')")
        assert got == server_event_id(12345678901234567890, "CompletePayment")
