"""An orders/create webhook finds the custom pixel's session through its checkout token.

Over real HTTP to a real gateway: the pixel's two messages are posted to ``/v1/collect`` as a
sandboxed iframe sends them (``Origin: null``, a site key allowing it, the key in a
``text/plain`` body), then a signed ``orders/create`` arrives. What ingest committed is read
from the SQLite file. The same flow in real Chromium, with the printed pixel, is
tests/browser/test_shopify_pixel.py.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from serve.helpers import add_key

from .conftest import StartGateway
from .helpers import Gateway, fixture

SID = "PixelSess-0123456789AB"
TOKEN = "bd5a8aa1ecd019dd3520ff791ee3a24c"  # the fixture order's checkout_token
ORDER = "820982911946154508"  # the fixture order's id
CLICK = "E.C.P.pixel-landing-1"
TTP = "pixel-ttp-0f3c"


@pytest.fixture
def gateway(start_gateway: StartGateway) -> Gateway:
    return start_gateway()


def pixel(gateway: Gateway, **fields: Any) -> None:
    """One message of the custom pixel, from its sandbox (Origin: null)."""
    key = add_key(gateway.settings, "shopify-pixel", "collect", allow_null_origin=True)
    body: dict[str, Any] = {"key": key, "session_id": SID}
    body.update(fields)
    response = gateway.http.post(
        "/v1/collect",
        content=orjson.dumps(body),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "null"},
    )
    assert response.status_code == 204, response.text


def order(**changes: Any) -> dict[str, Any]:
    """The documented order, without the cart attributes that would name a session and
    without a landing_site (its ttclid would join by click id): only the checkout token can
    join it."""
    body = fixture("shopify_orders_create.json")
    body.update({"note_attributes": [], "landing_site": None, "referring_site": None})
    body.update(changes)
    return body


def stored(gateway: Gateway) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(payload, provenance, session_id) of the order's conversion."""
    ((payload, stitched, session),) = gateway.query(
        "SELECT payload, stitched, session_id FROM conversions WHERE event_id = ?",
        (f"CompletePayment-{ORDER}",),
    )
    return orjson.loads(payload), orjson.loads(stitched or "{}"), session


class TestCheckoutToken:
    def test_the_webhook_order_gets_the_pixels_landing(self, gateway: Gateway) -> None:
        """Landing with ttclid + _ttp, then checkout_completed with the token: the webhook's
        order is stitched to that session and carries its ttclid, _ttp and landing URL."""
        landing = f"https://shop.example/products/tee?ttclid={CLICK}"
        pixel(gateway, url=landing, landing=True, ttclid=CLICK, ttp=TTP)
        pixel(
            gateway,
            page_view=False,
            url="https://shop.example/checkouts/cn/abc/thank-you",
            checkout_token=TOKEN,
            ttp=TTP,
            events=[{"event": "CompletePayment", "event_id": f"CompletePayment-{ORDER}"}],
        )
        response = gateway.shopify(order())
        assert response.status_code == 200, response.text
        payload, provenance, session = stored(gateway)
        assert session == SID
        assert payload["user"]["ttclid"] == CLICK
        assert payload["user"]["ttp"] == TTP
        assert payload["page_url"] == landing
        assert provenance["matched_by"] == "session_id"
        assert provenance["fields"]["ttclid"] == "session"
        assert provenance["fields"]["ttp"] == "session"

    def test_an_unknown_token_joins_nothing(self, gateway: Gateway) -> None:
        """A checkout no pixel reported: stored all the same, with no session."""
        pixel(gateway, url="https://shop.example/", landing=True, ttclid=CLICK)
        response = gateway.shopify(order(checkout_token="ffffffffffffffffffffffffffffffff"))
        assert response.status_code == 200, response.text
        payload, provenance, session = stored(gateway)
        assert session is None
        assert "ttclid" not in payload["user"] or payload["user"]["ttclid"] is None
        assert provenance.get("matched_by") is None

    def test_a_cart_attribute_session_wins_over_the_token(self, gateway: Gateway) -> None:
        """The shop named a session in the cart attributes: that one, not the token's."""
        pixel(gateway, url="https://shop.example/", landing=True, checkout_token=TOKEN)
        other = "ThemeSess-9876543210ZY"
        pixel(gateway, session_id=other, url="https://shop.example/x", ttclid="E.C.P.theme")
        response = gateway.shopify(order(note_attributes=[{"name": "_bc_session", "value": other}]))
        assert response.status_code == 200, response.text
        payload, _, session = stored(gateway)
        assert session == other
        assert payload["user"]["ttclid"] == "E.C.P.theme"
