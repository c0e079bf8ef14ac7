"""``keys``: ingest, collect and admin API keys. Ingest and site keys belong to a property
(they write into it and no other); admin keys are the install's."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel import credentials
from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_settings,
    open_configured_store,
    property_or_fail,
)

keys_app = typer.Typer(help="Ingest API keys (stored hashed; shown once).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label, e.g. the shop's name.")],
    scope: Annotated[str, typer.Option(help="ingest, collect or admin.")] = "ingest",
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Create a key and print it once. An ingest or site key writes into its property only."""
    if scope not in credentials.KEY_PREFIXES:
        fail("--scope: must be ingest, collect or admin")
    if not name.strip():
        fail("--name: must not be empty")
    if scope == "admin" and property_name is not None:
        fail("--property: admin keys are the install's (not a property's)")
    store = open_configured_store(load_settings())
    try:
        owner = None if scope == "admin" else property_or_fail(store, property_name).id
        key = credentials.new_api_key(scope)
        store.add_key(
            name.strip(),
            scope,
            credentials.key_display_prefix(key),
            credentials.key_hash(key),
            time.time(),
            owner,
        )
        store.audit(time.time(), "cli", "key.create", f"{name} ({scope})", owner)
    finally:
        store.close()
    typer.echo(key)


@keys_app.command("list")
def keys_list(
    property_name: Annotated[
        str | None, typer.Option("--property", help="Only this property's keys.")
    ] = None,
) -> None:
    """List keys (prefixes only) with their property (admin keys: the install's, "-")."""
    store = open_configured_store(load_settings())
    try:
        owner = property_or_fail(store, property_name).id if property_name else None
        names = {p.id: p.name for p in store.properties()}
        for k in store.list_keys(owner):
            state = "revoked" if k.revoked_at else "active"
            where = names.get(k.property_id, "-") if k.property_id is not None else "-"
            typer.echo(f"{k.prefix}…\t{k.name}\t{k.scope}\t{state}\t{where}")
    finally:
        store.close()


@keys_app.command("revoke")
def keys_revoke(
    name_or_prefix: Annotated[str, typer.Argument(help="Key name or prefix.")],
    property_name: Annotated[
        str | None, typer.Option("--property", help="Only this property's keys.")
    ] = None,
) -> None:
    """Revoke a key; requests with it are refused from now on."""
    store = open_configured_store(load_settings())
    try:
        owner = property_or_fail(store, property_name).id if property_name else None
        count = store.revoke_key(name_or_prefix, time.time(), owner)
        if count == 0:
            fail(f"no active key named or prefixed {name_or_prefix!r}", 1)
        store.audit(time.time(), "cli", "key.revoke", name_or_prefix, owner)
    finally:
        store.close()
    typer.echo(f"revoked {count} key(s)")
