"""``property``: the shops, sites and apps of one install (see backchannel.properties)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import orjson
import typer

from backchannel import destinations as registry
from backchannel.cli.common import fail, load_settings, open_configured_store
from backchannel.properties import (
    PropertyError,
    check_name,
    check_origin,
    check_region,
    check_shop,
    check_stripe_account,
)
from backchannel.store.base import BINDING_KINDS, Property, Store

property_app = typer.Typer(
    help="Properties: the shops, sites and apps of this install, each with its own"
    " connections, keys, settings and rows.",
    no_args_is_help=True,
)

ORIGIN_HELP = "A page origin allowed to post to /v1/collect with its site keys (repeatable)."
REGION_HELP = "Default phone region (ISO 3166-1 alpha-2, e.g. US); '' inherits the install's."
SHOP_HELP = "A Shopify shop domain whose order webhooks are its orders (repeatable)."
STRIPE_HELP = "A Stripe account (acct_…) whose Connect events are its (repeatable)."
UTM_HELP = "utm_source values marking an order TikTok-attributed (comma list); '' inherits."
#: option -> binding kind, for --clear
CLEARABLE = {"origin": "origin", "shopify-shop": "shopify", "stripe-account": "stripe"}


def _checked(values: list[str] | None, check: Callable[[str], str]) -> list[str]:
    try:
        return [check(v) for v in values or []]
    except PropertyError as exc:
        fail(str(exc))


def _bind(store: Store, prop: Property, kind: str, values: list[str]) -> None:
    """Bind each value to ``prop``; a value held by another property fails naming it."""
    for value in values:
        owner = store.bind(prop.id, kind, value)
        if owner != prop.id:
            other = store.get_property(owner)
            fail(f"{kind}: {value} already belongs to property {other.name if other else owner}")


def _describe(prop: Property) -> dict[str, object]:
    return {
        "id": prop.id,
        "name": prop.name,
        "default_region": prop.default_region,
        "tiktok_utm_sources": prop.tiktok_utm_sources,
        "origins": list(prop.origins),
        "shopify_shops": list(prop.shopify_shops),
        "stripe_accounts": list(prop.stripe_accounts),
    }


@property_app.command("create")
def property_create(
    name: Annotated[str, typer.Argument(help="Its name: a letter, then letters, digits, . _ -.")],
    origin: Annotated[list[str] | None, typer.Option("--origin", help=ORIGIN_HELP)] = None,
    region: Annotated[str | None, typer.Option("--region", help=REGION_HELP)] = None,
    shopify_shop: Annotated[
        list[str] | None, typer.Option("--shopify-shop", help=SHOP_HELP)
    ] = None,
    stripe_account: Annotated[
        list[str] | None, typer.Option("--stripe-account", help=STRIPE_HELP)
    ] = None,
    utm_sources: Annotated[str | None, typer.Option("--utm-sources", help=UTM_HELP)] = None,
) -> None:
    """Add a property, with a sandbox connection of each destination on by default.

    Then give it keys (`keys create --property NAME`), connections (`token set --property
    NAME`) and webhook secrets (`source set --property NAME`)."""
    try:
        checked = check_name(name)
        default_region = check_region(region) if region is not None else None
    except PropertyError as exc:
        fail(str(exc))
    origins = _checked(origin, check_origin)
    shops = _checked(shopify_shop, check_shop)
    accounts = _checked(stripe_account, check_stripe_account)
    settings = load_settings()
    store = open_configured_store(settings)
    try:
        now = time.time()
        created = store.create_property(
            checked,
            now,
            default_region=default_region,
            tiktok_utm_sources=utm_sources.strip() or None if utm_sources is not None else None,
            destinations=registry.ON_BY_DEFAULT,
        )
        if created is None:
            fail(f"name: a property named {checked!r} already exists")
        store.ensure_connections(settings.destinations, now, created)
        prop = store.get_property(created)
        assert prop is not None
        _bind(store, prop, "origin", origins)
        _bind(store, prop, "shopify", shops)
        _bind(store, prop, "stripe", accounts)
        store.audit(now, "cli", "property.create", checked, created)
        prop = store.get_property(created)
        assert prop is not None
    finally:
        store.close()
    typer.echo(f"{prop.name}: created (property {prop.id})")
    if not prop.origins:
        typer.echo(
            "note: no --origin: its site keys post from the install's COLLECT_ORIGINS"
            " (empty: the gateway's own host only)",
            err=True,
        )


@property_app.command("set")
def property_set(
    name: Annotated[str, typer.Argument(help="The property's name.")],
    origin: Annotated[list[str] | None, typer.Option("--origin", help=ORIGIN_HELP)] = None,
    region: Annotated[str | None, typer.Option("--region", help=REGION_HELP)] = None,
    shopify_shop: Annotated[
        list[str] | None, typer.Option("--shopify-shop", help=SHOP_HELP)
    ] = None,
    stripe_account: Annotated[
        list[str] | None, typer.Option("--stripe-account", help=STRIPE_HELP)
    ] = None,
    utm_sources: Annotated[str | None, typer.Option("--utm-sources", help=UTM_HELP)] = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear",
            metavar="origin|shopify-shop|stripe-account",
            help="Remove every value of that option first (repeatable).",
        ),
    ] = None,
) -> None:
    """Change a property: add origins, shops and Stripe accounts (--clear removes them
    first), set its region and UTM sources ('' inherits the install's)."""
    for option in clear or []:
        if option not in CLEARABLE:
            fail(f"--clear: must be one of {', '.join(CLEARABLE)}")
    origins = _checked(origin, check_origin)
    shops = _checked(shopify_shop, check_shop)
    accounts = _checked(stripe_account, check_stripe_account)
    try:
        default_region = check_region(region) if region is not None else None
    except PropertyError as exc:
        fail(str(exc))
    store = open_configured_store(load_settings())
    try:
        prop = store.get_property(name.strip())
        if prop is None:
            known = ", ".join(p.name for p in store.properties())
            fail(f"name: no property {name!r} (known: {known})")
        if region is not None or utm_sources is not None:
            store.update_property(
                prop.id,
                default_region=default_region if region is not None else prop.default_region,
                tiktok_utm_sources=(utm_sources.strip() or None)
                if utm_sources is not None
                else prop.tiktok_utm_sources,
            )
        for option in clear or []:
            store.unbind(prop.id, CLEARABLE[option])
        _bind(store, prop, "origin", origins)
        _bind(store, prop, "shopify", shops)
        _bind(store, prop, "stripe", accounts)
        changed = store.get_property(prop.id)
        assert changed is not None
        store.audit(
            time.time(), "cli", "property.set", orjson.dumps(_describe(changed)).decode(), prop.id
        )
    finally:
        store.close()
    typer.echo(f"{changed.name}: saved (running servers apply it within 5 s)")


@property_app.command("list")
def property_list() -> None:
    """The properties: id, name, connections and keys."""
    store = open_configured_store(load_settings())
    try:
        for prop in store.properties():
            connections = store.list_connections(prop.id)
            live = sum(1 for c in connections if c.live)
            keys = sum(1 for k in store.list_keys(prop.id) if k.revoked_at is None)
            typer.echo(
                f"{prop.id}\t{prop.name}\t{len(connections)} connection(s), {live} live"
                f"\t{keys} key(s)"
            )
    finally:
        store.close()


@property_app.command("show")
def property_show(name: Annotated[str, typer.Argument(help="The property's name.")]) -> None:
    """A property's settings, bindings and connections (never a secret)."""
    settings = load_settings()
    store = open_configured_store(settings)
    try:
        prop = store.get_property(name.strip())
        if prop is None:
            known = ", ".join(p.name for p in store.properties())
            fail(f"name: no property {name!r} (known: {known})")
        connections = store.list_connections(prop.id)
        keys = [k for k in store.list_keys(prop.id) if k.revoked_at is None]
    finally:
        store.close()
    inherit = "(the install's)"
    typer.echo(f"{prop.name} (property {prop.id})")
    typer.echo(f"  region: {prop.default_region or inherit}")
    typer.echo(f"  tiktok utm sources: {prop.tiktok_utm_sources or inherit}")
    for kind, field_name in BINDING_KINDS.items():
        values = getattr(prop, field_name)
        label = {"origin": "origins", "shopify": "shopify shops", "stripe": "stripe accounts"}[kind]
        shown = ", ".join(values) if values else "none"
        if kind == "origin" and not values:
            shown += " (the install's COLLECT_ORIGINS)"
        typer.echo(f"  {label}: {shown}")
    typer.echo(f"  keys: {', '.join(f'{k.prefix}… {k.name} ({k.scope})' for k in keys) or 'none'}")
    for c in connections:
        if c.live:
            state = f"live, pixel {c.pixel}, token …{c.token_last4}"
        elif c.destination in settings.destinations:
            state = "sandbox (no token)" + (f", pixel {c.pixel}" if c.pixel else "")
        else:
            state = "off — not connected"
        routes = "all events" if c.routes is None else ", ".join(orjson.loads(c.routes))
        typer.echo(f"  connection {c.name} ({c.destination}): {state}; routes: {routes}")
