"""Test data for the store suite."""

from __future__ import annotations

from typing import Any

from backchannel.store.base import NewConversion

NOW = 1_800_000_000.0  # the clock the tests pass to the store (it never reads one)
LEASE = 120.0
BOTH = ("tiktok", "meta")


def conversion(
    n: int | str,
    *,
    event: str = "CompletePayment",
    destinations: tuple[str, ...] = BOTH,
    payload: Any = None,
    **fields: Any,
) -> NewConversion:
    """Conversion ``n`` with event_id ``{event}-{n}``; ``fields`` override anything, even with
    values the type forbids (that is how the failure tests provoke a write error).
    ``destinations`` name the connections by label: a destination's name is its first
    connection in the property (the default one's TikTok and Meta exist from the start)."""
    values: dict[str, Any] = {
        "event": event,
        "event_id": f"{event}-{n}",
        "event_time": 1_799_999_000,
        "order_id": str(n),
        "session_id": None,
        "test_event_code": None,
        "payload": payload if payload is not None else f'{{"n": "{n}"}}'.encode(),
        "warnings": b"[]",
        "origin": "api",
        "connections": destinations,
    }
    values.update(fields)
    return NewConversion(**values)
