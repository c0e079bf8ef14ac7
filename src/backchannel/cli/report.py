"""``report``: the gap report and the Events Manager import it compares with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_settings,
    open_configured_store,
    property_or_fail,
)
from backchannel.extras import MissingExtra, require
from backchannel.store.base import DEFAULT_PROPERTY

report_app = typer.Typer(help="Reports computed from the store.", no_args_is_help=True)

REPORT_FORMATS = ("table", "csv", "json")
CHART_FORMATS = ("svg", "png")


def _parse_day(option: str, value: str) -> Any:
    from datetime import date

    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is not a date (YYYY-MM-DD)")


@report_app.command("gap")
def report_gap(
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="First day, YYYY-MM-DD (UTC). Default: 30 days up to --to, as the dashboard.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="Last day, YYYY-MM-DD (UTC), included. Default: today."),
    ] = None,
    switch_on: Annotated[
        str | None,
        typer.Option("--switch-on", help="The day the server leg was switched on, YYYY-MM-DD."),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    chart_dir: Annotated[
        Path | None,
        typer.Option(
            "--chart-dir",
            help="Also write the charts there (timeseries, gap, breakdown-<section>).",
        ),
    ] = None,
    chart_format: Annotated[
        str,
        typer.Option(
            "--chart-format",
            help="svg, or png (PNG needs resvg-py: the optional png extra).",
        ),
    ] = "svg",
    pixel_event: Annotated[
        str,
        typer.Option("--pixel-event", help="Event of the imported Events Manager counts."),
    ] = "CompletePayment",
    destination: Annotated[
        str | None,
        typer.Option(
            "--destination",
            help="The platform to report on (a destination name, e.g. snapchat): its"
            " attributed orders, its Pixel's mirror and its server leg. Default: tiktok.",
        ),
    ] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """The Pixel gap: a platform's attributed orders (TikTok's by default) its Pixel reported,
    the server leg recovered, and where the Pixel missed (browser, ad blockers, iOS version,
    page load time)."""
    from datetime import UTC, datetime, timedelta

    from backchannel import charts, report
    from backchannel.destinations import NAMES, display_name
    from backchannel.sources.ledger import PLATFORM

    if destination is not None and destination not in NAMES:
        fail(f"--destination: unknown destination {destination!r} (known: {', '.join(NAMES)})")
    platform = destination or PLATFORM

    last = _parse_day("--to", end) if end is not None else datetime.now(UTC).date()
    first = (
        _parse_day("--from", start)
        if start is not None
        else last - timedelta(days=report.DEFAULT_DAYS - 1)
    )
    if last < first:
        fail(f"--to: {last} is before --from {first}")
    switch = _parse_day("--switch-on", switch_on) if switch_on is not None else None
    if output not in REPORT_FORMATS:
        fail(f"--format: must be one of {', '.join(REPORT_FORMATS)}")
    chart_format = chart_format.lower()
    if chart_format not in CHART_FORMATS:
        fail(f"--chart-format: must be one of {', '.join(CHART_FORMATS)}, not {chart_format!r}")
    if chart_format == "png" and chart_dir is not None:
        try:  # before any work: a missing extra is one line naming the pip command
            require("resvg_py", "png", "--chart-format png")
        except MissingExtra as exc:
            fail(str(exc))
    if chart_dir is not None and chart_dir.exists() and not chart_dir.is_dir():
        fail(f"--chart-dir: {chart_dir} exists and is not a directory")
    store = open_configured_store(load_settings())
    try:
        prop = property_or_fail(store, property_name)
        result = report.from_store(
            store,
            first,
            last,
            switch,
            pixel_event=pixel_event,
            destination=platform,
            property_id=prop.id,
        )
    finally:
        store.close()
    if chart_dir is not None:
        try:
            chart_dir.mkdir(parents=True, exist_ok=True)
            for name, svg in charts.gap_charts(result).items():
                path = chart_dir / f"{name}.{chart_format}"
                if chart_format == "png":
                    path.write_bytes(charts.to_png(svg))
                else:
                    path.write_text(svg, encoding="utf-8")
                typer.echo(str(path), err=True)  # stderr: stdout stays the report
        except OSError as exc:
            fail(f"--chart-dir: cannot write charts into {chart_dir}: {exc.strerror or exc}")
    if output == "json":
        typer.echo(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode())
        return
    if output == "csv":
        typer.echo(report.to_csv(result), nl=False)
        return
    from rich.table import Table

    title = f"{display_name(platform)} gap report {first.isoformat()} – {last.isoformat()}"
    if prop.id != DEFAULT_PROPERTY or property_name is not None:
        title = f"{prop.name}: {title}"
    if switch is not None:
        title += f" (server leg on since {switch.isoformat()})"
    table = Table(title=title)
    for name in ("section", "bucket", "orders (base)", "pixel only", "server delivered"):
        table.add_column(name, justify="left" if name in ("section", "bucket") else "right")
    for name in ("deduplicated", "recovered", "coverage", "pixel coverage"):
        table.add_column(name, justify="right")
    for section, bucket, t in report.table_rows(result):
        table.add_row(
            section,
            bucket,
            str(t.orders),
            str(t.pixel_only),
            str(t.server_delivered),
            str(t.deduplicated),
            str(t.recovered),
            report.percent(t.coverage),
            report.percent(t.pixel_coverage),
        )
    console = Console()
    console.print(table)
    console.print(
        f"{result.ledger_orders} ledger order(s) in range, {result.total.orders} attributed to"
        f" {display_name(platform)} (the truth set). Every figure is a count of those orders;"
        " 'unknown' buckets are orders whose landing session is not stored (never seen, or"
        " purged)."
    )
    imported = result.pixel_import
    if imported is not None:
        console.print(
            f"Events Manager reported {imported.count} {imported.event} Pixel event(s)"
            f" (days covered {imported.days_covered} of {imported.days_in_range}) next to the"
            f" mirror's {result.total.pixel_only}; recovered vs reported:"
            f" {result.recovered_vs_reported}."
        )


@report_app.command("import-pixel")
def report_import_pixel(
    file: Annotated[Path, typer.Argument(help="CSV exported from TikTok Events Manager.")],
    event: Annotated[
        str, typer.Option("--event", help="The event these counts are of.")
    ] = "CompletePayment",
    date_column: Annotated[
        str, typer.Option("--date-column", help="Header of the day column.")
    ] = "date",
    count_column: Annotated[
        str, typer.Option("--count-column", help="Header of the count column.")
    ] = "count",
    date_format: Annotated[
        str | None,
        typer.Option("--date-format", help="strptime format when days are not YYYY-MM-DD."),
    ] = None,
    event_column: Annotated[
        str | None,
        typer.Option(
            "--event-column",
            help="Header of the event column, when the export lists several events:"
            " only the rows of --event are imported.",
        ),
    ] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Import daily Pixel counts from an Events Manager export, for the gap report's
    "pixel-only from an export" variant. Every row is checked before anything is written;
    re-importing a day replaces its count."""
    from backchannel import report

    if not event.strip():
        fail("--event: empty")
    try:
        text = file.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        fail(f"FILE: cannot read {file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        fail(f"FILE: {file} is not UTF-8 text (export the CSV as UTF-8)")
    try:
        parsed = report.parse_pixel_csv(
            text,
            date_column=date_column,
            count_column=count_column,
            date_format=date_format,
            event_column=event_column,
            event=event.strip(),
        )
    except report.PixelCsvError as exc:
        typer.echo(f"error: {file.name}: nothing imported", err=True)
        for problem in exc.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(2) from None
    store = open_configured_store(load_settings())
    try:
        prop = property_or_fail(store, property_name)
        now = time.time()
        written = store.set_pixel_counts(
            [(day, event.strip(), count) for day, count in parsed.days], now, prop.id
        )
        store.audit(
            now,
            "cli",
            "pixel_counts.import",
            f"{file.name}: {written} day(s) of {event}",
            prop.id,
        )
    finally:
        store.close()
    first, last = parsed.days[0][0], parsed.days[-1][0]
    summed = f" ({parsed.rows} rows summed per day)" if parsed.rows != written else ""
    other = f"; {parsed.skipped} row(s) of other events left out" if parsed.skipped else ""
    typer.echo(f"imported {written} day(s) of {event.strip()}, {first} to {last}{summed}{other}")
