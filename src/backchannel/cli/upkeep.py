"""Upkeep: ``doctor`` (what to fix) and ``purge`` (retention)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel.cli.common import fail, load_settings, open_configured_store


def doctor(
    live: Annotated[
        bool, typer.Option("--live", help="Also contact the real TikTok/Meta endpoints.")
    ] = False,
) -> None:
    """Check configuration, database, key, tokens, destinations and clock; say what to fix."""
    from backchannel import doctor as checks

    report = checks.run(live=live)
    for line in report.lines():
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


def purge(
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", help="The window, e.g. 30d or 12h. Default: retention_days."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be removed; remove nothing.")
    ] = False,
) -> None:
    """Remove landing sessions, IPs and user agents older than the window; keep counts.

    Sessions last seen before the cutoff are counted into session_rollups (for the gap
    report), then deleted with their email hashes and browser events. Conversions received
    before it lose their IP and user agent, except those still waiting for delivery.
    """
    from datetime import UTC, datetime

    from backchannel import retention

    settings = load_settings()
    if older_than is None:
        if settings.retention_days == 0:
            fail("retention_days is 0 (keep forever); pass --older-than 30d to purge anyway")
        older_than = f"{settings.retention_days}d"
    try:
        window = retention.parse_window(older_than)
    except ValueError as exc:
        fail(f"--older-than: {exc}")
    now = time.time()
    cutoff = now - window
    store = open_configured_store(settings)
    try:
        report = retention.purge_now(store, cutoff, now, dry_run=dry_run)
        if not dry_run:
            store.audit(
                time.time(),
                "cli",
                "purge",
                f"older than {older_than}: {report.sessions} sessions,"
                f" {report.conversions_scrubbed} conversions scrubbed",
            )
    finally:
        store.close()
    when = datetime.fromtimestamp(cutoff, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if dry_run:
        typer.echo(
            f"dry run: would purge {report.sessions} landing session(s) last seen before {when}"
            " (their counts kept in session_rollups)"
        )
        typer.echo(
            f"dry run: would scrub ip and user agent from {report.conversions_scrubbed}"
            " conversion(s) received before then"
        )
    else:
        typer.echo(
            f"purged {report.sessions} landing session(s) last seen before {when}, with"
            f" {report.session_emails} email hash(es) and {report.browser_events} browser"
            " event(s); their counts are kept in session_rollups"
        )
        typer.echo(
            f"scrubbed ip and user agent from {report.conversions_scrubbed} conversion(s)"
            " received before then"
        )
    prefix = "dry run: would delete" if dry_run else "deleted"
    typer.echo(
        f"{prefix} {report.rejections} refused-input record(s) and remove the client ip from"
        f" {report.audit_ips} audit row(s) older than then"
        if dry_run
        else f"{prefix} {report.rejections} refused-input record(s) and removed the client ip"
        f" from {report.audit_ips} audit row(s) older than then"
    )
    if report.conversions_held:
        kept = "dry run: would keep" if dry_run else "kept"
        typer.echo(
            f"{kept} ip and user agent of {report.conversions_held} conversion(s) still waiting"
            " for delivery (pending or in flight): the platforms need them; a later purge"
            " scrubs them once delivered"
        )
