"""``send``: preview what would be sent (--dry-run), or fire a test order (--test)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

from backchannel import config, credentials
from backchannel import destinations as registry
from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_settings,
    open_configured_store,
    property_or_fail,
    read_json_input,
)
from backchannel.destinations import Target, meta, tiktok
from backchannel.notes import InvalidConversion
from backchannel.preview import normalize_all, render
from backchannel.store import Store


def send(
    source: Annotated[
        str | None,
        typer.Argument(
            help="A JSON file with one conversion or an array; - for stdin."
            " With --test: one conversion (default: a built-in sample order)."
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the bodies; send nothing.")
    ] = False,
    test: Annotated[
        bool,
        typer.Option(
            "--test",
            help="Send one TEST conversion through the running gateway and show, per"
            " destination, what was sent, what the platform answered and which identifiers"
            " it carried.",
        ),
    ] = False,
    code: Annotated[
        str | None,
        typer.Option("--code", help="With --test: the test_event_code (default: Connections)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="With --test: seconds to wait for delivery.")
    ] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="With --test: print JSON.")] = False,
    destination: Annotated[
        list[str] | None,
        typer.Option(
            "--destination",
            "-d",
            help="A registered destination (repeatable). Default: the `destinations` setting's"
            " and every connected one.",
        ),
    ] = None,
    tiktok_pixel: Annotated[str | None, typer.Option(help="TikTok pixel code to show.")] = None,
    meta_pixel: Annotated[str | None, typer.Option(help="Meta pixel id to show.")] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Preview a conversion (--dry-run), or fire a test order through the gateway (--test).

    --dry-run prints exactly what would be sent, one JSON line per destination. --test stores
    one conversion with a Test Events code in the configured database, waits for the running
    `serve` or `worker` to deliver it, and prints the side-by-side view (exit 1 if nothing
    delivered it within --timeout).
    """
    settings = load_settings()
    if test:
        if dry_run:
            fail("--test and --dry-run: choose one")
        if destination:
            fail("--destination: not with --test (event routing decides; see `route show`)")
        send_test(settings, source, code, timeout, as_json, property_name)
        return
    for flag, given in (("--code", code is not None), ("--json", as_json)):
        if given:
            fail(f"{flag}: only with --test")
    for name in destination or ():
        if name not in registry.DESTINATIONS:
            fail(
                f"--destination: unknown destination {name!r} (known: {', '.join(registry.NAMES)})"
            )
    if not dry_run:
        fail(
            "sending for real needs `backchannel serve`; use --dry-run to preview, or --test"
            " to fire a test order",
            2,
        )
    if source is None:
        fail("source: give a JSON file or - for stdin")
    document = read_json_input(source)
    items = document if isinstance(document, list) else [document]
    if not items:
        fail("input: an empty array holds no conversion")
    store = readable_store(settings)
    region, owner = settings.default_region, None
    if store is not None:
        try:
            prop = property_or_fail(store, property_name)
            region, owner = prop.default_region or region, prop.id
        finally:
            store.close()
    elif property_name is not None:
        fail("--property: no database yet (run `backchannel migrate`)")
    try:
        accepted = normalize_all(
            items,
            now=time.time(),
            default_region=region,
            strip_params=settings.strip_params,
        )
    except InvalidConversion as exc:
        fail("; ".join(f"{n.path}: {n.reason}" for n in exc.notes))
    pixels = {tiktok.name: tiktok_pixel, meta.name: meta_pixel}
    chosen = dry_run_targets(settings, destination, pixels, owner)
    for line in render(accepted, chosen, now=time.time()):
        typer.echo(orjson.dumps(line).decode())


def dry_run_targets(
    settings: config.Settings,
    names: list[str] | None,
    pixels: dict[str, str | None],
    property_id: int | None = None,
) -> dict[str, Target]:
    """The target of each destination a dry run shows (default: the property's active ones).

    With a readable store (an existing database, its key) a destination's target is what the
    worker would use for the property's first connection of it (:class:`~backchannel.targets.
    Targets`: its pixel, settings and secrets); otherwise, or where that cannot be resolved, a
    minimal one from the settings (base URL, configured pixel). The bodies never hold a secret
    either way.
    """
    from dataclasses import replace

    from backchannel.routing import active_connections
    from backchannel.store.base import DEFAULT_PROPERTY
    from backchannel.targets import Targets

    owner = DEFAULT_PROPERTY if property_id is None else property_id
    store = readable_store(settings)
    try:
        if names:
            chosen = list(dict.fromkeys(names))
        elif store is not None:
            active = {
                c.destination
                for c in active_connections(store, settings.destinations)
                if c.property_id == owner
            }
            chosen = [n for n in registry.NAMES if n in active]
        else:
            chosen = [n for n in registry.NAMES if n in settings.destinations]
        resolver = None
        if store is not None:
            try:
                cipher = credentials.load_cipher(settings, create=False)
            except credentials.SecretError:
                cipher = None
            if cipher is not None:
                resolver = Targets(settings, store, cipher, sandbox_url=None)
        targets: dict[str, Target] = {}
        for name in chosen:
            target = None
            connection = store.get_connection(name, owner) if store is not None else None
            if resolver is not None and connection is not None and connection.id is not None:
                try:
                    target = resolver.resolve(connection.id).target
                except Exception:  # no token and no sandbox URL: the minimal one
                    target = None
            if target is None:
                spec = registry.get(name)
                target = Target(
                    settings.base_url_for(name) or spec.DEFAULT_BASE_URL,
                    settings.pixel_for(name) or "",
                    source_ids=settings.source_ids.get(name, {}),
                    api_version=settings.meta_api_version,
                )
            if pixels.get(name):
                target = replace(target, pixel=pixels[name] or "")
            targets[name] = target
        return targets
    finally:
        if store is not None:
            store.close()


def readable_store(settings: config.Settings) -> Store | None:
    """The configured store when it already exists (a dry run never creates a database)."""
    from pathlib import Path

    from backchannel.store import open_store

    url = settings.database_url
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:///")
        if path in ("", ":memory:") or not Path(path).exists():
            return None
    try:
        return open_store(url)
    except Exception:  # unreachable or not migrated: preview without it
        return None


def send_test(
    settings: config.Settings,
    source: str | None,
    code: str | None,
    timeout: float,
    as_json: bool,
    property_name: str | None = None,
) -> None:
    """``send --test``: ingest one test conversion, wait for the worker, print what happened."""
    import asyncio

    from backchannel import testorder
    from backchannel.routing import Routes
    from backchannel.store.runner import for_store

    if not 0 < timeout <= 600:
        fail("--timeout: must be more than 0 and at most 600 seconds")
    from backchannel.properties import context
    from backchannel.routing import active_connections, active_destinations

    document = read_json_input(source) if source is not None else None
    store = open_configured_store(settings)
    try:
        owner = context(property_or_fail(store, property_name), settings)
        store.ensure_connections(settings.destinations, time.time(), owner.id)
        own = active_connections(store, settings.destinations, owner.id)
        connections = {c.name: c for c in own}
        names = [c.name for c in own]
        try:
            if document is None:
                chosen = testorder.resolve_code(code, connections, names)
                item = testorder.sample_order(chosen)
            else:
                given_code = document.get("test_event_code") if isinstance(document, dict) else None
                given = (
                    code
                    if code is not None
                    else given_code
                    if isinstance(given_code, str)
                    else None
                )
                chosen = testorder.resolve_code(given, connections, names)
                item = testorder.prepare_item(document, chosen, override=code is not None)
        except testorder.FireError as exc:
            fail(str(exc))
        routes = Routes(settings.destinations)

        async def run() -> testorder.Fired:
            runner = for_store(open_configured_store(settings))  # closed with its threads
            try:
                return await testorder.fire(
                    item,
                    runner,
                    now=time.time(),
                    default_region=owner.default_region,
                    destinations=settings.destinations,
                    routes=routes,
                    stitch_window=settings.click_cookie_days * 86400.0,
                    property_id=owner.id,
                )
            finally:
                runner.close()

        try:
            fired = asyncio.run(run())
        except testorder.FireError as exc:
            fail(str(exc))
        store.audit(time.time(), "cli", "test.fire", f"{fired.event} {fired.event_id}", owner.id)
        delivered = testorder.wait(store, fired.conversion_id, timeout)
        view = testorder.load_view(
            store,
            fired.conversion_id,
            active_destinations(store, settings.destinations, owner.id),
        )
    finally:
        store.close()
    assert view is not None
    if as_json:
        typer.echo(
            orjson.dumps(
                view.as_dict() | {"warnings": fired.warnings}, option=orjson.OPT_INDENT_2
            ).decode()
        )
    else:
        print_test_view(view, fired.warnings)
    if not delivered:
        fail(
            f"nothing delivered test event {fired.event_id} within {timeout:g} s: is"
            " `backchannel serve` or `backchannel worker` running on this database?",
            1,
        )


def print_test_view(view: Any, warnings: list[dict[str, Any]]) -> None:
    """The side-by-side view as rich tables, one per destination."""
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(
        f"[bold]Test event[/bold] {view.event} {view.event_id}"
        f"  (conversion {view.conversion_id}, code {view.test_event_code})"
    )
    for note in warnings:
        console.print(f"  warning: {note['path']}: {note['reason']}")
    for d in view.destinations:
        named = d.destination
        if d.connection and d.connection != d.destination:
            named += f" {d.connection}"
        table = Table(title=f"{named}: {d.status}", show_lines=True)
        table.add_column("sent")
        table.add_column("answered")
        table.add_column("identifiers")
        answered = d.answered or d.last_error or ""
        if d.platform_ref:
            answered = f"{answered}\nref {d.platform_ref}"
        idents = "\n".join(f"{i.key}: {i.shown}" for i in d.identifiers)
        extra = f"test_event_code {d.code_sent}\n" if d.code_sent else ""
        table.add_row(extra + (d.sent or ""), answered, idents)
        console.print(table)
