"""What the dashboard shows, read from the store; and the two small formats its pages share."""

from __future__ import annotations

import orjson


def property_term(dialect: str, column: str, *, leads: bool = True) -> str:
    """The condition a report's range query puts on one property's rows: `` AND column = ?``.

    ``leads``: the property's rows of the range are read through an index led by the
    property (conversions_property_received, migration 0019). Otherwise (``leads=False``: a
    filter on a joined row, the query reading a range of another table, such as the outbox's
    deliveries of a day) SQLite gets ``+column``: without statistics (the store runs no
    ANALYZE) it would otherwise enter through any index led by property_id and read the
    property's every row (1.6 s a query at 1,000,000 conversions, measured); the unary ``+``
    cannot use an index. PostgreSQL keeps statistics and chooses by itself.
    """
    if dialect == "sqlite" and not leads:
        return f" AND +{column} = ?"
    return f" AND {column} = ?"


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
