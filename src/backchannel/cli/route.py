"""``route``: which events go to which destination."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel.cli.common import fail, load_settings, open_configured_store

DESTINATION_HELP = "A registered destination (`token show` lists them)."

route_app = typer.Typer(
    help="Event routing: which events go to which destination (absent: all events).",
    no_args_is_help=True,
)


@route_app.command("show")
def route_show() -> None:
    """Print each destination's routed events (the Connections page shows the same)."""
    from backchannel import routing

    settings = load_settings()
    store = open_configured_store(settings)
    try:
        routes = routing.read(store, settings.destinations)
    finally:
        store.close()
    for name, events in routes.items():
        typer.echo(f"{name}\t{routing.describe(events)}")


@route_app.command("set")
def route_set(
    destination: Annotated[str, typer.Argument(help=DESTINATION_HELP)],
    events: Annotated[
        list[str], typer.Argument(help="Event names, e.g. Purchase CompletePayment.")
    ],
) -> None:
    """Send only these events to DESTINATION (other events get no outbox row for it)."""
    from backchannel import routing

    try:
        routing.check_destination(destination)
        names = routing.check_events(events)
    except routing.RouteError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        routing.store_route(store, destination, names, time.time())
        store.audit(time.time(), "cli", "route.set", f"{destination}: {routing.describe(names)}")
    finally:
        store.close()
    typer.echo(f"{destination}: {routing.describe(names)} (running servers apply it within 5 s)")


@route_app.command("clear")
def route_clear(destination: Annotated[str, typer.Argument(help=DESTINATION_HELP)]) -> None:
    """Send every event to DESTINATION again."""
    from backchannel import routing

    try:
        routing.check_destination(destination)
    except routing.RouteError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        routing.store_route(store, destination, None, time.time())
        store.audit(time.time(), "cli", "route.clear", f"{destination}: all events")
    finally:
        store.close()
    typer.echo(f"{destination}: all events")
