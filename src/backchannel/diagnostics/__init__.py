"""What the dashboard shows, read from the store; and the two small formats its pages share."""

from __future__ import annotations

import orjson


def percent(count: int, base: int) -> float | None:
    """``count`` of ``base`` in percent with one decimal (what the pages and their JSON show);
    None when there is no base (no share to invent)."""
    return round(100.0 * count / base, 1) if base else None


def pretty(body: bytes | str | None) -> str:
    """A JSON body or answer indented for reading (keys in the order sent); anything else as
    it came; an empty string for nothing."""
    if not body:
        return ""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
