"""``token``: destination access tokens, and the key that encrypts them."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from backchannel import credentials
from backchannel.cli.common import (
    fail,
    load_cipher_or_fail,
    load_settings,
    open_configured_store,
    read_secret,
)
from backchannel.store.base import Connection

token_app = typer.Typer(help="Destination access tokens (encrypted at rest).", no_args_is_help=True)


@token_app.command("set")
def token_set(
    destination: Annotated[str, typer.Argument(help="tiktok or meta")],
    pixel: Annotated[str, typer.Option(help="TikTok pixel code / Meta pixel (dataset) id.")],
    test_event_code: Annotated[str | None, typer.Option(help="Route to Test Events.")] = None,
) -> None:
    """Store a destination's token, read from stdin (never from the command line)."""
    if destination not in ("tiktok", "meta"):
        fail("destination: must be tiktok or meta")
    if not pixel.strip():
        fail("--pixel: must not be empty")
    token = read_secret(
        "token", f"{destination} access token", "backchannel token set ... < token.txt"
    )
    if token.lower().startswith("bearer "):
        fail("token: paste the raw token without 'Bearer ' (TikTok answers 40105 to that)")
    settings = load_settings()
    cipher = load_cipher_or_fail(settings)
    store = open_configured_store(settings)
    before = store.get_connection(destination)
    existed = before is not None and before.token_encrypted is not None
    if test_event_code is None and before is not None:  # keep the one set earlier (dashboard)
        test_event_code = before.test_event_code
    store.set_connection(
        Connection(
            destination,
            pixel.strip(),
            credentials.encrypt(cipher, token),
            token[-4:],
            test_event_code,
            time.time(),
        )
    )
    store.audit(
        time.time(),
        "cli",
        "token.replace" if existed else "token.set",
        f"{destination} pixel {pixel.strip()}",
    )
    store.close()
    typer.echo(f"{destination}: token …{token[-4:]} stored encrypted for pixel {pixel.strip()}")


@token_app.command("remove")
def token_remove(destination: Annotated[str, typer.Argument(help="tiktok or meta")]) -> None:
    """Forget a destination's token (it goes back to sandbox mode; pixel and test code stay,
    as when removed on the Connections page)."""
    store = open_configured_store(load_settings())
    before = store.get_connection(destination)
    if before is None or before.token_encrypted is None:
        store.close()
        fail(f"{destination}: no token stored", 1)
    store.set_connection(
        Connection(destination, before.pixel, None, None, before.test_event_code, time.time())
    )
    store.audit(time.time(), "cli", "token.remove", destination)
    store.close()
    typer.echo(f"{destination}: token removed")


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
