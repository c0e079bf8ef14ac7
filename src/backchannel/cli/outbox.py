"""The outbox: ``status`` (counts per destination and state) and ``replay`` (dead letters)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer

from backchannel import destinations as registry
from backchannel.cli.common import fail, load_settings, open_configured_store


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
    count = store.replay(time.time(), event_id=event_id, destination=destination)
    store.audit(time.time(), "cli", "replay", event_id or "all dead")
    store.close()
    if count == 0:
        fail("no dead letters matched", 1)
    typer.echo(f"re-queued {count} delivery(ies)")


def status() -> None:
    """Outbox counts per destination and state."""
    store = open_configured_store(load_settings())
    counts = store.outbox_counts()
    typer.echo(orjson.dumps({"conversions": store.conversion_count(), "outbox": counts}).decode())
    store.close()
