"""Stripe webhooks for SaaS: sign-ups and first subscription payments.

Verification (our own, so production needs no Stripe SDK): ``Stripe-Signature`` is
``t=<unix time>,v1=<hex>[,v1=<hex>...]``; each ``v1`` is hex(HMAC-SHA256(secret,
"{t}.{raw body}")) where the secret is the whole ``whsec_…`` string. A request passes when any
``v1`` matches (compared in constant time) for any configured secret, and ``t`` is within the
tolerance of our clock (300 s by default, Stripe's own). Unlike Stripe's SDK, which only
refuses timestamps that are too old, we also refuse ones too far in the *future*: a signed
request from the future is a replay device if our clock is ever set back. The test suite
checks our verifier against signatures made by Stripe's official Python library.

Mapping (event types as Stripe documents them):

- ``customer.created`` and ``checkout.session.completed`` (with a customer) -> the sign-up
  event (``CompleteRegistration``), keyed on the **customer id**: both for one customer
  share ``event_id = "CompleteRegistration-cus_…"``, so they count once. Not an order.
- ``invoice.paid`` with ``billing_reason = subscription_create`` and ``amount_paid > 0``,
  ``customer.subscription.created`` with status ``active``, and
  ``customer.subscription.updated`` from ``trialing`` to ``active`` -> ``Subscribe``, keyed on
  the **subscription id**. Whichever arrives first is the conversion, the others duplicates:
  that is what "the first paid one" means without keeping per-customer state. Value: the
  contract value when ``stripe_contract_value`` is set, else the first payment (``amount_paid``,
  or the sum of the subscription items), converted from minor units with the currency's
  exponent *as Stripe uses it* (JPY 0, KWD 3, ...).
- Anything else is acknowledged with ``{"ignored": reason}``: Stripe endpoints commonly get
  every event type, and a 4xx would make Stripe retry (and eventually disable the endpoint)
  for events we will never use.

Session and identity from ``metadata`` (the object's, and its subscription's):
``backchannel_session_id`` / ``bc_session_id`` / ``bc_session`` -> ``session_id``;
``external_id`` / ``user_id`` (or the Checkout ``client_reference_id``) -> ``external_id``;
``ttclid``, ``ttp``, ``utm_source`` -> click id and ledger evidence; ``lead_id`` (the ad
platform's lead id, e.g. from a TikTok lead form, which a CRM integration put on the customer)
-> the conversion's ``lead``, with ``lead_event_source`` naming the system (default
``Stripe``, where the event happened).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backchannel.notes import Note
from backchannel.sources import Mapped, SourceError
from backchannel.sources.common import currency, first_text, ident, same_digest, text
from backchannel.sources.ledger import Signal

DEFAULT_TOLERANCE = 300  # seconds, as Stripe's libraries

#: Stripe's zero-decimal currencies: amounts are whole units (``amount=500`` is ¥500).
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())
#: Stripe's three-decimal currencies (``amount=1000`` is 1.000 KWD).
THREE_DECIMAL = frozenset("BHD JOD KWD OMR TND".split())
# Everything else, ISK included (zero-decimal in ISO 4217 but two-decimal in Stripe's API),
# has two decimals.

SESSION_KEYS = ("backchannel_session_id", "bc_session_id", "bc_session")
EXTERNAL_ID_KEYS = ("external_id", "user_id")
LEAD_ID_KEY = "lead_id"
LEAD_SOURCE_KEY = "lead_event_source"
#: the lead event's system when the metadata does not name one: the event happened in Stripe
DEFAULT_LEAD_SOURCE = "Stripe"


def exponent(code: str) -> int:
    """Decimal places of ``code``'s minor unit in Stripe's API."""
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def from_minor(minor: int, code: str) -> float:
    """Minor units -> a plain amount: ``(1999, "USD") -> 19.99``, ``(500, "JPY") -> 500``."""
    places = exponent(code)
    return float(round(minor / 10**places, places))


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The hex ``v1`` signature of ``body`` at ``timestamp``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def _bad(reason: str) -> SourceError:
    return SourceError([Note("Stripe-Signature", reason)], status=401, code="bad_signature")


def verify(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Raise :class:`SourceError` (401) unless ``header`` is a valid, fresh signature."""
    if not header or not header.strip():
        raise _bad("missing")
    timestamp: int | None = None
    given: list[bytes] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise _bad("t is not a unix time") from None
        elif key == "v1":
            given.append(value.strip().encode())
    if timestamp is None:
        raise _bad("no timestamp (t=)")
    if not given:
        raise _bad("no v1 signature")
    matched = False
    for secret in secrets:
        expected = sign(body, secret, timestamp).encode()
        for candidate in given:
            # no early exit: every candidate is compared, so timing says nothing
            matched |= same_digest(expected, candidate)
    if not matched:
        raise _bad("does not match the body with the configured secret")
    if abs(now - timestamp) > tolerance:
        raise _bad(f"timestamp outside the {tolerance} s tolerance (replayed or clock skew)")


@dataclass(slots=True)
class Events:
    """Which canonical events Stripe events become (settings ``stripe_*``)."""

    signup: str = "CompleteRegistration"
    subscribe: str = "Subscribe"
    #: Subscribe's value instead of the first payment (a contract value), in major units
    contract_value: float | None = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _metadata(*objects: dict[str, Any]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for obj in objects:
        for key, value in _dict(obj.get("metadata")).items():
            found = ident(value)
            if found:
                merged.setdefault(str(key), found)
    return merged


def _identity(
    metadata: dict[str, str],
    *,
    email: str | None,
    phone: str | None,
    address: dict[str, Any],
    extra_external: str | None = None,
) -> tuple[dict[str, Any], list[Signal], str | None]:
    user: dict[str, Any] = {}
    if email:
        user["email"] = email
    if phone:
        user["phone"] = phone
    external = next((metadata[k] for k in EXTERNAL_ID_KEYS if metadata.get(k)), extra_external)
    if external:
        user["external_id"] = external
    for key, target in (("postal_code", "zip"), ("city", "city"), ("country", "country")):
        found = text(address.get(key))
        if found:
            user[target] = found
    signals: list[Signal] = []
    if metadata.get("ttclid"):
        user["ttclid"] = metadata["ttclid"]
        signals.append(Signal("ttclid", metadata["ttclid"], "metadata"))
    if metadata.get("ttp"):
        user["ttp"] = metadata["ttp"]
    if metadata.get("utm_source"):
        signals.append(Signal("utm_source", metadata["utm_source"], "metadata"))
    session = next((metadata[k] for k in SESSION_KEYS if metadata.get(k)), None)
    return user, signals, session


def _lead(metadata: dict[str, str]) -> dict[str, str] | None:
    """The canonical ``lead`` from metadata ``lead_id`` / ``lead_event_source``, or None."""
    lead_id = metadata.get(LEAD_ID_KEY)
    if not lead_id:
        return None
    return {"id": lead_id, "source": metadata.get(LEAD_SOURCE_KEY) or DEFAULT_LEAD_SOURCE}


def _time(*candidates: Any) -> int | None:
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _conversion(
    event: str,
    key: str,
    when: int | None,
    user: dict[str, Any],
    session: str | None,
    value: float | None = None,
    code: str | None = None,
    lead: dict[str, str] | None = None,
) -> dict[str, Any]:
    conversion: dict[str, Any] = {"event": event, "order_id": key, "source": "web", "user": user}
    if lead is not None:
        conversion["lead"] = lead
    if when is not None:
        conversion["event_time"] = when
    if value is not None:
        conversion["value"] = value
        conversion["currency"] = code
    if session:
        conversion["session_id"] = session[:128]
    return conversion


def _signup(event: dict[str, Any], obj: dict[str, Any], events: Events) -> Mapped:
    kind = event.get("type")
    if kind == "customer.created":
        customer_id = ident(obj.get("id"))
        email, phone, address = text(obj.get("email")), text(obj.get("phone")), obj.get("address")
        extra = None
    else:  # checkout.session.completed
        customer_id = ident(obj.get("customer"))
        if customer_id is None:
            return Mapped(ignored="checkout session without a customer: not a sign-up")
        details = _dict(obj.get("customer_details"))
        email = first_text(details.get("email"), obj.get("customer_email"))
        phone = text(details.get("phone"))
        address = details.get("address")
        extra = ident(obj.get("client_reference_id"))
    if customer_id is None:
        raise SourceError([Note("data.object.id", "required: the customer id")])
    metadata = _metadata(obj)
    user, signals, session = _identity(
        metadata, email=email, phone=phone, address=_dict(address), extra_external=extra
    )
    when = _time(obj.get("created"), event.get("created"))
    return Mapped(
        conversion=_conversion(
            events.signup, customer_id, when, user, session, lead=_lead(metadata)
        ),
        signals=signals,
        order=False,
    )


def _subscription_id(invoice: dict[str, Any]) -> str | None:
    details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
    raw = invoice.get("subscription") or details.get("subscription")
    if isinstance(raw, dict):  # expanded
        raw = raw.get("id")
    return ident(raw)


def _invoice(event: dict[str, Any], obj: dict[str, Any], events: Events) -> Mapped:
    reason = obj.get("billing_reason")
    if reason != "subscription_create":
        return Mapped(
            ignored=f"invoice billing_reason {reason!r}: not a first subscription payment"
        )
    errors: list[Note] = []
    code = currency(obj.get("currency"), "data.object.currency", errors)
    paid = obj.get("amount_paid")
    if isinstance(paid, bool) or not isinstance(paid, int):
        errors.append(Note("data.object.amount_paid", "required: an integer in minor units"))
    elif paid < 0:
        errors.append(Note("data.object.amount_paid", "must not be negative"))
    subscription = _subscription_id(obj)
    if subscription is None:
        errors.append(
            Note("data.object.subscription", "required for billing_reason subscription_create")
        )
    if errors:
        raise SourceError(errors)
    assert code is not None
    assert isinstance(paid, int)
    assert subscription is not None
    if paid == 0:
        return Mapped(ignored="nothing paid yet (trial or full discount): no Subscribe until paid")
    parent = _dict(_dict(obj.get("parent")).get("subscription_details"))
    metadata = _metadata(obj, _dict(obj.get("subscription_details")), parent)
    user, signals, session = _identity(
        metadata,
        email=text(obj.get("customer_email")),
        phone=text(obj.get("customer_phone")),
        address=_dict(obj.get("customer_address")),
    )
    value = events.contract_value if events.contract_value is not None else from_minor(paid, code)
    when = _time(_dict(obj.get("status_transitions")).get("paid_at"), event.get("created"))
    return Mapped(
        conversion=_conversion(
            events.subscribe, subscription, when, user, session, value, code, _lead(metadata)
        ),
        signals=signals,
    )


def _subscription(event: dict[str, Any], obj: dict[str, Any], events: Events) -> Mapped:
    status = obj.get("status")
    if event.get("type") == "customer.subscription.updated":
        before = _dict(_dict(event.get("data")).get("previous_attributes")).get("status")
        if not (before == "trialing" and status == "active"):
            return Mapped(ignored="subscription update that is not a trial turning paid")
    elif status != "active":
        return Mapped(ignored=f"subscription status {status!r}: nothing paid yet")
    errors: list[Note] = []
    subscription = ident(obj.get("id"))
    if subscription is None:
        errors.append(Note("data.object.id", "required: the subscription id"))
    code = currency(obj.get("currency"), "data.object.currency", errors)
    total = 0
    items = _dict(obj.get("items")).get("data")
    if not isinstance(items, list):
        errors.append(Note("data.object.items.data", "required: the subscription items"))
        items = []
    for index, item in enumerate(items):
        price = _dict(_dict(item).get("price"))
        unit, quantity = price.get("unit_amount"), _dict(item).get("quantity", 1)
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 0:
            errors.append(
                Note(
                    f"data.object.items.data[{index}].price.unit_amount",
                    "required: a non-negative integer in minor units",
                )
            )
            continue
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            quantity = 1
        total += unit * quantity
    if errors:
        raise SourceError(errors)
    assert code is not None
    assert subscription is not None
    if total == 0 and events.contract_value is None:
        return Mapped(ignored="subscription worth nothing yet (free plan or discount)")
    metadata = _metadata(obj)
    user, signals, session = _identity(metadata, email=None, phone=None, address={})
    value = events.contract_value if events.contract_value is not None else from_minor(total, code)
    when = _time(event.get("created"), obj.get("start_date"))
    return Mapped(
        conversion=_conversion(
            events.subscribe, subscription, when, user, session, value, code, _lead(metadata)
        ),
        signals=signals,
    )


HANDLERS = {
    "customer.created": _signup,
    "checkout.session.completed": _signup,
    "invoice.paid": _invoice,
    "customer.subscription.created": _subscription,
    "customer.subscription.updated": _subscription,
}


def event_id(document: Any) -> str | None:
    """The Stripe event id (``evt_…``): the same on every retry of one delivery."""
    return ident(document.get("id")) if isinstance(document, dict) else None


def account(document: Any) -> str | None:
    """The connected account an event comes from (``acct_…``), or None for the account's own.

    Stripe's Event object: "Connect platforms can also receive event notifications that occur
    in their connected accounts. These events include an account attribute that identifies the
    relevant connected account" (the Event object reference, as its generated SDKs carry it:
    https://rubydoc.info/gems/stripe/Stripe/Event; the field since API version 2017-05-25,
    https://docs.stripe.com/changelog/2017-05-25). Events of the account that owns the
    webhook endpoint have none: their endpoint's signing secret names them."""
    return ident(document.get("account")) if isinstance(document, dict) else None


def map_event(document: Any, events: Events | None = None) -> Mapped:
    """Map one Stripe event; raises :class:`SourceError` (422) for a malformed mapped event."""
    events = events or Events()
    if not isinstance(document, dict) or document.get("object") != "event":
        raise SourceError([Note("(body)", 'must be a Stripe event object ("object": "event")')])
    kind = text(document.get("type"))
    if kind is None:
        raise SourceError([Note("type", "required: the event type")])
    handler = HANDLERS.get(kind)
    if handler is None:
        return Mapped(ignored=f"event type {kind[:80]!r} is not mapped")
    obj = _dict(document.get("data")).get("object")
    if not isinstance(obj, dict):
        raise SourceError([Note("data.object", "required: the event's object")])
    return handler(document, obj, events)
