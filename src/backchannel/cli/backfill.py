"""``backfill``: queue stored conversions for a destination connected later."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel.cli.common import fail, load_settings, open_configured_store


def backfill(
    destination: Annotated[str, typer.Argument(help="The destination to queue the past for.")],
    since: Annotated[
        str, typer.Option(help="How far back: conversions received in the last 2d, 12h, 30m.")
    ] = "2d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be queued; queue nothing.")
    ] = False,
) -> None:
    """Queue conversions a destination never got (it was connected later), within its window."""
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
        done = backfills.backfill(
            store,
            destination,
            now - seconds,
            now,
            always=settings.destinations,
            source_ids=settings.source_ids,
            dry_run=dry_run,
        )
        if not dry_run and done.queued:
            store.audit(now, "cli", "backfill", f"{destination}: {done.queued} since {since}")
    finally:
        store.close()
    verb = "would queue" if dry_run else "queued"
    typer.echo(
        f"{destination}: {verb} {done.queued}; older than its window {done.too_old};"
        f" not routed, opted out or not sendable {done.skipped}"
    )
