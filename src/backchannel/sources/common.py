"""What the sources share: amounts, currencies, ids, base64 HMAC signatures, line items, and
the click ids a shop stores with an order.

Why here: Shopify and WooCommerce sign the same way (base64 HMAC-SHA256 of the raw body) and
both carry line items and Backchannel's cookies with the order; one copy of each rule keeps
the sources from drifting apart (the same content id preference, the same clipping, the same
ledger signals).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from backchannel import catalog
from backchannel.notes import Note
from backchannel.sources import SourceError
from backchannel.sources.ledger import Signal

#: user fields that take a click id or browser cookie (the canonical ``UserIn`` limit)
MAX_CLICK_ID = 1024

#: no real order is worth more than this in any currency (IDR/VND totals stay far below it);
#: a bigger number is a unit mistake (cents as units, a pasted id) and is refused.
MAX_AMOUNT = Decimal("1e12")


def amount(raw: Any, path: str, errors: list[Note]) -> float | None:
    """A non-negative, finite amount from a decimal string or number; None (+ error) if not."""
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        errors.append(Note(path, "required: the amount"))
        return None
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        errors.append(Note(path, f"not a number: {str(raw)[:40]!r}"))
        return None
    if not value.is_finite():
        errors.append(Note(path, "not a finite number"))
        return None
    if value < 0:
        errors.append(Note(path, "must not be negative"))
        return None
    if value > MAX_AMOUNT:
        errors.append(Note(path, "implausibly large (over 10^12)"))
        return None
    result = float(value)
    return result if math.isfinite(result) else None


def currency(raw: Any, path: str, errors: list[Note]) -> str | None:
    """An ISO 4217 code (any case in, upper case out); None (+ error) if not one."""
    if not isinstance(raw, str) or not raw.strip():
        errors.append(Note(path, "required: an ISO 4217 currency code"))
        return None
    code = raw.strip().upper()
    if code not in catalog.ISO_4217:
        errors.append(Note(path, f"unknown currency {raw.strip()[:8]!r} (not ISO 4217)"))
        return None
    return code


def ident(raw: Any) -> str | None:
    """An id as text (numbers included), or None when absent or blank."""
    if raw is None or isinstance(raw, bool | dict | list):
        return None
    text = str(raw).strip()
    return text or None


def text(raw: Any) -> str | None:
    """A non-blank string, else None (numbers are not text here)."""
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    return None


def first_text(*values: Any) -> str | None:
    """The first non-blank string among ``values``."""
    for value in values:
        found = text(value)
        if found:
            return found
    return None


def product_id(raw: Any) -> str | None:
    """A product/variant id, where the number 0 means none (WooCommerce's ``variation_id``
    of a simple product, ``product_id`` of a deleted one)."""
    if isinstance(raw, int) and not isinstance(raw, bool) and raw == 0:
        return None
    return ident(raw)


def secrets_of(raw: str | None) -> list[str]:
    """Comma-separated secrets (several are valid while one is being rotated)."""
    if not raw:
        return []
    return [part.strip() for part in raw.split(",") if part.strip()]


def same_digest(expected: bytes, given: bytes) -> bool:
    """Constant-time comparison (``hmac.compare_digest``): no timing hint about the digest."""
    return hmac.compare_digest(expected, given)


def base64_hmac(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(secret, body)): Shopify's and WooCommerce's webhook signature."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_base64_hmac(
    body: bytes, header: str | None, secrets: Sequence[str], *, header_name: str
) -> None:
    """Raise :class:`~backchannel.sources.SourceError` (401) unless ``header`` is
    :func:`base64_hmac` of ``body`` with one of ``secrets``; ``header_name`` names it in the
    reason. Every secret is compared (no early exit), in constant time."""

    def bad(reason: str) -> SourceError:
        return SourceError([Note(header_name, reason)], status=401, code="bad_signature")

    if not header or not header.strip():
        raise bad("missing")
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except ValueError:
        raise bad("not base64") from None
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        matched |= same_digest(expected, given)
    if not matched:
        raise bad("does not match the body with the configured secret")


def contents(
    items: Any,
    errors: list[Note],
    *,
    id_keys: Sequence[str],
    name_key: str,
    brand_key: str | None = None,
) -> list[dict[str, Any]]:
    """Canonical ``contents`` from a shop's ``line_items``.

    The content id is the first of ``id_keys`` present (a variant before its product, then the
    SKU: what the platforms' shop catalogs list as the item), else the line's own ``id``; a
    quantity of 0 is a line removed by an order edit and is skipped. Bad lines add an error
    naming ``line_items[i]``.
    """
    if not items:
        return []
    if not isinstance(items, list):
        errors.append(Note("line_items", "must be an array"))
        return []
    found: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        path = f"line_items[{index}]"
        if not isinstance(item, dict):
            errors.append(Note(path, "must be an object"))
            continue
        content_id = next(
            (value for key in id_keys if (value := product_id(item.get(key)))), None
        ) or ident(item.get("id"))
        if content_id is None:
            errors.append(Note(path, f"no {', '.join(id_keys)} or id"))
            continue
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 0:
            errors.append(Note(f"{path}.quantity", "must be a whole number >= 0"))
            continue
        if quantity == 0:  # a removed line (order edits): nothing was bought
            continue
        content: dict[str, Any] = {"id": content_id, "quantity": quantity}
        if item.get("price") is not None:
            content["price"] = amount(item["price"], f"{path}.price", errors)
        for key, target in ((name_key, "name"), (brand_key, "brand")):
            value = text(item.get(key)) if key else None
            if value:
                content[target] = value[:1024]
        found.append(content)
    return found


def click_ids(
    values: Mapping[str, str],
    names: Mapping[str, str],
    user: dict[str, Any],
    where: str,
) -> list[Signal]:
    """Copy click ids and cookies a shop stored with the order into the canonical ``user``.

    ``values`` are the order's name -> value pairs (Shopify cart attributes, WooCommerce
    ``meta_data``); ``names`` maps the names read to user fields (``ttclid``, ``ttp``,
    ``fbclid``, ``fbp``, ``fbc``). A field the order already has is kept; a value too long
    for the field is dropped (a cut identifier would match nobody). Returns the ledger
    signals: ``ttclid``, and ``utm_source`` when ``values`` has one, found at ``where``.
    """
    signals: list[Signal] = []
    for name, field in names.items():
        value = values.get(name)
        if value and field not in user and len(value) <= MAX_CLICK_ID:
            user[field] = value
            if field == "ttclid":
                signals.append(Signal("ttclid", value, where))
    if values.get("utm_source"):
        signals.append(Signal("utm_source", values["utm_source"], where))
    return signals
