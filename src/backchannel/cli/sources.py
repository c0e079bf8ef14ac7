"""Sources and ledger: ``source`` (webhook secrets) and ``import`` (CSV backfill)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from backchannel import credentials
from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_cipher_or_fail,
    load_settings,
    open_configured_store,
    property_or_fail,
    read_secret,
)
from backchannel.store.base import DEFAULT_PROPERTY

source_app = typer.Typer(
    help="Webhook sources (Shopify, Stripe, WooCommerce): signing secrets, encrypted at rest.",
    no_args_is_help=True,
)


def _source_name(source: str) -> str:
    from backchannel.sources import SOURCES

    name = source.strip().lower()
    if name not in SOURCES:
        fail(f"source: must be one of {', '.join(SOURCES)}")
    return name


@source_app.command("set")
def source_set(
    source: Annotated[str, typer.Argument(help="shopify, stripe or woocommerce")],
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store-url",
            help="woocommerce: the shop's URL as its webhooks send it (X-WC-Webhook-Source,"
            " e.g. https://shop.example.com/); webhooks from any other shop are refused."
            " Required the first time.",
        ),
    ] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Store a property's webhook signing secret for a source, read from stdin (never from
    the command line).

    Several secrets may be given comma-separated while one is being rotated. A Stripe
    Connect platform's endpoint secret may be stored for each property whose Stripe account
    it serves (the event's account then names the property).
    """
    from backchannel.sources.woocommerce import store_key

    name = _source_name(source)
    if store_url is not None and name != "woocommerce":
        fail("--store-url: only for woocommerce")
    if store_url is not None and store_key(store_url) is None:
        fail(f"--store-url: {store_url!r} is not an http(s) URL such as https://shop.example.com/")
    settings = load_settings()
    store = open_configured_store(settings)
    try:
        prop = property_or_fail(store, property_name)
        if (
            name == "woocommerce"
            and store_url is None
            and not store.get_source_store_url(name, prop.id)
        ):
            fail(
                "--store-url: required for woocommerce: the shop's URL as its webhooks send it"
                " (X-WC-Webhook-Source, e.g. https://shop.example.com/)"
            )
        secret = read_secret(
            "secret", f"{name} webhook secret", f"backchannel source set {name} < s.txt"
        )
        cipher = load_cipher_or_fail(settings)
        existed = store.get_source_secret(name, prop.id) is not None
        url = store_url.strip() if store_url is not None else None
        store.set_source_secret(
            name, credentials.encrypt(cipher, secret), time.time(), url, property_id=prop.id
        )
        action = "source.replace" if existed else "source.set"
        store.audit(time.time(), "cli", action, name, prop.id)
    finally:
        store.close()
    overridden = getattr(settings, f"{name}_webhook_secret", None) and prop.id == DEFAULT_PROPERTY
    typer.echo(f"{name}: webhook secret stored encrypted")
    if url is not None:
        typer.echo(f"{name}: webhooks accepted from {url} only")
    if overridden:
        typer.echo(
            f"note: BACKCHANNEL_{name.upper()}_WEBHOOK_SECRET is set and wins over the stored one",
            err=True,
        )
    if name == "woocommerce" and settings.woocommerce_store_url:
        typer.echo(
            "note: BACKCHANNEL_WOOCOMMERCE_STORE_URL is set and wins over the stored store URL",
            err=True,
        )


@source_app.command("remove")
def source_remove(
    source: Annotated[str, typer.Argument(help="shopify, stripe or woocommerce")],
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Forget a property's stored webhook secret (its webhooks are then refused with 503)."""
    name = _source_name(source)
    store = open_configured_store(load_settings())
    try:
        prop = property_or_fail(store, property_name)
        if not store.delete_source_secret(name, prop.id):
            fail(f"{name}: no webhook secret stored", 1)
        store.audit(time.time(), "cli", "source.remove", name, prop.id)
    finally:
        store.close()
    typer.echo(f"{name}: webhook secret removed")


def import_csv(
    file: Annotated[Path, typer.Argument(help="A CSV file of orders with a header row.")],
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="COLUMN=FIELD, e.g. --map 'Order Total=value' (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and summarise; store nothing.")
    ] = False,
    record_only: Annotated[
        bool,
        typer.Option("--record-only", help="Fill the order ledger only; send no conversions."),
    ] = False,
    event: Annotated[
        str, typer.Option(help="The event each order becomes (unless an 'event' column says).")
    ] = "CompletePayment",
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Backfill orders from a CSV export: every row is checked first; any bad row, nothing stored.

    Good files are written in chunks of 1000 rows, each chunk one transaction. Re-running the
    same file is safe (the order id makes the event_id; the ledger keeps one row per order),
    so an interrupted import is completed by running it again. Orders inside a destination's
    time window (7 days) are enqueued for it; older ones, and all with --record-only, only go
    to the order ledger (the truth set of the gap report).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from backchannel import stitch
    from backchannel.destinations import DESTINATIONS
    from backchannel.ingest import FOREIGN_SESSION, to_record
    from backchannel.properties import context
    from backchannel.routing import Routes
    from backchannel.sources import csv_import, ledger

    settings = load_settings()
    started = time.monotonic()
    chooser = open_configured_store(settings)
    try:
        owner = context(property_or_fail(chooser, property_name), settings)
    finally:
        chooser.close()
    now = time.time()
    try:
        raw = file.read_bytes()
    except OSError as exc:
        fail(f"{file}: cannot read ({exc.strerror})")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(f"{file}: not UTF-8 text (byte {exc.start}); export the CSV as UTF-8")
    try:
        maps = csv_import.parse_maps(mapping or [])
    except csv_import.MappingError as exc:
        fail(str(exc))
    rows_estimate = text.count("\n")
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=rows_estimate < 2000,
    )
    with progress:
        checking = progress.add_task("checking", total=rows_estimate)
        try:
            plan = csv_import.plan(
                text,
                maps=maps,
                event=event,
                now=now,
                default_region=owner.default_region,
                progress=lambda n: progress.advance(checking, n),
            )
        except csv_import.MappingError as exc:
            fail(f"{file}: {exc}")
    if plan.errors:
        lines = plan.error_lines()
        for line in lines[:100]:
            typer.echo(f"error: {line}", err=True)
        if len(lines) > 100:
            typer.echo(f"error: … and {len(lines) - 100} more", err=True)
        bad = len({line for line, _ in plan.errors})
        typer.echo(f"error: {bad} bad row(s) of {plan.total}: nothing was imported", err=True)
        if not dry_run:
            store = open_configured_store(settings)
            reason = {
                "error": "invalid_rows",
                "file": file.name,
                "rows": plan.total,
                "bad_rows": bad,
                "errors": [{"line": line, **note.as_dict()} for line, note in plan.errors[:100]],
            }
            store.record_rejection("csv", orjson.dumps(reason), time.time(), None, owner.id)
            store.close()
        raise typer.Exit(2)

    utm = owner.utm_sources
    # a session_id column: the landing sessions' signals are ledger evidence too
    # and the conversions are stitched from them (browser leg), as ingest does
    landings: dict[str, ledger.Landing] = {}
    provenance: dict[int, str] = {}
    if any(row.conversion.session_id for row in plan.rows):
        lookup = open_configured_store(settings)
        try:
            matches = csv_import.named_sessions(
                plan.rows, lambda ids: lookup.find_sessions(session_ids=ids, property_id=owner.id)
            )
            foreign = {m.key for m in matches if m.session.property_id != owner.id}
            landings = csv_import.landings(matches)
            named = [row.conversion for row in plan.rows]
            for index, origin in enumerate(stitch.stitch_all(named, matches)):
                if origin.matched_by is not None:
                    provenance[index] = origin.to_json()
        except Exception as exc:
            fail(f"database: {type(exc).__name__} while reading the rows' landing sessions")
        finally:
            lookup.close()
        if foreign:  # another property's sessions: nothing is imported (a wrong --property?)
            bad_lines = [row.line for row in plan.rows if row.conversion.session_id in foreign]
            for number in bad_lines[:100]:
                typer.echo(f"error: line {number}: session_id: {FOREIGN_SESSION}", err=True)
            fail(f"{len(bad_lines)} row(s) name another property's sessions: nothing was imported")
    send: list[Any] = []
    record: list[Any] = []
    routes = Routes(settings.destinations)  # event routing applies to imports as to the API
    if not record_only:
        reader = open_configured_store(settings)
        try:
            routes.load(reader)
        finally:
            reader.close()
    for index, row in enumerate(plan.rows):
        conversion = row.conversion
        targets = (
            ()
            if record_only
            else tuple(
                (target.connection_id, target.destination)
                for target in routes.connections_for(conversion.event, owner.id)
                if now - conversion.event_time
                <= DESTINATIONS[target.destination].max_age(conversion)
            )
        )
        entry = ledger.entry(
            conversion, "csv", row.signals, utm, landing=landings.get(conversion.session_id or "")
        )
        assert entry is not None  # every row has an order id and a value
        entry.property_id = owner.id
        if targets:
            new = to_record(conversion, row.warnings, "csv", targets, owner.source_ids, owner.id)
            new.stitched = provenance.get(index)
            new.ledger = entry
            send.append(new)
        else:
            entry.event_id = None  # no conversion was made for it
            record.append(entry)
    summary: dict[str, Any] = {
        "file": str(file),
        "rows": plan.total,
        "orders": len(plan.rows),
        "merged_rows": plan.merged,
        "to_enqueue": len(send),
        "ledger_only": len(record),
        "attributed_tiktok": sum(1 for n in send if n.ledger and n.ledger.attributed_tiktok)
        + sum(1 for e in record if e.attributed_tiktok),
        "dry_run": dry_run,
    }
    if dry_run:
        typer.echo(orjson.dumps(summary).decode())
        return

    store = open_configured_store(settings)
    written = new_conversions = new_orders = 0
    try:
        with progress:
            writing = progress.add_task("importing", total=len(send) + len(record))
            for start in range(0, len(send), csv_import.CHUNK):
                chunk = send[start : start + csv_import.CHUNK]
                new_conversions += sum(store.insert_conversions(chunk, time.time()))
                written += len(chunk)
                progress.advance(writing, len(chunk))
            for start in range(0, len(record), csv_import.CHUNK):
                chunk = record[start : start + csv_import.CHUNK]
                new_orders += sum(store.record_orders(chunk, time.time()))
                written += len(chunk)
                progress.advance(writing, len(chunk))
    except KeyboardInterrupt:
        store.close()
        fail(
            f"interrupted after {written} of {len(plan.rows)} orders (whole chunks only);"
            " run the same command again to complete the import",
            130,
        )
    except Exception as exc:
        store.close()
        fail(
            f"database: {type(exc).__name__} after {written} of {len(plan.rows)} orders (whole"
            " chunks only); run the same command again to complete the import"
        )
    store.audit(time.time(), "cli", "import", f"{file.name}: {len(plan.rows)} orders", owner.id)
    store.close()
    elapsed = time.monotonic() - started
    summary.update(
        enqueued=new_conversions,
        duplicates=len(send) - new_conversions,
        ledger_only_new=new_orders,
        seconds=round(elapsed, 3),
        rows_per_second=round(plan.total / elapsed) if elapsed > 0 else None,
    )
    typer.echo(orjson.dumps(summary).decode())
