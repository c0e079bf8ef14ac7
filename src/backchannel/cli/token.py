"""``token``: a connection's credentials (token, account id, other declared values), and the
key that encrypts them.

A connection is one destination account of a property. ``--property`` names the property
(optional with one), ``--connection LABEL`` one of its connections: a destination's first
connection is labelled with its name (``token set tiktok`` is the TikTok connection); a new
label makes another one (``token set tiktok --connection tiktok-eu`` adds a second pixel).

Every destination declares what a connection needs (``CREDENTIALS``); ``token set`` takes
exactly those and checks them as the Connections page does (:mod:`backchannel.connect`).
Secrets are read from stdin (or the terminal, not echoed), never from argv, where they would
sit in shell history and in every ``ps`` listing.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel import connect, credentials
from backchannel import destinations as registry
from backchannel.cli.common import (
    PROPERTY_HELP,
    fail,
    load_cipher_or_fail,
    load_settings,
    open_configured_store,
    property_or_fail,
    read_secret,
)
from backchannel.connect import PIXEL, TOKEN, CredentialError
from backchannel.store.base import DEFAULT_PROPERTY, Connection, Store

token_app = typer.Typer(
    help="Destination credentials: tokens and other secrets (encrypted at rest).",
    no_args_is_help=True,
)

#: not the list itself: the pinned help must not change whenever a destination is added
NAMES_HELP = "A registered destination (`token show` lists them)."
CONNECTION_HELP = (
    "Which of the property's connections of the destination: its label (default: the"
    " destination's name, its first connection). A new label adds a connection."
)


def label_or_fail(destination: str, label: str | None) -> str:
    """``--connection`` checked: a name, never another destination's name."""
    if label is None:
        return destination
    from backchannel.properties import PropertyError, check_name

    try:
        checked = check_name(label, "--connection")
    except PropertyError as exc:
        fail(str(exc))
    if checked != destination and checked in registry.DESTINATIONS:
        fail(f"--connection: {checked!r} is the name of another destination")
    return checked


def connection_or_fail(
    store: Store, destination: str, label: str, property_id: int
) -> Connection | None:
    """The property's connection ``label``, which must be of ``destination`` if it exists."""
    found = store.get_connection(label, property_id)
    if found is not None and found.destination != destination:
        fail(f"--connection: {label!r} is a {found.destination} connection, not {destination}")
    return found


def destination_or_fail(name: str) -> registry.Destination:
    try:
        return connect.spec(name)
    except CredentialError as exc:
        fail(str(exc))


def options_or_fail(
    spec: registry.Destination, pixel: str | None, assignments: list[str], secret_names: list[str]
) -> connect.Change:
    """``--pixel``, ``--set`` and ``--secret`` checked against what ``spec`` declares."""
    change = connect.Change(keep_test_event_code=True)
    try:
        if pixel is not None:
            change.pixel = connect.check(connect.declared(spec, PIXEL), pixel)
        for raw in assignments:
            key, value = connect.split_assignment(raw)
            credential = connect.declared(spec, key)
            if key in (PIXEL, TOKEN):
                raise CredentialError(
                    f"{key}: not with --set ("
                    + ("use --pixel" if key == PIXEL else "the token is the first line of stdin")
                    + ")"
                )
            if credential.secret:
                raise CredentialError(
                    f"{key}: a secret: name it with --secret {key} and pipe it on stdin"
                    " (never on the command line)"
                )
            if key in change.plain:
                raise CredentialError(f"{key}: given twice")
            if not value.strip() and credential.required:
                raise CredentialError(f"{key}: required (an empty value removes optional ones)")
            change.plain[key] = connect.check(credential, value) if value.strip() else None
        for key in secret_names:
            credential = connect.declared(spec, key)
            if key == TOKEN:
                raise CredentialError("token: always the first line of stdin; not with --secret")
            if not credential.secret:
                raise CredentialError(f"{key}: not a secret: give it with --set {key}=VALUE")
            if key in change.secrets:
                raise CredentialError(f"{key}: given twice")
            change.secrets[key] = ""  # read from stdin once everything else is checked
    except CredentialError as exc:
        fail(str(exc))
    return change


def read_value(spec: registry.Destination, key: str) -> str:
    credential = connect.declared(spec, key)
    value = read_secret(
        key,
        f"{spec.display_name} {credential.label}",
        f"backchannel token set {spec.name} ... < secrets.txt",
    )
    try:
        return connect.check(credential, value)
    except CredentialError as exc:
        fail(str(exc))


@token_app.command("set")
def token_set(
    destination: Annotated[str, typer.Argument(help=NAMES_HELP)],
    pixel: Annotated[
        str | None,
        typer.Option(
            help="The account's public id (pixel code, pixel/dataset id, customer id...);"
            " required the first time, kept when not given."
        ),
    ] = None,
    test_event_code: Annotated[str | None, typer.Option(help="Route to Test Events.")] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="A plain (not secret) value the destination declares (repeatable);"
            " KEY= removes an optional one.",
        ),
    ] = None,
    secret_names: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            metavar="KEY",
            help="A secret the destination declares besides the token (repeatable): its"
            " value is read from stdin, one line each, after the token's line, in the order"
            " of the --secret options.",
        ),
    ] = None,
    keep_token: Annotated[
        bool,
        typer.Option(
            "--keep-token",
            help="Keep the stored token: stdin holds only the --secret lines.",
        ),
    ] = False,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    connection_label: Annotated[
        str | None, typer.Option("--connection", metavar="LABEL", help=CONNECTION_HELP)
    ] = None,
) -> None:
    """Store a destination's credentials; secrets are read from stdin (never from argv).

    Stdin holds one value per line: the token first (unless --keep-token), then one line per
    --secret KEY, in the order given. On a terminal each is asked for, not echoed. Values not
    given are kept; the first time, every required value must be given. `token show NAME`
    lists what a destination takes.

    \b
    printf '%s\\n' "$TOKEN" | backchannel token set tiktok --pixel C4ABCDEF0123456789
    printf '%s\\n%s\\n%s\\n' "$DEV" "$SECRET" "$REFRESH" | backchannel token set NAME \\
        --pixel 1234567890 --set client_id=ID --secret client_secret --secret refresh_token
    printf '%s\\n' "$TOKEN2" | backchannel token set tiktok --property shop-eu \\
        --connection tiktok-eu --pixel C4EU0123456789
    """
    spec = destination_or_fail(destination)
    label = label_or_fail(destination, connection_label)
    change = options_or_fail(spec, pixel, assignments or [], secret_names or [])
    if test_event_code is not None:
        try:
            change.test_event_code = connect.check_test_code(test_event_code)
        except CredentialError as exc:
            fail(str(exc))
    settings = load_settings()
    cipher = load_cipher_or_fail(settings)
    if not keep_token:
        change.token = read_value(spec, TOKEN)
    for key in list(change.secrets):
        change.secrets[key] = read_value(spec, key)
    store = open_configured_store(settings)
    try:
        prop = property_or_fail(store, property_name)
        before = connection_or_fail(store, destination, label, prop.id)
        if keep_token and (before is None or before.token_encrypted is None):
            fail("--keep-token: no token stored yet")
        now = time.time()
        try:
            saved = connect.merge(
                spec, before, change, cipher, now, property_id=prop.id, label=label
            )
        except CredentialError as exc:
            fail(str(exc))
        store.set_connection(saved.connection)
        store.audit(now, "cli", saved.action, saved.detail, prop.id)
    finally:
        store.close()
    connection = saved.connection
    said = f"{destination}: " if label == destination else f"{destination} {label}: "
    said += (
        f"token …{connection.token_last4} stored encrypted"
        if change.token
        else f"token …{connection.token_last4} kept"
    )
    said += f" for pixel {connection.pixel}"
    changed = list(change.plain)
    if changed:
        said += f"; settings {', '.join(changed)}"
    if change.secrets:
        said += f"; secrets {', '.join(change.secrets)} stored encrypted"
    typer.echo(said)


@token_app.command("show")
def token_show(
    destinations: Annotated[
        list[str] | None, typer.Argument(help="Destinations to show (default: all registered).")
    ] = None,
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
) -> None:
    """What each destination takes and what each of the property's connections stores: plain
    values, the token's last four characters, and only whether each other secret is set
    (never a secret)."""
    names = destinations or list(registry.NAMES)
    specs = [destination_or_fail(name) for name in names]
    settings = load_settings()
    store = open_configured_store(settings)
    try:
        prop = property_or_fail(store, property_name)
        stored = store.list_connections(prop.id)
        shown: list[tuple[registry.Destination, Connection | None]] = []
        for spec in specs:
            own = [c for c in stored if c.destination == spec.name]
            shown += [(spec, c) for c in own] if own else [(spec, None)]
        for spec, connection in shown:
            if connection is not None and connection.token_encrypted is not None:
                status = "live"
            elif spec.name in settings.destinations:
                status = "sandbox (no token)"
            else:
                status = "off — not connected"
            named = spec.name
            if connection is not None and connection.name != spec.name:
                named += f" --connection {connection.name}"
            typer.echo(f"{named} ({spec.display_name}): {status}")
            secret_keys: tuple[str, ...] = ()
            if connection is not None and connection.secrets_encrypted:
                try:
                    cipher = credentials.load_cipher(settings, create=False)
                    secret_keys = connect.secret_keys(cipher, connection)
                except (CredentialError, credentials.SecretError) as exc:
                    typer.echo(f"  (stored secrets unreadable: {exc})")
            for credential in spec.CREDENTIALS:
                key = credential.key
                if key == PIXEL:
                    fallback = (
                        settings.pixel_for(spec.name) if prop.id == DEFAULT_PROPERTY else None
                    )
                    value_shown = (connection.pixel if connection else "") or fallback or ""
                elif key == TOKEN:
                    last4 = connection.token_last4 if connection else None
                    value_shown = f"…{last4}" if last4 else ""
                elif credential.secret:
                    value_shown = "set" if key in secret_keys else ""
                else:
                    value_shown = connection.settings.get(key, "") if connection else ""
                kind = "secret" if credential.secret else "plain"
                optional = "" if credential.required else ", optional"
                value = value_shown.replace("\n", "; ") if value_shown else "not set"
                typer.echo(f"  {key} ({credential.label}; {kind}{optional}): {value}")
            code = connection.test_event_code if connection else None
            typer.echo(f"  test_event_code: {code or 'not set'}")
    finally:
        store.close()


@token_app.command("remove")
def token_remove(
    destination: Annotated[str, typer.Argument(help=NAMES_HELP)],
    property_name: Annotated[str | None, typer.Option("--property", help=PROPERTY_HELP)] = None,
    connection_label: Annotated[
        str | None, typer.Option("--connection", metavar="LABEL", help=CONNECTION_HELP)
    ] = None,
) -> None:
    """Forget a connection's secrets. One of a destination on by default goes back to sandbox
    mode (pixel, test code and plain values stay, as when removed on the Connections page);
    any other is disconnected (everything stored for it is forgotten; it gets no more
    events)."""
    spec = destination_or_fail(destination)
    label = label_or_fail(destination, connection_label)
    store = open_configured_store(load_settings())
    try:
        prop = property_or_fail(store, property_name)
        before = connection_or_fail(store, destination, label, prop.id)
        if before is None or (
            before.token_encrypted is None
            and not before.secrets_encrypted
            and (spec.ON_BY_DEFAULT or not before.pixel)
        ):
            fail(f"{label}: no token stored", 1)
        now = time.time()
        after = connect.without_secrets(spec, before, now)
        if after is None:
            store.delete_connection(label, prop.id)
        else:
            store.set_connection(after)
        detail = destination if label == destination else f"{destination} {label}"
        store.audit(now, "cli", "token.remove", detail, prop.id)
    finally:
        store.close()
    typer.echo(f"{label}: " + ("token removed" if after else "disconnected"))


@token_app.command("rotate-key")
def token_rotate_key() -> None:
    """New encryption key; every stored token and secret re-encrypted in one transaction."""
    from backchannel.rotation import rotate

    settings = load_settings()
    store = open_configured_store(settings)
    try:
        result = rotate(settings, store)
    except credentials.SecretError as exc:
        fail(str(exc), 1)
    finally:
        store.close()
    if result.rewritten or not result.instructions:
        typer.echo(f"re-encrypted {result.rewritten} secret(s) with the new key")
    if result.instructions:
        typer.echo(f"next: {result.instructions}")
    else:
        typer.echo(f"{settings.key_file} now holds only the new key")
    audit_store = open_configured_store(settings)
    audit_store.audit(time.time(), "cli", "key.rotate", f"{result.rewritten} re-encrypted")
    audit_store.close()
