"""WooCommerce order webhooks (``order.created``, ``order.updated``): ping, signature, mapping.

Research and sources: docs/platforms/woocommerce.md (WooCommerce's ``WC_Webhook`` and REST v3
orders controller, the REST API docs).

Ping: when a webhook is saved active, WooCommerce POSTs ``webhook_id=<id>`` (form-encoded, no
``X-WC-Webhook-*`` header, no signature) and shows the merchant an error unless the answer is
exactly 200. A body that is nothing but ``webhook_id=<digits>`` is answered 200 and nothing
is stored: it carries nothing to act on, so it needs no secret and proves nothing.

Verification: ``X-WC-Webhook-Signature`` is base64(HMAC-SHA256(secret, raw body)), the body
being exactly the bytes sent (``wp_json_encode`` output, slashes escaped); checked in constant
time against every configured secret before anything is parsed. ``X-WC-Webhook-Source`` is the
shop's ``home_url('/')``: when a store URL is configured, a signed webhook from another one (a
staging copy of the site keeps the webhook and its secret, and its order ids collide with the
live shop's) is refused with 403. Headers are not signed, so this stops an honest copy of the
site, not a forger; a forger holding a signed body can only replay it, and a replayed order
is a duplicate by its event_id (WooCommerce signs no timestamp).

Mapping (the body is the REST v3 order, ``GET /wc/v3/orders/{id}``):

=======================================  ====================================================
WooCommerce                              canonical conversion
=======================================  ====================================================
``id``                                   ``order_id`` (so ``event_id = "{event}-{id}"``, as
                                         every source and ``bc.eventId`` derive it)
``status``                               sent only in a paid status (``processing``,
                                         ``completed``; setting ``woocommerce_paid_statuses``)
``date_paid_gmt`` (else                  ``event_time`` (UTC, no offset in the payload)
``date_modified_gmt``) when paid,
``date_created_gmt`` otherwise
``total`` (string), ``currency``         ``value``, ``currency``
``line_items[]``                         ``contents[]``: id = ``variation_id`` (0 = none),
                                         else ``product_id``, else ``sku``; ``quantity``;
                                         unit ``price`` (after discounts); ``name``
``billing.email`` / ``billing.phone``    ``user.email``, ``user.phone`` (hashed at once)
billing (else shipping) name, ``city``,  first/last name, ``city``, ``state``, ``zip``,
``state``, ``postcode``, ``country``     ``country``
``customer_id`` (0 = guest)              ``user.external_id`` (hashed)
``customer_ip_address``,                 ``user.ip``, ``user.user_agent`` (set at checkout;
``customer_user_agent``                  empty for admin or REST orders)
``meta_data`` ``_bc_session_id``         ``session_id`` (bc.js's ``_bc_sid`` cookie)
``meta_data`` ``_bc_ttclid``, ``_bc_ttp``,  ``user.ttclid``, ``ttp``, ``fbclid``, ``fbp``,
``_bc_fbclid``, ``_bc_fbp``, ``_bc_fbc``  ``fbc`` (bc.js's and the pixels' cookies)
``meta_data``                            ``page.url`` / ``page.referrer`` (WooCommerce's own
``_wc_order_attribution_session_entry``  Order Attribution: the landing page, with its
/ ``…_referrer``                         ttclid and UTMs when kept); else the store URL
=======================================  ====================================================

An order counts once: every delivery of one order maps to the same event_id, so whichever
first arrives in a paid status is the conversion and every later one (``order.updated`` to
``completed``, a retry with a new delivery id) is a duplicate. Deliveries in any other status
(``pending``, ``on-hold``, ``failed``, ``cancelled``, ``refunded``) are ``ledger_only``: the
order ledger records the order, nothing is sent. Checkout drafts are not orders yet and are
ignored.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

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

TOPICS = frozenset({"order.created", "order.updated"})
#: ``wc_get_is_paid_statuses()``'s default (filterable in WooCommerce, a setting here)
DEFAULT_PAID_STATUSES = ("processing", "completed")
#: carts that are not orders yet: the Checkout block's draft, core's post drafts
DRAFT_STATUSES = frozenset({"checkout-draft", "draft", "auto-draft"})
#: order meta holding bc.js's session id (its ``_bc_sid`` cookie)
SESSION_KEY = "_bc_session_id"
#: order meta holding click ids and cookies -> canonical user fields
META_KEYS = {
    "_bc_ttclid": "ttclid",
    "_bc_ttp": "ttp",
    "_bc_fbclid": "fbclid",
    "_bc_fbp": "fbp",
    "_bc_fbc": "fbc",
}
#: WooCommerce's own Order Attribution meta (core since 8.5): landing page, referrer, UTM
ATTRIBUTION_ENTRY = "_wc_order_attribution_session_entry"
ATTRIBUTION_REFERRER = "_wc_order_attribution_referrer"
ATTRIBUTION_UTM_SOURCE = "_wc_order_attribution_utm_source"
#: where signals found in the Order Attribution meta are reported in the ledger evidence
ORDER_ATTRIBUTION = "order_attribution"
MAX_SESSION_ID = 128
MAX_USER_AGENT = 2048
_PING = re.compile(rb"webhook_id=[0-9]{1,20}")


def is_ping(body: bytes) -> bool:
    """Whether ``body`` is WooCommerce's creation ping (``webhook_id=12``, form-encoded)."""
    return _PING.fullmatch(body.strip()) is not None


def signature(body: bytes, secret: str) -> str:
    """The ``X-WC-Webhook-Signature`` value WooCommerce sends for ``body``."""
    return base64_hmac(body, secret)


def verify(body: bytes, header: str | None, secrets: Sequence[str]) -> None:
    """Raise :class:`SourceError` (401) unless ``header`` signs ``body`` with one secret."""
    verify_base64_hmac(body, header, secrets, header_name="X-WC-Webhook-Signature")


def store_key(url: str | None) -> str | None:
    """A store URL reduced to what identifies the shop: lowercased host (and a non-default
    port) plus the path without its trailing slash (``https://Shop.example.com/`` ->
    ``shop.example.com``; ``http://example.com/shop/`` -> ``example.com/shop``). The scheme is
    left out: a shop moving to https stays the same shop. None when not an http(s) URL."""
    if not url or not url.strip():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if port is not None and port not in (80, 443):
        host = f"{host}:{port}"
    return host + parts.path.rstrip("/")


def check_store(configured: str | None, header: str | None) -> None:
    """Raise :class:`SourceError` (403) when a store URL is configured and ``header``
    (``X-WC-Webhook-Source``) names another shop."""
    expected = store_key(configured)
    if expected is None:
        return
    given = store_key(header)
    if given != expected:
        shown = (header or "").strip()[:200] or "missing"
        raise SourceError(
            [
                Note(
                    "X-WC-Webhook-Source",
                    f"{shown!r} is not the configured store {configured!r} (a staging copy"
                    " of the shop? its order ids would collide with the live shop's)",
                )
            ],
            status=403,
            code="wrong_store",
        )


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _meta(order: dict[str, Any]) -> dict[str, str]:
    """The order's ``meta_data`` as key -> value (text values only; the first one wins).

    A value with a control character (a mangled cookie) is left out rather than failing the
    whole order: meta values are hints, the order is the fact.
    """
    found: dict[str, str] = {}
    items = order.get("meta_data")
    if not isinstance(items, list):
        return found
    for item in items:
        if isinstance(item, dict):
            key, value = text(item.get("key")), ident(item.get("value"))
            if key and value and not _CONTROL.search(value):
                found.setdefault(key, value)
    return found


def _gmt(raw: Any, path: str, errors: list[Note]) -> int | None:
    """Unix seconds from a REST ``*_gmt`` date (``2017-03-22T19:28:02``, UTC, no offset)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if not isinstance(raw, str):
        errors.append(Note(path, "must be a date-time string"))
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        errors.append(Note(path, f"not an ISO-8601 date-time: {raw.strip()[:40]!r}"))
        return None
    if when.tzinfo is None:  # *_gmt fields are UTC without an offset
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _address(order: dict[str, Any]) -> dict[str, Any]:
    """The billing address, or the shipping one when billing has none (a digital-goods
    checkout may ask for no address)."""
    billing, shipping = _dict(order.get("billing")), _dict(order.get("shipping"))
    for address in (billing, shipping):
        if first_text(*(address.get(k) for k in ("address_1", "city", "postcode", "country"))):
            return address
    return billing


def _web_url(value: str | None) -> str | None:
    return value if value and value.startswith(("http://", "https://")) else None


def map_order(
    order: Any,
    *,
    topic: str,
    store_url: str | None = None,
    event: str = "CompletePayment",
    paid_statuses: Sequence[str] = DEFAULT_PAID_STATUSES,
) -> Mapped:
    """Map one order webhook body; raises :class:`SourceError` naming every bad field.

    ``store_url`` (``X-WC-Webhook-Source``) is the page URL of last resort: Meta refuses web
    events without one, and the shop is where the order happened.
    """
    if topic not in TOPICS:
        raise SourceError(
            [
                Note(
                    "X-WC-Webhook-Topic",
                    f"unknown topic {topic[:64]!r}; send order.created or order.updated",
                )
            ],
            status=400,
            code="unknown_topic",
        )
    if not isinstance(order, dict):
        raise SourceError([Note("(body)", "must be a JSON object (an order)")])
    errors: list[Note] = []
    status = text(order.get("status"))
    if status is None:
        errors.append(Note("status", "required: the order status"))
    elif status in DRAFT_STATUSES:
        return Mapped(ignored=f"status {status!r}: a checkout draft, not an order yet")
    order_id = ident(order.get("id"))
    if order_id is None:
        errors.append(Note("id", "required: the order id"))
    value = amount(order.get("total"), "total", errors)
    code = currency(order.get("currency"), "currency", errors)
    items = contents(
        order.get("line_items"),
        errors,
        id_keys=("variation_id", "product_id", "sku"),
        name_key="name",
    )
    paid = status in paid_statuses
    created = _gmt(order.get("date_created_gmt"), "date_created_gmt", errors)
    when = created
    if paid:
        paid_at = _gmt(order.get("date_paid_gmt"), "date_paid_gmt", errors)
        modified = _gmt(order.get("date_modified_gmt"), "date_modified_gmt", errors)
        when = paid_at or modified or created
    if errors:
        raise SourceError(errors)
    assert status is not None

    billing, shipping = _dict(order.get("billing")), _dict(order.get("shipping"))
    address = _address(order)
    meta = _meta(order)
    user: dict[str, Any] = {}
    customer = order.get("customer_id")
    agent = text(order.get("customer_user_agent"))
    for key, found in (
        ("email", text(billing.get("email"))),
        ("phone", first_text(billing.get("phone"), shipping.get("phone"))),
        ("external_id", ident(customer) if isinstance(customer, int) and customer > 0 else None),
        ("first_name", first_text(billing.get("first_name"), shipping.get("first_name"))),
        ("last_name", first_text(billing.get("last_name"), shipping.get("last_name"))),
        ("zip", text(address.get("postcode"))),
        ("city", text(address.get("city"))),
        ("state", text(address.get("state"))),
        ("country", text(address.get("country"))),
        ("ip", text(order.get("customer_ip_address"))),
        ("user_agent", agent if agent and len(agent) <= MAX_USER_AGENT else None),
    ):
        if found:
            user[key] = found

    landing = _web_url(meta.get(ATTRIBUTION_ENTRY))
    signals: list[Signal] = url_signals(landing, ORDER_ATTRIBUTION)
    signals += click_ids(meta, META_KEYS, user, "meta_data")
    if meta.get(ATTRIBUTION_UTM_SOURCE):
        signals.append(Signal("utm_source", meta[ATTRIBUTION_UTM_SOURCE], ORDER_ATTRIBUTION))

    conversion: dict[str, Any] = {
        "event": event,
        "order_id": order_id,
        "value": value,
        "currency": code,
        "source": "web",
        "user": user,
    }
    if when is not None:
        conversion["event_time"] = when
    for content in items:
        if "name" in content:  # REST names keep HTML entities ("Shirt &ndash; Black")
            content["name"] = html.unescape(content["name"])
    if items:
        conversion["contents"] = items
        conversion["content_type"] = "product"
    session = meta.get(SESSION_KEY)
    if session and len(session) <= MAX_SESSION_ID:
        conversion["session_id"] = session
    page: dict[str, str] = {}
    if landing:
        page["url"] = landing
    elif "session_id" not in conversion and _web_url(store_url):
        # a named session fills page.url with its landing page when stitched
        page["url"] = str(store_url).strip()
    referrer = _web_url(meta.get(ATTRIBUTION_REFERRER))
    if referrer:
        page["referrer"] = referrer
    if page:
        conversion["page"] = page
    if paid:
        return Mapped(conversion=conversion, signals=signals)
    return Mapped(
        conversion=conversion,
        signals=signals,
        ledger_only=(
            f"status {status!r} is not paid ({', '.join(paid_statuses)}): the order is in the"
            " ledger, nothing is sent"
        ),
    )
