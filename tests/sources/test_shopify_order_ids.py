"""One order id on both Shopify legs: the webhook's ``id`` and the custom pixel's gid.

The pixel's ``checkout_completed`` gives ``checkout.order.id`` as a gid
(``gid://shopify/OrderIdentity/5396439498987``, some stores the bare number); the webhook
gives ``id`` (a JSON number) and ``admin_graphql_api_id`` (``gid://shopify/Order/…``).
docs/platforms/shopify.md §1 records why their numbers are the same order. Expected values
here are written out by hand; the JavaScript twin is checked against these in Chromium
(tests/browser/test_shopify_pixel.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from backchannel.events import normalize
from backchannel.sources import SourceError, shopify

from .helpers import SHOP, fixture

NOW = 1_800_000_000.0


class TestOrderNumber:
    @pytest.mark.parametrize(
        ("raw", "expected"),
        [
            (5396439498987, "5396439498987"),  # the webhook's id: a JSON number
            ("5396439498987", "5396439498987"),  # a bare number as text (Shopify/cli#1630)
            ("gid://shopify/OrderIdentity/5396439498987", "5396439498987"),  # the pixel
            ("gid://shopify/Order/820982911946154508", "820982911946154508"),  # admin gid
            ("  gid://shopify/Order/1001\n", "1001"),  # trimmed first, as any id
            ("gid://shopify/Order/0042", "0042"),  # digits kept as written
            (" 1001 ", "1001"),
            ("#1001", "#1001"),  # not a gid: an id as given (the server never rewrites it)
            (None, None),
            ("", None),
            ("   ", None),
        ],
    )
    def test_each_form_gives_the_number(self, raw: Any, expected: str | None) -> None:
        """Numbers, numeric strings and Order/OrderIdentity gids all give the bare number."""
        assert shopify.order_number(raw) == expected

    @pytest.mark.parametrize(
        "raw",
        [
            "gid://shopify/Customer/115310627314723954",  # another type: not an order
            "gid://shopify/LineItem/866550311766439020",
            "gid://shopify/Order/",  # no number
            "gid://shopify/Order/12a",  # not digits
            "gid://shopify/Order/١٢٣",  # Arabic-Indic digits: not ASCII, refused
            "gid://shopify/order/123",  # the type is case-sensitive
            "gid://shopify/Order/123?x=1",  # no query on an order gid
            "gid://shopify/Order/123/4",
        ],
    )
    def test_other_gids_are_not_order_ids(self, raw: str) -> None:
        """A gid that is not an Order or OrderIdentity with ASCII digits is refused."""
        with pytest.raises(shopify.NotAnOrderId):
            shopify.order_number(raw)


class TestWebhookOrderIds:
    def event_id(self, order: dict[str, Any]) -> str:
        mapped = shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert mapped.conversion is not None
        return normalize(mapped.conversion, now=NOW).conversion.event_id

    def test_a_numeric_id_and_its_gid_give_one_event_id(self) -> None:
        """id 820982911946154508 and id "gid://shopify/Order/820982911946154508" are the same
        order: both become CompletePayment-820982911946154508."""
        order = fixture("shopify_orders_create.json")
        assert self.event_id(order) == "CompletePayment-820982911946154508"
        as_gid = order | {"id": order["admin_graphql_api_id"]}
        assert self.event_id(as_gid) == "CompletePayment-820982911946154508"

    def test_an_id_of_another_gid_type_is_422_naming_id(self) -> None:
        """A Customer gid where the order id belongs: 422 on `id`, nothing mapped."""
        order = fixture("shopify_orders_create.json") | {"id": "gid://shopify/Customer/7"}
        with pytest.raises(SourceError) as caught:
            shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert caught.value.status == 422
        [note] = caught.value.notes
        assert note.path == "id"
        assert "not an Order or OrderIdentity gid" in note.reason

    def test_the_checkout_token_comes_with_the_mapping(self) -> None:
        """checkout_token is handed to the route (to find the pixel's session), trimmed."""
        order = fixture("shopify_orders_create.json")
        mapped = shopify.map_order(order, topic="orders/create", shop_domain=SHOP)
        assert mapped.checkout_token == "bd5a8aa1ecd019dd3520ff791ee3a24c"
        spaced = order | {"checkout_token": "  bd5a8aa1ecd019dd3520ff791ee3a24c "}
        mapped = shopify.map_order(spaced, topic="orders/create", shop_domain=SHOP)
        assert mapped.checkout_token == "bd5a8aa1ecd019dd3520ff791ee3a24c"
        none = shopify.map_order(
            order | {"checkout_token": None}, topic="orders/create", shop_domain=SHOP
        )
        assert none.checkout_token is None
