"""``backfill``: queue stored conversions for a connection made later."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_settings,
    open_configured_store,
    property_or_fail,
)
from backchannel.store.base import DEFAULT_PROPERTY


def backfill(
    destination: Annotated[str, typer.Argument(help="The destination to queue the past for.")],
    since: Annotated[
        str, typer.Option(help="How far back: conversions received in the last 2d, 12h, 30m.")
    ] = "2d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be queued; queue nothing.")
    ] = False,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    connection_label: Annotated[
        str | None,
        typer.Option(
            "--connection",
            metavar="LABEL",
            help="Which of the property's connections of the destination (default: the"
            " destination's name, its first).",
        ),
    ] = None,
) -> None:
    """Queue a property's conversions a connection never got (it was made later), within its
    destination's window."""
    from backchannel import backfill as backfills
    from backchannel import destinations as registry

    if destination not in registry.NAMES:
        fail(
            f"destination: unknown destination {destination!r} (known: {', '.join(registry.NAMES)})"
        )
    try:
        seconds = backfills.parse_duration(since)
    except ValueError as exc:
        fail(str(exc))
    settings = load_settings()
    store = open_configured_store(settings)
    now = time.time()
    try:
        prop = property_or_fail(store, property_name)
        label = connection_label or destination
        connection = store.get_connection(label, prop.id)
        if connection is None or connection.destination != destination:
            fail(f"--connection: {prop.name} has no {destination} connection {label!r}")
        done = backfills.backfill(
            store,
            connection,
            now - seconds,
            now,
            always=settings.destinations,
            source_ids=settings.source_ids if prop.id == DEFAULT_PROPERTY else {},
            dry_run=dry_run,
        )
        named = destination if label == destination else f"{destination} {label}"
        if not dry_run and done.queued:
            store.audit(now, "cli", "backfill", f"{named}: {done.queued} since {since}", prop.id)
    finally:
        store.close()
    verb = "would queue" if dry_run else "queued"
    typer.echo(
        f"{named}: {verb} {done.queued}; older than its window {done.too_old};"
        f" not routed, opted out or not sendable {done.skipped}"
    )
