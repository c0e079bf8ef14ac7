"""Small checks shared by the sources: amounts, currencies, ids, constant-time secrets."""

from __future__ import annotations

import hmac
import math
from decimal import Decimal, InvalidOperation
from typing import Any

from backchannel import catalog
from backchannel.notes import Note

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


def secrets_of(raw: str | None) -> list[str]:
    """Comma-separated secrets (several are valid while one is being rotated)."""
    if not raw:
        return []
    return [part.strip() for part in raw.split(",") if part.strip()]


def same_digest(expected: bytes, given: bytes) -> bool:
    """Constant-time comparison (``hmac.compare_digest``): no timing hint about the digest."""
    return hmac.compare_digest(expected, given)
