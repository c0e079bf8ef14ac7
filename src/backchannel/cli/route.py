"""``route``: which events go to which connection (a property's destination account)."""

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

DESTINATION_HELP = "A registered destination (`token show` lists them)."
CONNECTION_HELP = (
    "Which of the property's connections of the destination: its label (default: the"
    " destination's name, its first connection)."
)

route_app = typer.Typer(
    help="Event routing: which events go to which connection (absent: all events).",
    no_args_is_help=True,
)


@route_app.command("show")
def route_show(
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Print each connection's routed events (the Connections page shows the same): the
    property's connections, and each destination on by default that has none."""
    from backchannel import destinations as registry
    from backchannel import routing

    settings = load_settings()
    store = open_configured_store(settings)
    try:
        prop = property_or_fail(store, property_name)
        connections = store.list_connections(prop.id)
    finally:
        store.close()
    order = {name: i for i, name in enumerate(registry.NAMES)}
    shown = [c for c in connections if c.live or c.destination in settings.destinations]
    for c in sorted(shown, key=lambda c: (order.get(c.destination, 99), c.id or 0)):
        events = routing.parse(c.routes)
        described = routing.describe(None if events is None else sorted(events))
        name = c.destination if c.name == c.destination else f"{c.destination} {c.name}"
        typer.echo(f"{name}\t{described}")


@route_app.command("set")
def route_set(
    destination: Annotated[str, typer.Argument(help=DESTINATION_HELP)],
    events: Annotated[
        list[str], typer.Argument(help="Event names, e.g. Purchase CompletePayment.")
    ],
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    connection_label: Annotated[
        str | None, typer.Option("--connection", metavar="LABEL", help=CONNECTION_HELP)
    ] = None,
) -> None:
    """Send only these events to the connection (other events get no outbox row for it)."""
    from backchannel import routing

    try:
        routing.check_destination(destination)
        names = routing.check_events(events)
    except routing.RouteError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        prop = property_or_fail(store, property_name)
        try:
            routing.store_route(
                store, destination, names, time.time(), property_id=prop.id, label=connection_label
            )
        except routing.RouteError as exc:
            fail(str(exc))
        named = _named(destination, connection_label)
        store.audit(time.time(), "cli", "route.set", f"{named}: {routing.describe(names)}", prop.id)
    finally:
        store.close()
    typer.echo(f"{named}: {routing.describe(names)} (running servers apply it within 5 s)")


@route_app.command("clear")
def route_clear(
    destination: Annotated[str, typer.Argument(help=DESTINATION_HELP)],
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    connection_label: Annotated[
        str | None, typer.Option("--connection", metavar="LABEL", help=CONNECTION_HELP)
    ] = None,
) -> None:
    """Send every event to the connection again."""
    from backchannel import routing

    try:
        routing.check_destination(destination)
    except routing.RouteError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        prop = property_or_fail(store, property_name)
        try:
            routing.store_route(
                store, destination, None, time.time(), property_id=prop.id, label=connection_label
            )
        except routing.RouteError as exc:
            fail(str(exc))
        named = _named(destination, connection_label)
        store.audit(time.time(), "cli", "route.clear", f"{named}: all events", prop.id)
    finally:
        store.close()
    typer.echo(f"{named}: all events")


def _named(destination: str, label: str | None) -> str:
    """How messages and the audit name a connection: its destination, and its label when it
    is not the destination's name."""
    return destination if label in (None, destination) else f"{destination} {label}"
