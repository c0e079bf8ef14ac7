"""Shopify order webhooks (``orders/create``, ``orders/paid``): verification and mapping.

Verification: Shopify signs the raw request body with the app's (or the shop's notification)
webhook secret — ``X-Shopify-Hmac-Sha256`` is base64(HMAC-SHA256(secret, raw body)). We
recompute it over the exact bytes received and compare in constant time; several secrets may
be configured while one is rotated. No parsing happens before the signature holds.

Mapping (the order as Shopify documents it in the REST ``Order`` resource, which is the
webhook body):

=====================================  ======================================================
Shopify                                canonical conversion
=====================================  ======================================================
``id``                                 ``order_id``: its number (:func:`order_number`; so
                                       ``event_id = "{event}-{id}"``; the custom pixel
                                       derives the same one from ``checkout.order.id``)
``checkout_token``                     the landing session, through the custom pixel's
                                       report of that checkout (``Mapped.checkout_token``)
``processed_at`` / ``created_at``      ``event_time``
``total_price`` (string), ``currency``  ``value``, ``currency`` — the shop currency, the one
                                       the shop's own reports use
``line_items[]``                       ``contents[]``: id = ``variant_id`` (what TikTok's and
                                       Meta's Shopify catalogs list as the item), else
                                       ``product_id``, else ``sku``; ``quantity``; unit
                                       ``price``; ``title``; ``vendor`` as brand
``email`` / ``contact_email`` /        ``user.email`` (hashed at once by ``normalize``)
``customer.email``
``phone`` / ``customer.phone`` /       ``user.phone``, region from the billing country
address phones
``customer.id``                        ``user.external_id`` (hashed)
billing (else shipping) address        first/last name, zip, city, province code, country
``browser_ip`` / ``client_details``    ``user.ip``, ``user.user_agent``
``customer_locale``                    ``user.locale``
``landing_site`` (``/path?query``)     ``page.url`` = ``https://{shop domain}{landing_site}``
                                       — ``ttclid`` and UTMs travel in it
``referring_site``                     ``page.referrer``
``note_attributes[{name, value}]``     ``session_id`` (cart attribute ``_bc_session``,
                                       ``bc_session_id`` or ``backchannel_session_id``),
                                       ``ttclid``, ``_ttp``, ``fbclid``, ``_fbp``, ``_fbc``
=====================================  ======================================================

**One order id on both legs.** The custom pixel's ``checkout_completed`` gives
``checkout.order.id`` as ``gid://shopify/OrderIdentity/5396439498987`` (some stores: the bare
number); the webhook gives ``id`` ``5396439498987`` and ``admin_graphql_api_id``
``gid://shopify/Order/5396439498987``. :func:`order_number` turns each of them into
``"5396439498987"``, and ``shopify-pixel.js`` does exactly the same in the browser
(docs/platforms/shopify.md §1 has the sources). A gid of any other type is not an order id:
refused here, and the pixel fires no event for it.

**The session of an order.** A cart attribute naming the session (below) wins; else the
``checkout_token`` the pixel reported with its session id (``checkout_sessions``), which the
webhook route looks up; else ingest's own stitching (the ttclid of ``landing_site``, an email).

Both topics map to the same event and event_id, so whichever arrives first is the conversion
and the other is a duplicate: shops that only subscribe to one topic lose nothing, shops that
subscribe to both do not double count. Test orders (``"test": true``, Shopify's bogus gateway)
are ignored: they would teach the ad platform about purchases that never happened.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from backchannel.notes import Note
from backchannel.sources import Mapped, SourceError
from backchannel.sources.common import (
    amount,
    base64_hmac,
    click_ids,
    contents,
    currency,
    first_text,
    ident,
    text,
    verify_base64_hmac,
)
from backchannel.sources.ledger import Signal, url_signals

TOPICS = frozenset({"orders/create", "orders/paid"})
#: cart attributes (note_attributes) that carry the Backchannel landing-session id
SESSION_ATTRIBUTES = ("_bc_session", "bc_session_id", "backchannel_session_id")
#: cart attributes copied to the canonical user (the snippet may store them at checkout)
USER_ATTRIBUTES = {
    "ttclid": "ttclid",
    "_ttp": "ttp",
    "ttp": "ttp",
    "fbclid": "fbclid",
    "_fbp": "fbp",
    "_fbc": "fbc",
}


#: the two gid types whose number is the REST order id: the webhook's ``admin_graphql_api_id``
#: (Order) and the pixel's ``checkout.order.id`` (OrderIdentity). ASCII digits, no query:
#: the pixel's JavaScript twin uses the same pattern, and both must agree byte for byte.
ORDER_GID = re.compile(r"gid://shopify/(?:Order|OrderIdentity)/([0-9]+)")


class NotAnOrderId(ValueError):
    """A ``gid://`` of a type that does not name an order."""


def order_number(raw: Any) -> str | None:
    """The order id both legs share: ``"123"`` for ``123``, ``"123"``,
    ``gid://shopify/Order/123`` and ``gid://shopify/OrderIdentity/123``; any other non-gid
    id as given (trimmed); None when absent or blank. Raises :class:`NotAnOrderId` for a gid
    of another type (``gid://shopify/Customer/1`` is not an order)."""
    value = ident(raw)
    if value is None or not value.startswith("gid://"):
        return value
    match = ORDER_GID.fullmatch(value)
    if match is None:
        raise NotAnOrderId(f"{value[:80]!r} is not an Order or OrderIdentity gid")
    return match.group(1)


def signature(body: bytes, secret: str) -> str:
    """The ``X-Shopify-Hmac-Sha256`` value Shopify sends for ``body``."""
    return base64_hmac(body, secret)


def verify(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Raise :class:`SourceError` (401) unless ``header`` signs ``body`` with one secret."""
    verify_base64_hmac(body, header, secrets, header_name="X-Shopify-Hmac-Sha256")


def _attributes(order: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in order.get("note_attributes") or []:
        if isinstance(item, dict):
            name, value = text(item.get("name")), ident(item.get("value"))
            if name and value:
                found.setdefault(name, value)
    return found


def _address(order: dict[str, Any]) -> dict[str, Any]:
    for key in ("billing_address", "shipping_address"):
        address = order.get(key)
        if isinstance(address, dict) and address:
            return address
    return {}


def map_order(
    order: Any,
    *,
    topic: str,
    shop_domain: str | None,
    event: str = "CompletePayment",
) -> Mapped:
    """Map one order webhook body; raises :class:`SourceError` (422) naming every bad field."""
    if topic not in TOPICS:
        raise SourceError(
            [
                Note(
                    "X-Shopify-Topic",
                    f"unknown topic {topic[:64]!r}; send orders/create or orders/paid",
                )
            ],
            status=400,
            code="unknown_topic",
        )
    if not isinstance(order, dict):
        raise SourceError([Note("(body)", "must be a JSON object (an order)")])
    errors: list[Note] = []
    order_id: str | None = None
    try:
        order_id = order_number(order.get("id"))
        if order_id is None:
            errors.append(Note("id", "required: the order id"))
    except NotAnOrderId as exc:
        errors.append(Note("id", str(exc)))
    value = amount(order.get("total_price"), "total_price", errors)
    code = currency(order.get("currency"), "currency", errors)
    items = contents(
        order.get("line_items"),
        errors,
        id_keys=("variant_id", "product_id", "sku"),
        name_key="title",
        brand_key="vendor",
    )
    when = first_text(order.get("processed_at"), order.get("created_at"))
    if errors:
        raise SourceError(errors)
    if order.get("test") is True:
        return Mapped(ignored="test order (Shopify test gateway): not a real purchase")

    customer = order.get("customer") if isinstance(order.get("customer"), dict) else {}
    assert isinstance(customer, dict)
    address = _address(order)
    client = order.get("client_details") if isinstance(order.get("client_details"), dict) else {}
    assert isinstance(client, dict)
    attributes = _attributes(order)

    user: dict[str, Any] = {}
    for key, found in (
        (
            "email",
            first_text(order.get("email"), order.get("contact_email"), customer.get("email")),
        ),
        (
            "phone",
            first_text(
                order.get("phone"),
                customer.get("phone"),
                address.get("phone"),
                (order.get("shipping_address") or {}).get("phone")
                if isinstance(order.get("shipping_address"), dict)
                else None,
            ),
        ),
        ("external_id", ident(customer.get("id"))),
        ("first_name", first_text(customer.get("first_name"), address.get("first_name"))),
        ("last_name", first_text(customer.get("last_name"), address.get("last_name"))),
        ("zip", text(address.get("zip"))),
        ("city", text(address.get("city"))),
        ("state", text(address.get("province_code"))),
        ("country", text(address.get("country_code"))),
        ("ip", first_text(order.get("browser_ip"), client.get("browser_ip"))),
        ("user_agent", text(client.get("user_agent"))),
        ("locale", text(order.get("customer_locale"))),
    ):
        if found:
            user[key] = found
    signals: list[Signal] = click_ids(attributes, USER_ATTRIBUTES, user, "note_attributes")

    conversion: dict[str, Any] = {
        "event": event,
        "order_id": order_id,
        "value": value,
        "currency": code,
        "source": "web",
        "user": user,
    }
    if when:
        conversion["event_time"] = when
    if items:
        conversion["contents"] = items
        conversion["content_type"] = "product"
    landing = text(order.get("landing_site"))
    page: dict[str, str] = {}
    if landing:
        signals = url_signals(landing, "landing_site") + signals
        if landing.startswith(("http://", "https://")):
            page["url"] = landing
        elif shop_domain and landing.startswith("/"):
            page["url"] = f"https://{shop_domain}{landing}"
    referrer = text(order.get("referring_site"))
    if referrer and referrer.startswith(("http://", "https://")):
        page["referrer"] = referrer
    if page:
        conversion["page"] = page
    session = next((attributes[n] for n in SESSION_ATTRIBUTES if attributes.get(n)), None)
    if session:
        conversion["session_id"] = session[:128]
    token = ident(order.get("checkout_token"))
    return Mapped(
        conversion=conversion,
        signals=signals,
        checkout_token=token[:256] if token else None,
    )
