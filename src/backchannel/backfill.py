"""``backchannel backfill DEST --since 2d``: queue the past for a connection made later.

Why it exists: a connection made after conversions were stored gets only what arrives from
then on (enabling one must not resend history on its own: the shop may have fed that
platform another way). When the shop does want the past, this queues, for the connection
(``DEST`` of ``--property``, ``--connection``), every stored production conversion of its
property that:

- was received since ``since``,
- is still inside the destination's own window (``max_age``: GA4 72 h, TikTok and Meta 7
  days…), so the platform will take it,
- is routed to it (``route``), not opted out, and has no row for it yet (so a second run, or
  a conversion already sent, queues nothing twice).

A conversion the destination cannot take as configured (``unsendable``) is skipped and
counted. The rows are pending, due now: the running worker delivers them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from backchannel import destinations as registry
from backchannel.events import Conversion
from backchannel.routing import parse
from backchannel.store.base import Connection, Store

_DURATION = re.compile(r"(\d+)\s*([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
CHUNK = 1000  # conversions read and queued per step

CANDIDATES_SQL = """
SELECT c.id, c.event, c.payload FROM conversions c
WHERE c.property_id = ? AND c.test_event_code IS NULL AND c.received_at >= ? AND c.id > ?
  AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.conversion_id = c.id AND o.connection_id = ?)
ORDER BY c.id
LIMIT ?
"""


def parse_duration(text: str) -> float:
    """``30m``, ``12h``, ``2d`` (or several: ``1d12h``) as seconds; ValueError names why."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != compact.replace(" ", ""):
        raise ValueError(f"since: {text!r} is not a duration such as 2d, 12h or 30m")
    return float(sum(int(n) * _UNIT[u] for n, u in parts))


@dataclass(slots=True)
class Backfilled:
    queued: int = 0
    #: already older than the destination's window: it would refuse them
    too_old: int = 0
    #: not routed to it, opted out, or not sendable as configured
    skipped: int = 0


def backfill(
    store: Store,
    connection: Connection,
    since: float,
    now: float,
    *,
    always: tuple[str, ...],
    source_ids: Mapping[str, Mapping[str, str]] | None = None,
    dry_run: bool = False,
) -> Backfilled:
    """Queue ``connection``'s rows for its property's conversions received at or after
    ``since``, that its routes take (``source_ids``: its property's)."""
    destination = connection.destination
    assert connection.id is not None
    spec = registry.get(destination)
    allowed = parse(connection.routes)
    own_ids = (source_ids or {}).get(destination, {})
    result = Backfilled()
    last = 0
    while True:
        rows = store.read(
            CANDIDATES_SQL, (connection.property_id, since, last, connection.id, CHUNK)
        )
        if not rows:
            return result
        chosen: list[int] = []
        for conversion_id, event, payload in rows:
            last = int(conversion_id)
            try:
                conversion = Conversion.from_dict(orjson.loads(payload))
            except (orjson.JSONDecodeError, TypeError, KeyError):
                result.skipped += 1
                continue
            if (
                conversion.opt_out
                or (allowed is not None and str(event) not in allowed)
                or spec.unsendable(conversion, own_ids) is not None
            ):
                result.skipped += 1
            elif now - conversion.event_time > spec.max_age(conversion):
                result.too_old += 1
            else:
                chosen.append(int(conversion_id))
        if chosen:
            result.queued += len(chosen) if dry_run else store.enqueue(connection.id, chosen, now)
