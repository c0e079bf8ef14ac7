"""Dead letters: the deliveries a platform refused for good, and what it takes to resend them.

A dead outbox row keeps the platform's reason (``last_error``), its answer
(``last_response``) and the event exactly as it was sent (``sent_body``: the platform's
``data[]`` item, written by the worker when it dead-letters the row). This module reads them
for the dashboard and its JSON twin; replaying goes through :meth:`Store.replay` like the
CLI's ``backchannel replay``, so both re-queue the same way (same ``event_id``, attempts
reset).

"When it died": ``outbox.failed_at``, recorded by the worker since migration 0008; a row
dead-lettered before that falls back to ``due_at``, when its last try was due. The list is
newest first by that time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from backchannel.store.base import DEAD, Store

PER_PAGE = 50


@dataclass(frozen=True, slots=True)
class DeadRow:
    """One line of the dead-letter list."""

    outbox_id: int
    destination: str
    event: str
    event_id: str
    attempts: int
    reason: str | None
    died_at: float
    test: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "outbox_id": self.outbox_id,
            "destination": self.destination,
            "event": self.event,
            "event_id": self.event_id,
            "attempts": self.attempts,
            "reason": self.reason,
            "died_at": self.died_at,
            "test": self.test,
        }


@dataclass(frozen=True, slots=True)
class DeadPage:
    """One page of the list: its rows and where it sits in the whole."""

    rows: list[DeadRow]
    total: int
    page: int
    pages: int
    destination: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "page": self.page,
            "pages": self.pages,
            "per_page": PER_PAGE,
            "destination": self.destination,
            "rows": [r.to_json() for r in self.rows],
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Everything the detail page shows about one outbox row (dead, or since replayed)."""

    outbox_id: int
    destination: str
    status: str
    attempts: int
    reason: str | None
    response: str | None
    #: the event exactly as sent (JSON bytes), None if the row was never dead-lettered
    sent_body: bytes | None
    died_at: float
    event: str
    event_id: str
    event_time: int
    received_at: float
    test_event_code: str | None


_COLUMNS = """
SELECT o.id, o.destination, c.event, c.event_id, o.attempts, o.last_error,
       COALESCE(o.failed_at, o.due_at),
       CASE WHEN c.test_event_code IS NULL THEN 0 ELSE 1 END
FROM outbox o JOIN conversions c ON c.id = o.conversion_id
WHERE o.status = ?"""


def dead_page(
    store: Store,
    *,
    page: int = 1,
    destination: str | None = None,
    property_id: int | None = None,
) -> DeadPage:
    """Page ``page`` (1-based, :data:`PER_PAGE` rows) of the dead letters, newest first (of
    one property: its connections' only; None: every property's)."""
    where = ""
    params: list[object] = [DEAD]
    if destination is not None:
        where = " AND o.destination = ?"
        params.append(destination)
    if property_id is not None:
        where += " AND o.connection_id IN (SELECT k.id FROM connections k WHERE k.property_id = ?)"
        params.append(property_id)
    # only fixed fragments are concatenated; every value is a bound parameter
    count_sql = "SELECT COUNT(*) FROM outbox o WHERE o.status = ?" + where  # noqa: S608
    ((total,),) = store.read(count_sql, params)
    rows = store.read(
        _COLUMNS
        + where
        + " ORDER BY COALESCE(o.failed_at, o.due_at) DESC, o.id DESC LIMIT ? OFFSET ?",
        [*params, PER_PAGE, (page - 1) * PER_PAGE],
    )
    return DeadPage(
        rows=[
            DeadRow(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], float(r[6]), bool(r[7]))
            for r in rows
        ],
        total=int(total),
        page=page,
        pages=max(1, math.ceil(int(total) / PER_PAGE)),
        destination=destination,
    )


def dead_letter(store: Store, outbox_id: int, property_id: int | None = None) -> DeadLetter | None:
    """The outbox row ``outbox_id`` with its conversion, or None if there is none (or it is
    another property's than ``property_id``, when given)."""
    sql = (
        "SELECT o.id, o.destination, o.status, o.attempts, o.last_error, o.last_response,"
        " o.sent_body, COALESCE(o.failed_at, o.due_at), c.event, c.event_id, c.event_time,"
        " c.received_at, c.test_event_code"
        " FROM outbox o JOIN conversions c ON c.id = o.conversion_id WHERE o.id = ?"
    )
    params: list[object] = [outbox_id]
    if property_id is not None:
        sql += " AND c.property_id = ?"
        params.append(property_id)
    rows = store.read(sql, params)
    if not rows:
        return None
    r = rows[0]
    body = r[6]
    return DeadLetter(
        outbox_id=int(r[0]),
        destination=r[1],
        status=r[2],
        attempts=int(r[3]),
        reason=r[4],
        response=r[5],
        sent_body=None if body is None else bytes(body),
        died_at=float(r[7]),
        event=r[8],
        event_id=r[9],
        event_time=int(r[10]),
        received_at=float(r[11]),
        test_event_code=r[12],
    )


def dead_count(
    store: Store, event_id: str, destination: str | None = None, property_id: int | None = None
) -> int:
    """How many dead rows carry ``event_id`` (in ``destination``, of ``property_id``): what a
    replay would take."""
    sql = (
        "SELECT COUNT(*) FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
        " WHERE o.status = ? AND c.event_id = ?"
    )
    params: list[object] = [DEAD, event_id]
    if destination is not None:
        sql += " AND o.destination = ?"
        params.append(destination)
    if property_id is not None:
        sql += " AND c.property_id = ?"
        params.append(property_id)
    ((n,),) = store.read(sql, params)
    return int(n)
