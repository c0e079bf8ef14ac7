"""The outbox: ``status`` (counts per destination and state) and ``replay`` (dead letters)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer

from backchannel import destinations as registry
from backchannel.cli.common import fail, load_settings, open_configured_store, property_or_fail
from backchannel.store.base import Store

#: --property of the commands that read or change every property unless one is named
FILTER_HELP = "Only this property's rows (default: every property's)."


def replay(
    event_id: Annotated[str | None, typer.Option("--event-id", help="Re-queue this event.")] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Re-queue every dead letter.")
    ] = False,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=FILTER_HELP)] = None,
) -> None:
    """Re-queue dead letters with their original event_id (so platforms still deduplicate)."""
    if (event_id is None) == (not all_dead):
        fail("give exactly one of --event-id ID or --all-dead")
    if destination is not None and destination not in registry.DESTINATIONS:
        fail(
            f"--destination: unknown destination {destination!r}"
            f" (known: {', '.join(registry.NAMES)})"
        )
    store = open_configured_store(load_settings())
    try:
        owner = property_or_fail(store, property_name).id if property_name else None
        now = time.time()
        stale = _older_than_dedup_window(store, now, event_id, destination, owner)
        count = store.replay(now, event_id=event_id, destination=destination, property_id=owner)
        store.audit(time.time(), "cli", "replay", event_id or "all dead", owner)
    finally:
        store.close()
    if count == 0:
        fail("no dead letters matched", 1)
    typer.echo(f"re-queued {count} delivery(ies)")
    if stale:
        typer.echo(
            f"warning: {stale} of them happened more than {DEDUP_WINDOW_HOURS} h ago. Platforms"
            " deduplicate by event_id only within a window (TikTok: 48 h), so a letter that"
            " had reached the platform before (an answer lost, not a refusal) may count twice",
            err=True,
        )


#: TikTok's deduplication window (reference §6): an event resent later may count twice
DEDUP_WINDOW_HOURS = 48
STALE_SQL = (
    "SELECT COUNT(*) FROM outbox o JOIN conversions c ON c.id = o.conversion_id"
    " WHERE o.status = 'dead' AND c.event_time < ?"
)


def _older_than_dedup_window(
    store: Store,
    now: float,
    event_id: str | None,
    destination: str | None,
    property_id: int | None = None,
) -> int:
    """Dead letters about to be replayed whose event is older than the dedup window."""
    sql = STALE_SQL
    params: list[object] = [now - DEDUP_WINDOW_HOURS * 3600.0]
    if event_id is not None:
        sql += " AND c.event_id = ?"
        params.append(event_id)
    if destination is not None:
        sql += " AND o.destination = ?"
        params.append(destination)
    if property_id is not None:
        sql += " AND c.property_id = ?"
        params.append(property_id)
    return int(store.read(sql, params)[0][0])


def status(
    property_name: Annotated[str | None, typer.Option("--property", help=FILTER_HELP)] = None,
) -> None:
    """Outbox counts per destination and state."""
    store = open_configured_store(load_settings())
    try:
        owner = property_or_fail(store, property_name).id if property_name else None
        counts = store.outbox_counts(owner)
        total = store.conversion_count(owner)
    finally:
        store.close()
    typer.echo(orjson.dumps({"conversions": total, "outbox": counts}).decode())
