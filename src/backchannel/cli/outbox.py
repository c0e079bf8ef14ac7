"""The outbox: ``status`` (counts per destination and state) and ``replay`` (dead letters)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer

from backchannel import destinations as registry
from backchannel.cli.common import fail, load_settings, open_configured_store
from backchannel.store.base import Store


def replay(
    event_id: Annotated[str | None, typer.Option("--event-id", help="Re-queue this event.")] = None,
    all_dead: Annotated[
        bool, typer.Option("--all-dead", help="Re-queue every dead letter.")
    ] = False,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
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
    now = time.time()
    stale = _older_than_dedup_window(store, now, event_id, destination)
    count = store.replay(now, event_id=event_id, destination=destination)
    store.audit(time.time(), "cli", "replay", event_id or "all dead")
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
    store: Store, now: float, event_id: str | None, destination: str | None
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
    return int(store.read(sql, params)[0][0])


def status() -> None:
    """Outbox counts per destination and state."""
    store = open_configured_store(load_settings())
    counts = store.outbox_counts()
    typer.echo(orjson.dumps({"conversions": store.conversion_count(), "outbox": counts}).decode())
    store.close()
