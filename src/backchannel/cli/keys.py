"""``keys``: ingest, collect and admin API keys. Ingest and site keys belong to a property
(they write into it and no other); admin keys are the install's."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel import credentials, members
from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_settings,
    open_configured_store,
    property_or_fail,
)
from backchannel.store import Store

keys_app = typer.Typer(help="Ingest API keys (stored hashed; shown once).", no_args_is_help=True)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label, e.g. the shop's name.")],
    scope: Annotated[str, typer.Option(help="ingest, collect or admin.")] = "ingest",
    allow_null_origin: Annotated[
        bool,
        typer.Option(
            "--allow-null-origin",
            help="Site keys (--scope collect): also accept posts from an opaque origin"
            " (Origin: null), as a Shopify custom pixel's sandbox sends.",
        ),
    ] = False,
    role: Annotated[
        str | None,
        typer.Option(
            help="An admin key's role on every property: owner (default), editor or viewer."
        ),
    ] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """Create a key and print it once. An ingest or site key writes into its property only."""
    if scope not in credentials.KEY_PREFIXES:
        fail("--scope: must be ingest, collect or admin")
    if not name.strip():
        fail("--name: must not be empty")
    if allow_null_origin and scope != "collect":
        fail("--allow-null-origin: only for site keys (--scope collect)")
    if role is not None and scope != "admin":
        fail("--role: only an admin key has a role (--scope admin)")
    if scope == "admin" and property_name is not None:
        fail("--property: admin keys are the install's (not a property's)")
    try:
        key_role = members.check_role(role or members.OWNER) if scope == "admin" else None
    except members.MemberError as exc:
        fail(f"--{exc}")
    store = open_configured_store(load_settings())
    try:
        owner = None if scope == "admin" else property_or_fail(store, property_name).id
        key = create_key(
            store,
            name.strip(),
            scope,
            owner,
            allow_null_origin=allow_null_origin,
            role=key_role,
        )
    finally:
        store.close()
    typer.echo(key)


def create_key(
    store: Store,
    name: str,
    scope: str,
    property_id: int | None,
    *,
    allow_null_origin: bool = False,
    role: str | None = None,
) -> str:
    """Store a new key (its hash) of ``property_id`` (None: an admin key, the install's) with
    an audit row; return the key, shown only this once. ``role``: an admin key's (on every
    property)."""
    key = credentials.new_api_key(scope)
    store.add_key(
        name,
        scope,
        credentials.key_display_prefix(key),
        credentials.key_hash(key),
        time.time(),
        property_id,
        allow_null_origin=allow_null_origin,
        role=role,
    )
    extra = ", null origin allowed" if allow_null_origin else ""
    extra += f", {role} of every property" if role is not None else ""
    detail = f"{name} ({scope}{extra})"
    store.audit(time.time(), "cli", "key.create", detail, property_id)
    return key


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
            null = "\tnull origin allowed" if k.allow_null_origin else ""
            scope = k.scope if k.role is None else f"{k.scope} ({k.role})"
            typer.echo(f"{k.prefix}…\t{k.name}\t{scope}\t{state}\t{where}{null}")
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
